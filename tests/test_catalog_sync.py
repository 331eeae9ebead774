"""The full sync end to end against the live simulator, on SQLite and PostgreSQL: every
catalog file found, malformed ones recorded, components generated, annotations right, calls
spent only where something changed, deletions swept safely, and budget cuts resumed."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from sqlalchemy import select

from app.bitbucket.errors import RetryLater
from app.models import CatalogEntity, CatalogFile, Repository
from app.runtime import Runtime
from app.sync.workspace import WorkspaceSync, WorkspaceSyncResult
from app.web import create_app
from bitbucket_sim.testing import SimProcess
from tests.backstage_validator import validate_entities
from tests.conftest import migrate

SimFactory = Callable[..., SimProcess]
RuntimeFactory = Callable[..., Runtime]
UNLIMITED = {"BITBUCKET_RATE_LIMIT_PER_HOUR": "1000000"}


def full_sync(rt: Runtime) -> WorkspaceSyncResult:
    with rt.sessions() as session:
        return WorkspaceSync(rt.bitbucket(), session, session.commit, rt.settings).run("acme")


def live_entities(rt: Runtime) -> dict[str, CatalogEntity]:
    with rt.sessions() as session:
        rows = session.scalars(select(CatalogEntity).where(CatalogEntity.deleted_at.is_(None)))
        return {e.entity_ref: e for e in rows}


def served(rt: Runtime, **query: str) -> list[dict[str, Any]]:
    client = create_app(runtime=rt).test_client()
    response = client.get("/catalog/entities", query_string={"limit": "5000", **query})
    assert response.status_code == 200
    items: list[dict[str, Any]] = response.json["items"]
    return items


def by_layout(sim: SimProcess) -> dict[str, list[dict[str, Any]]]:
    layouts: dict[str, list[dict[str, Any]]] = {}
    for repo in sim.repositories():
        layouts.setdefault(repo["catalog_layout"], []).append(repo)
    return layouts


@pytest.fixture
def workspace_300(
    sim_factory: SimFactory, runtime_for: RuntimeFactory, migrated_url: str
) -> tuple[SimProcess, Runtime]:
    sim = sim_factory(repos=300, seed=5, access_token="sim-token")
    return sim, runtime_for(sim, DATABASE_URL=migrated_url, **UNLIMITED)


def test_a_workspace_is_synced_completely(workspace_300: tuple[SimProcess, Runtime]) -> None:
    sim, rt = workspace_300
    result = full_sync(rt)
    layouts = by_layout(sim)
    with_root_file = [r for k in ("single", "multi", "malformed") for r in layouts.get(k, [])]
    assert result.catalog.status == "succeeded"
    counts = result.catalog.counts
    assert counts["checked"] == 300
    assert counts["files_fetched"] == len(with_root_file)
    assert counts["parse_errors"] == len(layouts["malformed"])
    assert counts["discovery"].startswith("search")
    # Cold sync: repository pages + search pages + one fetch per file, nothing else.
    calls = sim.stats()["calls"]
    assert calls["src"] == len(with_root_file)
    assert calls["repositories"] == 3
    assert result.catalog.api_calls == calls["src"] + calls["search"]

    with rt.sessions() as session:
        files = {
            (repo.slug, f.path): f
            for f, repo in session.execute(
                select(CatalogFile, Repository).join(
                    Repository, CatalogFile.repository_id == Repository.id
                )
            ).all()
        }
    assert {slug for slug, _ in files} == {r["slug"] for r in with_root_file}
    for repo in layouts["malformed"]:
        assert files[(repo["slug"], "catalog-info.yaml")].parse_error

    entities = live_entities(rt)
    generated = {e.repository_id for e in entities.values() if e.source == "generated"}
    without_root_file = len(layouts.get("none", [])) + len(layouts.get("nested", []))
    assert len(generated) == without_root_file
    groups = [e for e in entities.values() if e.kind == "Group"]
    assert groups and all(e.source == "bitbucket" for e in groups)

    single = layouts["single"][0]
    entity = next(
        e
        for e in entities.values()
        if e.source == "descriptor"
        and e.body["metadata"]["annotations"]["bitbucket.com/project-slug"]
        == f"acme/{single['slug']}"
    )
    annotations = entity.body["metadata"]["annotations"]
    base = f"https://bitbucket.org/acme/{single['slug']}"
    branch = single["mainbranch"]
    assert annotations["bitbucket.org/repo-url"] == base
    assert annotations["backstage.io/source-location"] == f"url:{base}/src/{branch}/"
    assert annotations["backstage.io/view-url"] == f"{base}/src/{branch}/catalog-info.yaml"
    assert annotations["backstage.io/edit-url"].endswith("catalog-info.yaml?mode=edit")
    assert annotations["bitbucket.org/workspace"] == "acme"
    assert annotations["bitbucket.org/project-key"] == single["project_key"]

    nested = layouts["nested"][0]
    component = next(
        e
        for e in entities.values()
        if e.source == "generated" and e.body["metadata"]["name"] == nested["slug"]
    )
    assert component.body["spec"]["owner"].startswith("group:default/acme-")
    assert component.body["spec"]["owner"].split("/", 1)[1] in {g.name for g in groups}
    assert "backstage.io/view-url" not in component.body["metadata"]["annotations"]

    bodies = [e.body for e in entities.values()]
    assert validate_entities(bodies) == []
    assert len(served(rt)) == len(entities)


def test_a_second_sync_with_nothing_changed_fetches_no_file(
    workspace_300: tuple[SimProcess, Runtime],
) -> None:
    sim, rt = workspace_300
    full_sync(rt)
    before = live_entities(rt)
    sim.reset_stats()
    result = full_sync(rt)
    assert sim.stats()["calls_total"] == 3  # the repository pages, nothing else
    assert result.catalog.counts["candidates"] == 0
    assert {r: e.content_hash for r, e in live_entities(rt).items()} == {
        r: e.content_hash for r, e in before.items()
    }


def test_only_changed_repositories_are_read_again(
    workspace_300: tuple[SimProcess, Runtime],
) -> None:
    sim, rt = workspace_300
    full_sync(rt)
    single = by_layout(sim)["single"][:2]
    untouched = by_layout(sim)["none"][0]
    edited = (
        "apiVersion: backstage.io/v1alpha1\nkind: Component\nmetadata:\n"
        "  name: renamed-by-push\n  annotations:\n    bitbucket.org/workspace: mine\n"
        "spec:\n  type: website\n  lifecycle: experimental\n  owner: group:default/web\n"
    )
    sim.admin(
        "POST", f"repos/{single[0]['slug']}/push", json={"files": {"catalog-info.yaml": edited}}
    )
    sim.admin("POST", f"repos/{single[1]['slug']}/push", json={"files": {"README.md": "hi"}})
    sim.admin(
        "POST",
        f"repos/{untouched['slug']}/push",
        json={"files": {"catalog-info.yaml": edited.replace("renamed-by-push", "new-one")}},
    )
    sim.reset_stats()
    result = full_sync(rt)
    assert result.catalog.counts["candidates"] == 3
    calls = sim.stats()["calls"]
    assert calls["src"] == 3 and calls["search"] == 0
    assert sim.stats()["calls_total"] <= 3 + 3 * 3
    entities = live_entities(rt)
    pushed = entities["component:default/renamed-by-push"]
    # bbsync's own annotations are never a descriptor's to set: the derived value stands.
    assert pushed.body["metadata"]["annotations"]["bitbucket.org/workspace"] == "acme"
    assert entities["component:default/new-one"].source == "descriptor"
    assert f"component:default/{untouched['slug']}" not in entities  # generated one retired


def test_a_deleted_repository_leaves_the_served_catalog(
    workspace_300: tuple[SimProcess, Runtime],
) -> None:
    sim, rt = workspace_300
    full_sync(rt)
    gone = by_layout(sim)["none"][0]["slug"]
    assert any(e["metadata"]["name"] == gone for e in served(rt, kind="Component"))
    sim.admin("DELETE", f"repos/{gone}")
    result = full_sync(rt)
    assert result.repositories is not None
    assert result.repositories.counts["deleted"] == 1
    assert "removed 1 entities" in result.catalog.counts["sweep"]
    assert not any(e["metadata"]["name"] == gone for e in served(rt, kind="Component"))


def test_a_sweep_that_would_empty_the_catalog_is_refused(
    sim_factory: SimFactory, runtime_for: RuntimeFactory, sqlite_url: str
) -> None:
    migrate(sqlite_url)
    sim = sim_factory(repos=20, seed=2, access_token="sim-token")
    rt = runtime_for(sim, **UNLIMITED)
    full_sync(rt)
    before = len(served(rt))
    for repo in sim.repositories()[:15]:
        sim.admin("DELETE", f"repos/{repo['slug']}")
    result = full_sync(rt)
    assert result.repositories is not None
    assert result.repositories.error and "sweep refused" in result.repositories.error
    assert len(served(rt)) == before


def test_a_sync_cut_short_by_429s_resumes_and_completes_without_duplicates(
    sim_factory: SimFactory, runtime_for: RuntimeFactory, sqlite_url: str
) -> None:
    migrate(sqlite_url)
    reference = sim_factory(repos=120, seed=9, access_token="sim-token")
    clean = runtime_for(reference, DATABASE_URL=f"{sqlite_url}-clean", **UNLIMITED)
    migrate(clean.settings.database_url)
    full_sync(clean)
    expected = {ref: e.content_hash for ref, e in live_entities(clean).items()}

    sim = sim_factory(
        repos=120,
        seed=9,
        access_token="sim-token",
        rate_limit="30/m",
        raw_rate_limit="30/m",
        retry_after=0,
    )
    rt = runtime_for(sim, REDIS_URL=clean.settings.redis_url, **UNLIMITED)
    rt.budget.reset()
    interruptions = 0
    for _ in range(50):
        try:
            full_sync(rt)
            break
        except RetryLater:
            interruptions += 1
            for budget in rt.budgets:  # as if the windows had rolled
                budget.reset()
            sim.reset_stats()
    assert interruptions >= 1
    assert {ref: e.content_hash for ref, e in live_entities(rt).items()} == expected


def test_code_search_unavailable_falls_back_to_probing(
    sim_factory: SimFactory, runtime_for: RuntimeFactory, sqlite_url: str
) -> None:
    migrate(sqlite_url)
    sim = sim_factory(repos=60, seed=4, access_token="sim-token", code_search=False)
    rt = runtime_for(sim, **UNLIMITED)
    result = full_sync(rt)
    assert result.catalog.counts["discovery"] == "probe (search unavailable)"
    assert sim.stats()["calls"]["src"] == 60  # one probe per repository at the root path
    layouts = by_layout(sim)
    with_file = sum(len(layouts.get(k, [])) for k in ("single", "multi", "malformed"))
    assert result.catalog.counts["files_fetched"] == with_file


def test_glob_patterns_find_nested_descriptors(
    sim_factory: SimFactory, runtime_for: RuntimeFactory, sqlite_url: str
) -> None:
    migrate(sqlite_url)
    sim = sim_factory(repos=80, seed=6, access_token="sim-token")
    rt = runtime_for(
        sim, BBSYNC_CATALOG_PATHS="catalog-info.yaml,**/catalog-info.yaml", **UNLIMITED
    )
    full_sync(rt)
    nested = by_layout(sim)["nested"]
    with rt.sessions() as session:
        paths = {
            (repo.slug, f.path)
            for f, repo in session.execute(
                select(CatalogFile, Repository).join(
                    Repository, CatalogFile.repository_id == Repository.id
                )
            ).all()
        }
    for repo in nested:
        assert (repo["slug"], repo["catalog_paths"][0]) in paths


@pytest.mark.parametrize("detection", ["updated_on", "head"])
def test_change_detection_when_pushes_do_not_move_updated_on(
    detection: str, sim_factory: SimFactory, runtime_for: RuntimeFactory, sqlite_url: str
) -> None:
    migrate(sqlite_url)
    sim = sim_factory(repos=30, seed=3, access_token="sim-token", push_updates_updated_on=False)
    rt = runtime_for(sim, BBSYNC_CHANGE_DETECTION=detection, **UNLIMITED)
    full_sync(rt)
    repo = by_layout(sim)["single"][0]
    edited = (
        "apiVersion: backstage.io/v1alpha1\nkind: Component\nmetadata:\n  name: pushed-change\n"
        "spec:\n  type: service\n  lifecycle: production\n  owner: group:default/x\n"
    )
    sim.admin("POST", f"repos/{repo['slug']}/push", json={"files": {"catalog-info.yaml": edited}})
    sim.reset_stats()
    full_sync(rt)
    found = "component:default/pushed-change" in live_entities(rt)
    if detection == "head":
        # One branch call per repository finds the push that updated_on did not show.
        assert found
        assert sim.stats()["calls"]["refs"] == 30
        assert sim.stats()["calls"]["src"] == 1
    else:
        assert not found  # the documented cost of trusting updated_on when it lags
        assert sim.stats()["calls_total"] == 1
