"""Event processing paths the end-to-end flow does not take: a change the webhook's repository
object cannot describe (the API is asked, on the webhook reserve), and transfers in and out of
the configured workspaces."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select

from app.bitbucket.budget import Priority
from app.models import CatalogEntity, Project, Repository, WebhookDelivery, utcnow
from app.runtime import Runtime
from app.sync.events import EventProcessor
from app.sync.workspace import WorkspaceSync
from bitbucket_sim.testing import SimProcess
from tests.webhook_support import repository


def process(rt: Runtime, event_key: str, body: dict[str, Any]) -> tuple[str, list[int]]:
    scheduled: list[int] = []
    with rt.sessions() as session:
        processor = EventProcessor(
            rt.bitbucket(Priority.WEBHOOK), session, rt.settings, scheduled.append
        )
        delivery = WebhookDelivery(request_uuid=str(uuid.uuid4()), event_key=event_key, body=body)
        summary = processor.process(delivery)
        session.commit()
    return summary, scheduled


def synced(sim: SimProcess, runtime_for: Callable[..., Runtime], database_url: str) -> Runtime:
    """A runtime on `database_url` (already migrated) after a full sync of the simulator."""
    rt = runtime_for(sim, DATABASE_URL=database_url)
    with rt.sessions() as session:
        WorkspaceSync(rt.bitbucket(), session, session.commit, rt.settings).run("acme")
    return rt


def stored(rt: Runtime, uuid_: str) -> Repository:
    with rt.sessions() as session:
        return session.scalars(select(Repository).where(Repository.uuid == uuid_)).one()


def test_a_main_branch_change_is_read_from_the_api(
    sim: SimProcess, runtime_for: Callable[..., Runtime], migrated_sqlite_url: str
) -> None:
    rt = synced(sim, runtime_for, migrated_sqlite_url)
    repo = sim.repositories()[0]
    other = next(b for b in repo["branches"] if b != repo["mainbranch"])
    sim.admin("PATCH", f"repos/{repo['slug']}", json={"mainbranch": other})
    before = sim.stats()["calls"]["repositories"]
    body = {
        "repository": repository(repo["slug"], repo["uuid"], sim.api_url),
        "changes": {"mainbranch": {"old": {"name": repo["mainbranch"]}, "new": {"name": other}}},
    }
    summary, scheduled = process(rt, "repo:updated", body)
    assert "updated (mainbranch)" in summary
    assert sim.stats()["calls"]["repositories"] == before + 1  # the payload lacks it
    row = stored(rt, repo["uuid"])
    assert row.default_branch == other
    assert scheduled == [row.id]  # the catalog is read again at the new branch


def test_a_rename_is_taken_from_the_payload_without_a_call(
    sim: SimProcess, runtime_for: Callable[..., Runtime], migrated_url: str
) -> None:
    rt = synced(sim, runtime_for, migrated_url)
    repo = sim.repositories()[1]
    payload_repo = {**repository("renamed-here", repo["uuid"], sim.api_url), "name": "Renamed"}
    calls = sim.stats()["calls_total"]
    process(
        rt,
        "repo:updated",
        {"repository": payload_repo, "changes": {"name": {"old": repo["name"], "new": "Renamed"}}},
    )
    assert sim.stats()["calls_total"] == calls
    row = stored(rt, repo["uuid"])
    assert (row.slug, row.full_name, row.name) == ("renamed-here", "acme/renamed-here", "Renamed")
    # The payload's project PAY has another UUID than the PAY listed before (a project
    # recreated under the same key): it takes the key over instead of failing the upsert.
    with rt.sessions() as session:
        project = session.get(Project, row.project_id)
        assert project is not None and project.uuid == payload_repo["project"]["uuid"]
        stale = session.scalars(select(Project).where(Project.key.startswith("~"))).all()
    assert len(stale) <= 1 and all(p.key == f"~{p.uuid}" for p in stale)


def test_a_transfer_out_of_the_configured_workspaces_retires_the_repository(
    sim: SimProcess, runtime_for: Callable[..., Runtime], migrated_sqlite_url: str
) -> None:
    rt = synced(sim, runtime_for, migrated_sqlite_url)
    repo = sim.repositories()[2]
    moved = {
        **repository(repo["slug"], repo["uuid"], sim.api_url),
        "full_name": f"elsewhere/{repo['slug']}",
    }
    summary, scheduled = process(rt, "repo:transfer", {"repository": moved})
    assert "left the configured workspaces; retired" in summary and scheduled == []
    row = stored(rt, repo["uuid"])
    assert row.deleted_at is not None
    with rt.sessions() as session:
        live = session.scalars(
            select(CatalogEntity).where(
                CatalogEntity.repository_id == row.id, CatalogEntity.deleted_at.is_(None)
            )
        ).all()
    assert live == []


def test_a_transfer_within_the_configured_workspaces_refreshes_it(
    sim: SimProcess, runtime_for: Callable[..., Runtime], migrated_sqlite_url: str
) -> None:
    rt = synced(sim, runtime_for, migrated_sqlite_url)
    repo = sim.repositories()[3]
    summary, scheduled = process(
        rt, "repo:transfer", {"repository": repository(repo["slug"], repo["uuid"], sim.api_url)}
    )
    assert "transferred; catalog refresh scheduled" in summary
    assert scheduled == [stored(rt, repo["uuid"]).id]


def deliver(rt: Runtime, event_key: str, body: dict[str, Any], received_at: datetime) -> str:
    """Store a delivery received at `received_at`, process it, and mark it processed (as the
    worker's task does)."""
    with rt.sessions() as session:
        delivery = WebhookDelivery(
            request_uuid=str(uuid.uuid4()),
            event_key=event_key,
            body=body,
            repository_uuid=body["repository"]["uuid"],
            received_at=received_at,
        )
        session.add(delivery)
        session.flush()
        processor = EventProcessor(
            rt.bitbucket(Priority.WEBHOOK), session, rt.settings, lambda _: None
        )
        summary = processor.process(delivery)
        delivery.status = "processed"
        session.commit()
    return summary


def test_an_older_rename_processed_late_does_not_undo_a_newer_one(
    sim: SimProcess, runtime_for: Callable[..., Runtime], migrated_url: str
) -> None:
    rt = synced(sim, runtime_for, migrated_url)
    repo = sim.repositories()[4]
    t0 = utcnow() - timedelta(minutes=5)

    def rename(slug: str) -> dict[str, Any]:
        return {
            "repository": {**repository(slug, repo["uuid"], sim.api_url), "name": slug.title()},
            "changes": {"name": {"old": repo["name"], "new": slug.title()}},
        }

    deliver(rt, "repo:updated", rename("second-name"), t0 + timedelta(seconds=2))
    summary = deliver(rt, "repo:updated", rename("first-name"), t0 + timedelta(seconds=1))
    assert "stale delivery ignored" in summary
    assert stored(rt, repo["uuid"]).slug == "second-name"


def test_a_rename_older_than_the_stored_updated_on_is_ignored(
    sim: SimProcess, runtime_for: Callable[..., Runtime], migrated_sqlite_url: str
) -> None:
    rt = synced(sim, runtime_for, migrated_sqlite_url)
    repo = sim.repositories()[5]
    listed_on = stored(rt, repo["uuid"]).updated_on
    assert listed_on is not None
    older = (listed_on - timedelta(days=1)).isoformat()
    body = {
        "repository": repository("an-old-name", repo["uuid"], sim.api_url),
        "changes": {"name": {"old": "x", "new": "An-Old-Name"}, "updated_on": {"new": older}},
    }
    summary = deliver(rt, "repo:updated", body, utcnow())
    assert "stale delivery ignored" in summary
    assert stored(rt, repo["uuid"]).slug == repo["slug"]
    newer = (listed_on + timedelta(seconds=1)).isoformat()
    body["changes"]["updated_on"] = {"new": newer}
    deliver(rt, "repo:updated", body, utcnow())
    row = stored(rt, repo["uuid"])
    assert row.slug == "an-old-name" and row.updated_on == listed_on + timedelta(seconds=1)


def test_a_late_transfer_out_does_not_retire_a_repository_that_came_back(
    sim: SimProcess, runtime_for: Callable[..., Runtime], migrated_sqlite_url: str
) -> None:
    rt = synced(sim, runtime_for, migrated_sqlite_url)
    repo = sim.repositories()[6]
    t0 = utcnow() - timedelta(minutes=5)
    back = {"repository": repository(repo["slug"], repo["uuid"], sim.api_url)}
    out = {"repository": {**back["repository"], "full_name": f"elsewhere/{repo['slug']}"}}
    deliver(rt, "repo:transfer", back, t0 + timedelta(seconds=2))
    summary = deliver(rt, "repo:transfer", out, t0 + timedelta(seconds=1))
    assert "stale transfer ignored" in summary
    assert stored(rt, repo["uuid"]).deleted_at is None


def test_a_push_delivered_late_does_not_move_the_head_back(
    sim: SimProcess, runtime_for: Callable[..., Runtime], migrated_sqlite_url: str
) -> None:
    rt = synced(sim, runtime_for, migrated_sqlite_url)
    repo = sim.repositories()[7]

    def push(commit: str, date: str) -> dict[str, Any]:
        target = {"hash": commit * 40, "date": date}
        new = {"type": "branch", "name": repo["mainbranch"], "target": target}
        return {
            "push": {"changes": [{"new": new, "old": None}]},
            "repository": repository(repo["slug"], repo["uuid"], sim.api_url),
        }

    deliver(rt, "repo:push", push("b", "2026-12-01T10:00:02+00:00"), utcnow())
    deliver(rt, "repo:push", push("a", "2026-12-01T10:00:01+00:00"), utcnow())
    assert stored(rt, repo["uuid"]).head_commit == "b" * 40


def test_a_deletion_bitbucket_does_not_confirm_removes_nothing(
    sim: SimProcess, runtime_for: Callable[..., Runtime], migrated_sqlite_url: str
) -> None:
    """The event key is unsigned: a captured body replayed as `repo:deleted` must not retire a
    repository that Bitbucket still has; a real deletion still does."""
    rt = synced(sim, runtime_for, migrated_sqlite_url)
    kept, gone = sim.repositories()[3], sim.repositories()[4]
    body = {"repository": repository(kept["slug"], kept["uuid"], sim.api_url)}
    summary, _ = process(rt, "repo:deleted", body)
    assert "Bitbucket still has this repository" in summary
    assert stored(rt, kept["uuid"]).deleted_at is None
    assert sim.admin("DELETE", f"repos/{gone['slug']}").status_code < 300
    summary, _ = process(
        rt, "repo:deleted", {"repository": repository(gone["slug"], gone["uuid"], sim.api_url)}
    )
    assert "deleted; its entities left the catalog" in summary
    assert stored(rt, gone["uuid"]).deleted_at is not None
