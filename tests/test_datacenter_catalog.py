"""A Data Center source synced end to end against the simulator's Data Center flavour: every
project and repository listed, descriptors read at the default branch's head, Components
generated and project Groups made with the annotations Backstage's Data Center integration
reads, unchanged repositories skipped, and no collision with a Cloud workspace of the same
names."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest
from sqlalchemy import select

from app.bitbucket.errors import RetryLater
from app.catalog.datacenter_entities import server_namespace
from app.models import CatalogEntity, CatalogFile, Repository, Workspace
from app.runtime import Runtime
from app.sync.datacenter import DataCenterSync, DataCenterSyncResult
from app.sync.workspace import WorkspaceSync
from bitbucket_sim.testing import SimProcess
from tests.backstage_validator import validate_entities
from tests.conftest import migrate

SimFactory = Callable[..., SimProcess]
RuntimeFactory = Callable[..., Runtime]


def dc_env(sim: SimProcess, **overrides: str) -> dict[str, str]:
    return {
        "BITBUCKET_WORKSPACES": "",
        "BITBUCKET_ACCESS_TOKEN": "",
        "BITBUCKET_DC_URL": sim.url,
        "BITBUCKET_DC_TOKEN": "dc-token",
        "BITBUCKET_DC_RATE_PER_SECOND": "1000",
        "BITBUCKET_DC_BURST": "1000",
        **overrides,
    }


def dc_sync(rt: Runtime) -> DataCenterSyncResult:
    with rt.sessions() as session:
        server = rt.datacenter_settings
        return DataCenterSync(
            rt.datacenter(), session, session.commit, rt.settings, server, redis_client=rt.redis
        ).run()


def live_entities(rt: Runtime) -> dict[str, CatalogEntity]:
    with rt.sessions() as session:
        rows = session.scalars(select(CatalogEntity).where(CatalogEntity.deleted_at.is_(None)))
        return {e.entity_ref: e for e in rows}


def by_layout(sim: SimProcess) -> dict[str, list[dict[str, Any]]]:
    layouts: dict[str, list[dict[str, Any]]] = {}
    for repo in sim.repositories():
        layouts.setdefault(repo["catalog_layout"], []).append(repo)
    return layouts


@pytest.fixture
def dc_world(
    sim_factory: SimFactory, runtime_for: RuntimeFactory, migrated_url: str
) -> tuple[SimProcess, Runtime]:
    sim = sim_factory(flavor="datacenter", repos=60, seed=5, access_token="dc-token")
    return sim, runtime_for(**dc_env(sim, DATABASE_URL=migrated_url))


def test_a_data_center_server_is_synced_completely(dc_world: tuple[SimProcess, Runtime]) -> None:
    sim, rt = dc_world
    result = dc_sync(rt)
    layouts = by_layout(sim)
    projects = {r["project_key"] for r in sim.repositories()}
    host = rt.datacenter_settings.host
    assert {p.workspace for p in result.projects} == {f"{host}/{key}" for key in projects}
    assert all(p.catalog.status == "succeeded" for p in result.projects)
    with_root_file = [r for k in ("single", "multi", "malformed") for r in layouts.get(k, [])]
    counts = [p.catalog.counts for p in result.projects]
    assert sum(c["checked"] for c in counts) == 60
    assert sum(c["files_fetched"] for c in counts) == len(with_root_file)
    # Malformed files, and the simulator's descriptors that restate Cloud's project slug
    # (`bitbucket.org/project-slug: acme/…`): a reserved annotation dropped is reported too.
    with rt.sessions() as session:
        reported = {
            repo.slug: file.parse_error
            for file, repo in session.execute(
                select(CatalogFile, Repository).join(Repository)
            ).all()
            if file.parse_error
        }
    assert sum(c["parse_errors"] for c in counts) == len(reported)
    for repo in layouts.get("malformed", []):
        assert repo["slug"] in reported
    assert all(
        "bitbucket.org/project-slug" in error
        for slug, error in reported.items()
        if slug not in {r["slug"] for r in layouts.get("malformed", [])}
    )
    # Cold sync: project and repository pages, one head and one probe per repository.
    calls = sim.stats()["calls"]
    assert calls["refs"] == 60 and calls["raw"] == 60
    assert calls["repos"] == len(projects) and calls["projects"] == 1

    entities = live_entities(rt)
    namespace = server_namespace(host)
    generated = [e for e in entities.values() if e.source == "generated"]
    without_root_file = len(layouts.get("none", [])) + len(layouts.get("nested", []))
    assert len(generated) == without_root_file
    assert all(e.namespace == namespace for e in generated)
    groups = [e for e in entities.values() if e.kind == "Group"]
    assert {g.entity_ref for g in groups} == {
        f"group:{namespace}/{key.lower()}" for key in projects
    }

    single = layouts["single"][0]
    key, slug = single["project_key"], single["slug"]
    entity = next(
        e
        for e in entities.values()
        if e.source == "descriptor"
        and e.body["metadata"]["annotations"]["bitbucket.com/project-slug"] == f"{key}/{slug}"
    )
    annotations = entity.body["metadata"]["annotations"]
    browse = f"{sim.url}/projects/{key}/repos/{slug}/browse"
    assert annotations["backstage.io/source-location"] == f"url:{browse}/"
    assert annotations["backstage.io/view-url"] == f"{browse}/catalog-info.yaml"
    assert annotations["backstage.io/edit-url"] == f"{browse}/catalog-info.yaml?mode=edit"
    assert annotations["backstage.io/managed-by-location"] == f"url:{browse}/catalog-info.yaml"
    assert "bitbucket.org/repo-url" not in annotations  # Cloud's, not Data Center's

    nested = layouts["nested"][0]
    component = next(
        e
        for e in generated
        if e.body["metadata"]["annotations"]["bitbucket.com/project-slug"]
        == f"{nested['project_key']}/{nested['slug']}"
    )
    assert component.name == f"{nested['project_key']}-{nested['slug']}".lower()
    assert component.body["spec"]["owner"] == f"group:{namespace}/{nested['project_key'].lower()}"

    assert validate_entities([e.body for e in entities.values()]) == []


def test_a_second_sync_reads_no_file_of_an_unchanged_repository(
    dc_world: tuple[SimProcess, Runtime],
) -> None:
    sim, rt = dc_world
    dc_sync(rt)
    before = {r: e.content_hash for r, e in live_entities(rt).items()}
    single = by_layout(sim)["single"][0]
    edited = (
        "apiVersion: backstage.io/v1alpha1\nkind: Component\nmetadata:\n"
        "  name: pushed-on-dc\nspec:\n  type: website\n  lifecycle: experimental\n"
        "  owner: group:default/web\n"
    )
    sim.admin("POST", f"repos/{single['slug']}/push", json={"files": {"catalog-info.yaml": edited}})
    sim.reset_stats()
    result = dc_sync(rt)
    calls = sim.stats()["calls"]
    assert calls["raw"] == 1  # only the pushed repository's file
    assert calls["refs"] == 60  # one head per repository tells what changed
    assert sum(p.catalog.counts["candidates"] for p in result.projects) == 1
    after = live_entities(rt)
    assert after["component:default/pushed-on-dc"].source == "descriptor"
    assert len(after) == len(before)  # one descriptor entity replaced by another


def test_a_cloud_workspace_and_a_data_center_server_with_the_same_names_never_collide(
    sim_factory: SimFactory, runtime_for: RuntimeFactory, migrated_url: str
) -> None:
    # The same seed: the same project keys, repository slugs and descriptors on both.
    cloud = sim_factory(repos=20, seed=3, access_token="sim-token")
    dc = sim_factory(flavor="datacenter", repos=20, seed=3, access_token="dc-token")
    rt = runtime_for(
        cloud,
        DATABASE_URL=migrated_url,
        BITBUCKET_RATE_LIMIT_PER_HOUR="100000",
        BITBUCKET_DC_URL=dc.url,
        BITBUCKET_DC_TOKEN="dc-token",
        BITBUCKET_DC_RATE_PER_SECOND="1000",
        BITBUCKET_DC_BURST="1000",
    )
    with rt.sessions() as session:
        WorkspaceSync(rt.bitbucket(), session, session.commit, rt.settings).run("acme")
    result = dc_sync(rt)
    with rt.sessions() as session:
        repos = session.execute(select(Repository, Workspace).join(Workspace)).all()
    assert len(repos) == 40
    assert len({r.uuid for r, _ in repos}) == 40
    kinds = {ws.slug.split("/", 1)[0] for _, ws in repos}
    assert kinds == {"acme", rt.datacenter_settings.host}

    entities = live_entities(rt)
    generated = [e for e in entities.values() if e.source == "generated"]
    cloud_generated = [e for e in generated if e.workspace == "acme"]
    dc_generated = [e for e in generated if e.workspace != "acme"]
    assert cloud_generated and len(cloud_generated) == len(dc_generated)
    groups = [e for e in entities.values() if e.kind == "Group"]
    assert len({g.entity_ref for g in groups}) == len(groups)
    assert {g.workspace == "acme" for g in groups} == {True, False}  # a project on each side
    # Descriptors are the same files on both: a name declared twice is a reported conflict,
    # never an overwrite. Generated entities and groups never clash.
    conflicts = [c for p in result.projects for c in p.catalog.counts["conflicts"]]
    descriptor_refs = {
        e.entity_ref
        for e in entities.values()
        if e.source == "descriptor" and e.workspace == "acme"
    }
    assert conflicts and all(c.split(" ", 1)[0] in descriptor_refs for c in conflicts)
    assert validate_entities([e.body for e in entities.values()]) == []


def test_at_the_servers_rate_a_full_sync_is_paced_and_never_refused(
    sim_factory: SimFactory, runtime_for: RuntimeFactory, sqlite_url: str
) -> None:
    migrate(sqlite_url)
    sim = sim_factory(
        flavor="datacenter", repos=40, seed=6, access_token="dc-token", rate_limit="40/s", burst=10
    )
    rt = runtime_for(
        **dc_env(
            sim,
            DATABASE_URL=sqlite_url,
            BITBUCKET_DC_RATE_PER_SECOND="36",
            BITBUCKET_DC_BURST="10",
            BITBUCKET_RATE_RESERVE_PERCENT="0",
        )
    )
    started = time.monotonic()
    result = dc_sync(rt)
    elapsed = time.monotonic() - started
    stats = sim.stats()
    print(
        f"\nData Center pacing figure: {stats['calls_total']} calls in {elapsed:.1f}s "
        f"through a bucket of 10 at 36/s (server: 10 at 40/s), {stats['rate_limited']} 429s"
    )
    assert all(p.catalog.status == "succeeded" for p in result.projects)
    assert stats["rate_limited"] == 0
    assert elapsed >= (stats["calls_total"] - 10) / 36 * 0.9


def test_a_sync_cut_short_by_429s_resumes_and_completes_without_duplicates(
    sim_factory: SimFactory, runtime_for: RuntimeFactory, sqlite_url: str
) -> None:
    migrate(sqlite_url)
    reference = sim_factory(flavor="datacenter", repos=30, seed=9, access_token="dc-token")
    clean = runtime_for(**dc_env(reference, DATABASE_URL=f"{sqlite_url}-clean"))
    migrate(clean.settings.database_url)
    dc_sync(clean)
    namespace = server_namespace(clean.datacenter_settings.host)

    def comparable(rt: Runtime, ns: str) -> dict[str, str]:
        # The two servers differ only in their port: compare with the host part taken out.
        return {
            ref.replace(ns, "server"): e.body["spec"].get("owner", "").replace(ns, "server")
            for ref, e in live_entities(rt).items()
        }

    sim = sim_factory(
        flavor="datacenter", repos=30, seed=9, access_token="dc-token", rate_limit="20/s", burst=5
    )
    rt = runtime_for(**dc_env(sim, DATABASE_URL=sqlite_url))
    interruptions = 0
    for _ in range(60):
        try:
            dc_sync(rt)
            break
        except RetryLater as exc:
            interruptions += 1
            time.sleep(exc.retry_after or 1)
    print(f"\nData Center 429 figure: {interruptions} interruptions, {sim.stats()}")
    assert interruptions >= 1
    assert sim.stats()["rate_limited"] == interruptions
    # Each resume picks up where the pause struck: no head or file is asked for twice.
    assert (sim.stats()["calls"]["refs"], sim.stats()["calls"]["raw"]) == (30, 30)
    assert comparable(rt, server_namespace(rt.datacenter_settings.host)) == comparable(
        clean, namespace
    )


def test_a_descriptor_unchanged_by_a_push_answers_304_where_the_server_sends_etags(
    sim_factory: SimFactory, runtime_for: RuntimeFactory, sqlite_url: str
) -> None:
    migrate(sqlite_url)
    sim = sim_factory(flavor="datacenter", repos=15, seed=2, access_token="dc-token", raw_etag=True)
    rt = runtime_for(**dc_env(sim, DATABASE_URL=sqlite_url))
    dc_sync(rt)
    single = by_layout(sim)["single"][0]
    sim.admin("POST", f"repos/{single['slug']}/push", json={"files": {"README.md": "changed"}})
    result = dc_sync(rt)
    counts = [p.catalog.counts for p in result.projects]
    assert sum(c["candidates"] for c in counts) == 1
    assert sum(c["files_unchanged"] for c in counts) == 1
    assert sum(c["files_fetched"] for c in counts) == 0


def test_a_repository_deleted_on_the_server_leaves_the_catalog(
    dc_world: tuple[SimProcess, Runtime],
) -> None:
    sim, rt = dc_world
    dc_sync(rt)
    gone = by_layout(sim)["none"][0]
    slug_annotation = f"{gone['project_key']}/{gone['slug']}"

    def generated_for_gone() -> list[CatalogEntity]:
        return [
            e
            for e in live_entities(rt).values()
            if e.body["metadata"]["annotations"].get("bitbucket.com/project-slug")
            == slug_annotation
        ]

    assert len(generated_for_gone()) == 1
    sim.admin("DELETE", f"repos/{gone['slug']}")
    result = dc_sync(rt)
    project = next(p for p in result.projects if p.workspace.endswith("/" + gone["project_key"]))
    assert project.repositories is not None and project.repositories.counts["deleted"] == 1
    assert "removed 1 entities" in project.catalog.counts["sweep"]
    assert generated_for_gone() == []


def test_only_the_configured_projects_are_synced(
    sim_factory: SimFactory, runtime_for: RuntimeFactory, sqlite_url: str
) -> None:
    migrate(sqlite_url)
    sim = sim_factory(flavor="datacenter", repos=40, seed=5, access_token="dc-token")
    keys = sorted({r["project_key"] for r in sim.repositories()})
    assert len(keys) >= 2
    rt = runtime_for(
        **dc_env(sim, DATABASE_URL=sqlite_url, BITBUCKET_DC_PROJECTS=f"{keys[0]},NOSUCH")
    )
    result = dc_sync(rt)
    assert [p.workspace.rsplit("/", 1)[1] for p in result.projects] == [keys[0]]
    assert result.warnings == ["Data Center project NOSUCH not found or not visible"]
    listed = sum(1 for r in sim.repositories() if r["project_key"] == keys[0])
    with rt.sessions() as session:
        assert len(session.scalars(select(Repository)).all()) == listed
