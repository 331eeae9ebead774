"""Hostile descriptors and unservable files through a full sync against the live simulator,
on SQLite and PostgreSQL: what anyone who can push writes is bounded, reported on its file,
and never changes who a user is; one bad file never costs the run."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import MetaData, Table, insert, select

from app.bitbucket.errors import BitbucketUnavailable, RetryLater
from app.db import make_engine, make_session_factory, session_scope
from app.models import CatalogChange, CatalogEntity, CatalogFile, Repository, Workspace
from app.runtime import Runtime
from app.sync.catalog.phase import CatalogSync
from app.sync.workspace import WorkspaceSync, WorkspaceSyncResult
from app.web import create_app
from bitbucket_sim.testing import SimProcess
from tests.conftest import api_client, migrate, run_bbsync
from tests.test_descriptor_safety import alias_bomb

SimFactory = Callable[..., SimProcess]
RuntimeFactory = Callable[..., Runtime]
FAST = {"BITBUCKET_RATE_LIMIT_PER_HOUR": "1000000", "BITBUCKET_HTTP_RETRIES": "1"}


def full_sync(rt: Runtime) -> WorkspaceSyncResult:
    with rt.sessions() as session:
        return WorkspaceSync(rt.bitbucket(), session, session.commit, rt.settings).run("acme")


def live(rt: Runtime) -> dict[str, CatalogEntity]:
    with rt.sessions() as session:
        rows = session.scalars(select(CatalogEntity).where(CatalogEntity.deleted_at.is_(None)))
        return {e.entity_ref: e for e in rows}


def file_errors(rt: Runtime) -> dict[str, str | None]:
    with rt.sessions() as session:
        rows = session.execute(
            select(Repository.slug, CatalogFile.parse_error)
            .join(Repository, CatalogFile.repository_id == Repository.id)
            .where(CatalogFile.deleted_at.is_(None))
        ).all()
    return {slug: error for slug, error in rows}


def listed_errors(rt: Runtime) -> dict[str, str]:
    response = api_client(create_app(runtime=rt)).get("/api/catalog-files?errors=1&limit=500")
    assert response.status_code == 200
    return {i["repository"]: i["parse_error"] for i in response.json["items"]}


def descriptor_refs(rt: Runtime, slug: str) -> set[str]:
    with rt.sessions() as session:
        repo = session.scalars(select(Repository).where(Repository.slug == slug)).one()
        return set(
            session.scalars(
                select(CatalogEntity.entity_ref).where(
                    CatalogEntity.repository_id == repo.id,
                    CatalogEntity.deleted_at.is_(None),
                    CatalogEntity.source == "descriptor",
                )
            )
        )


def push(sim: SimProcess, slug: str, content: str) -> None:
    response = sim.admin(
        "POST", f"repos/{slug}/push", json={"files": {"catalog-info.yaml": content}}
    )
    assert response.status_code < 300, response.text


def component(name: str, annotations: str = "", spec: str = "") -> str:
    meta = f"  annotations:\n{annotations}" if annotations else ""
    return (
        f"apiVersion: backstage.io/v1alpha1\nkind: Component\nmetadata:\n  name: {name}\n{meta}"
        f"spec:\n  type: service\n  lifecycle: production\n  owner: group:default/pay\n{spec}"
    )


@pytest.fixture
def synced(
    sim_factory: SimFactory, runtime_for: RuntimeFactory, migrated_url: str
) -> tuple[SimProcess, Runtime, list[str]]:
    """A synced workspace whose first six single-descriptor repositories each define `good-N`."""
    sim = sim_factory(repos=40, seed=5, access_token="sim-token")
    rt = runtime_for(sim, DATABASE_URL=migrated_url, **FAST)
    slugs = [r["slug"] for r in sim.repositories() if r["catalog_layout"] == "single"][:6]
    assert len(slugs) == 6
    for number, slug in enumerate(slugs):
        push(sim, slug, component(f"good-{number}"))
    assert full_sync(rt).catalog.status == "succeeded"
    return sim, rt, slugs


def test_a_descriptor_cannot_declare_people_or_set_bbsync_annotations(
    synced: tuple[SimProcess, Runtime, list[str]], tmp_path: Path
) -> None:
    sim, rt, slugs = synced
    hostile = (
        component(
            "billing",
            "    bitbucket.org/workspace: evil\n"
            "    bitbucket.org/user-id: '{00000000-0000-4000-8000-000000000001}'\n"
            "    backstage.io/managed-by-location: url:https://evil.example/x.yaml\n"
            "    backstage.io/techdocs-ref: dir:.\n",
        )
        + "---\napiVersion: backstage.io/v1alpha1\nkind: User\nmetadata:\n  name: mallory\n"
        "  annotations:\n    bitbucket.org/user-id: '{00000000-0000-4000-8000-000000000001}'\n"
        "spec: {memberOf: [admins]}\n"
        "---\napiVersion: backstage.io/v1alpha1\nkind: Group\nmetadata:\n  name: admins\n"
        "spec: {type: team, children: [], members: [mallory]}\n"
    )
    push(sim, slugs[0], hostile)
    result = full_sync(rt)
    assert result.catalog.status == "succeeded"
    assert result.catalog.counts["parse_errors"] >= 1

    entities = live(rt)
    assert "user:default/mallory" not in entities
    assert "group:default/admins" not in entities
    annotations = entities["component:default/billing"].body["metadata"]["annotations"]
    assert annotations["bitbucket.org/workspace"] == "acme"
    assert annotations["bitbucket.com/project-slug"] == f"acme/{slugs[0]}"
    assert "bitbucket.org/user-id" not in annotations
    # Where the entity lives is bbsync's to say: the file in Bitbucket, not the descriptor's URL.
    assert annotations["backstage.io/managed-by-location"] == (
        f"url:https://bitbucket.org/acme/{slugs[0]}/src/main/catalog-info.yaml"
    )
    assert annotations["backstage.io/techdocs-ref"] == "dir:."
    assert "component:default/good-0" not in entities  # the file's new content was used

    error = file_errors(rt)[slugs[0]] or ""
    assert "user:default/mallory: kind User is not allowed" in error
    assert "group:default/admins: kind Group is not allowed" in error
    assert "bitbucket.org/user-id" in error and "managed-by-location" in error
    assert listed_errors(rt)[f"acme/{slugs[0]}"] == error

    status = run_bbsync(
        "status",
        env={
            "DATABASE_URL": rt.settings.database_url,
            "REDIS_URL": rt.settings.redis_url,
            "BITBUCKET_API_URL": sim.api_url,
            "BITBUCKET_WORKSPACES": "acme",
            "BITBUCKET_ACCESS_TOKEN": "sim-token",
        },
        cwd=tmp_path,
    )
    assert status.returncode == 0, status.stderr
    line = next(x for x in status.stdout.splitlines() if f"acme/{slugs[0]}/" in x)
    assert line.strip() == f"acme/{slugs[0]}/catalog-info.yaml: {error}"


def test_a_poisoned_file_is_one_error_and_keeps_its_last_good_entities(
    synced: tuple[SimProcess, Runtime, list[str]],
) -> None:
    sim, rt, slugs = synced
    before = {ref: e.content_hash for ref, e in live(rt).items()}
    poisons = {
        # Small enough that code without the bounds survives it (and keeps it): 10,000 leaves.
        slugs[0]: (alias_bomb(levels=4, width=10), "anchors (&name) are not allowed"),
        slugs[1]: (component("good-1", spec="  due: 2026-02-31\n"), "unusable value"),
        slugs[2]: (component("good-2", spec='  note: "a\\0b"\n'), "NUL"),
        slugs[3]: (component("good-3") + "\x00\n", "invalid YAML"),
        slugs[4]: (
            component("good-4", spec="  deep: " + "[" * 60 + "]" * 60 + "\n"),
            "nested deeper than 40 levels",
        ),
    }
    for slug, (content, _) in poisons.items():
        push(sim, slug, content)
    push(sim, slugs[5], component("renamed-5"))

    result = full_sync(rt)
    assert result.catalog.status == "succeeded"
    assert result.catalog.counts["parse_errors"] >= len(poisons)
    errors = file_errors(rt)
    listed = listed_errors(rt)
    for slug, (_, message) in poisons.items():
        assert message in (errors[slug] or ""), slug
        assert listed[f"acme/{slug}"] == errors[slug]
    entities = live(rt)
    for number in range(5):  # the last good entities, unchanged
        assert (
            entities[f"component:default/good-{number}"].content_hash
            == (before[f"component:default/good-{number}"])
        )
    # The rest of the run completed: the harmless push was applied.
    assert "component:default/renamed-5" in entities
    assert "component:default/good-5" not in entities

    # Fixed files are read again and their errors cleared.
    for number, slug in enumerate(slugs[:5]):
        push(sim, slug, component(f"fixed-{number}"))
    assert full_sync(rt).catalog.status == "succeeded"
    assert not any(file_errors(rt)[slug] for slug in slugs)
    assert {f"component:default/fixed-{n}" for n in range(5)} <= set(live(rt))


def test_a_file_bitbucket_keeps_failing_to_serve_is_skipped_and_reported(
    synced: tuple[SimProcess, Runtime, list[str]],
) -> None:
    sim, rt, slugs = synced
    bad, good = slugs[0], slugs[1]
    push(sim, bad, component("moved-0"))
    push(sim, good, component("moved-1"))
    fault = {"status": 502, "times": 1000, "path_contains": f"/{bad}/src/"}
    assert sim.admin("POST", "faults", json=fault).status_code < 300

    result = full_sync(rt)
    counts: dict[str, Any] = result.catalog.counts
    assert result.catalog.status == "succeeded"
    assert counts["files_unavailable"] == 1
    assert counts["sweep"].startswith("skipped")
    entities = live(rt)
    assert "component:default/moved-1" in entities  # the rest of the run completed
    assert descriptor_refs(rt, bad) == {"component:default/good-0"}  # kept, not swept
    error = file_errors(rt)[bad] or ""
    assert error.startswith("not served by Bitbucket, kept as last read:")
    assert "HTTP 502 after 2 attempts" in error
    assert listed_errors(rt)[f"acme/{bad}"] == error

    # The repository stays unchecked: the next run reads it once Bitbucket serves it.
    assert sim.admin("DELETE", "faults").status_code < 300
    assert full_sync(rt).catalog.status == "succeeded"
    assert descriptor_refs(rt, bad) == {"component:default/moved-0"}
    assert file_errors(rt)[bad] is None


def test_when_bitbucket_serves_no_file_at_all_the_run_pauses(
    synced: tuple[SimProcess, Runtime, list[str]],
) -> None:
    sim, rt, slugs = synced
    for number, slug in enumerate(slugs):
        push(sim, slug, component(f"moved-{number}"))
    sim.admin("POST", "faults", json={"status": 503, "times": 1000, "path_contains": "/src/"})
    sim.reset_stats()
    with pytest.raises(RetryLater):
        full_sync(rt)
    # Three files in a row, two attempts each: then it is Bitbucket, not a file.
    assert sim.stats()["calls"]["src"] == 3 * 2
    assert {f"component:default/good-{n}" for n in range(6)} <= set(live(rt))


def test_a_push_whose_file_is_not_served_is_retried_later(
    synced: tuple[SimProcess, Runtime, list[str]],
) -> None:
    sim, rt, slugs = synced
    push(sim, slugs[0], component("moved-0"))
    sim.admin("POST", "faults", json={"status": 502, "times": 1000, "path_contains": "/src/"})
    with rt.sessions() as session:
        repo = session.scalars(select(Repository).where(Repository.slug == slugs[0])).one()
        with pytest.raises(BitbucketUnavailable):
            CatalogSync(rt.bitbucket(), session, session.commit, rt.settings).refresh_repository(
                repo.id
            )


def test_the_upgrade_removes_what_older_versions_took_from_descriptors(database_url: str) -> None:
    migrate(database_url, "0009")  # just before the migration under test
    engine = make_engine(database_url)
    sessions = make_session_factory(engine)
    checked = datetime(2026, 11, 1, tzinfo=UTC)

    def entity(ref: str, repo_id: int, annotations: dict[str, str]) -> CatalogEntity:
        kind, name = ref.split(":default/")
        return CatalogEntity(
            entity_ref=ref,
            kind=kind.capitalize(),
            name=name,
            body={
                "kind": kind.capitalize(),
                "metadata": {"name": name, "annotations": annotations},
            },
            content_hash="x",
            source="descriptor",
            workspace="acme",
            repository_id=repo_id,
        )

    # Repositories as the schema at 0009 has them (the model has columns added since).
    old_repositories = Table("repositories", MetaData(), autoload_with=engine)
    with session_scope(sessions) as session:
        ws = Workspace(uuid="{w}", slug="acme")
        session.add(ws)
        session.flush()
        repos = [
            session.execute(
                insert(old_repositories)
                .values(
                    uuid=f"{{r{n}}}",
                    workspace_id=ws.id,
                    slug=f"r{n}",
                    full_name=f"acme/r{n}",
                    name="",
                    description="",
                    is_private=True,
                    language="",
                    synced_at=checked,
                    catalog_checked_on=checked,
                    catalog_checked_head="abc",
                )
                .returning(old_repositories.c.id)
            ).scalar_one()
            for n in range(4)
        ]
        own = {"bitbucket.org/workspace": "acme", "bitbucket.com/project-slug": "acme/r{}"}
        session.add_all(
            [
                entity("user:default/mallory", repos[0], {"bitbucket.org/user-id": "{v}"}),
                entity("component:default/a", repos[1], {"bitbucket.org/user-id": "{v}"}),
                entity(
                    "component:default/b",
                    repos[2],
                    {**own, "bitbucket.com/project-slug": "other/repo"},
                ),
                entity(
                    "component:default/c",
                    repos[3],
                    {**own, "bitbucket.com/project-slug": "acme/r3", "backstage.io/x": "y"},
                ),
            ]
        )
    migrate(database_url)
    with session_scope(sessions) as session:
        gone = {
            e.entity_ref
            for e in session.scalars(
                select(CatalogEntity).where(CatalogEntity.deleted_at.is_not(None))
            )
        }
        unchecked = {
            r.slug
            for r in session.scalars(
                select(Repository).where(Repository.catalog_checked_on.is_(None))
            )
        }
        # The removal is in the change feed's log, after the numbers 0009 gave every entity.
        last_change = session.scalars(
            select(CatalogChange).order_by(CatalogChange.id.desc()).limit(1)
        ).one()
        mallory = session.scalars(
            select(CatalogEntity).where(CatalogEntity.entity_ref == "user:default/mallory")
        ).one()
        assert last_change.entity_id == mallory.id
    engine.dispose()
    assert gone == {"user:default/mallory"}
    assert unchecked == {"r0", "r1", "r2"}  # r3's entity carries only what bbsync derives
