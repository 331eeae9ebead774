"""Repository discovery against the live simulator, on SQLite and PostgreSQL: pages of 100,
batched upserts, a sync run that records what it cost, resume after budget exhaustion, and
mark-and-sweep deletion with its guard."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from sqlalchemy import func, select

from app.bitbucket.errors import BudgetExhausted
from app.db import session_scope
from app.models import Project, Repository, SyncRun, Workspace
from app.runtime import Runtime
from app.sync.repositories import RepositorySync, SyncProgress
from bitbucket_sim.testing import SimProcess

SimFactory = Callable[..., SimProcess]
RuntimeFactory = Callable[..., Runtime]


def run_sync(rt: Runtime, **options: object) -> SyncRun:
    with rt.sessions() as session:
        return RepositorySync(rt.bitbucket(), session, session.commit, **options).run("acme")  # type: ignore[arg-type]


def live_repositories(rt: Runtime) -> dict[str, Repository]:
    with rt.sessions() as session:
        rows = session.scalars(select(Repository).where(Repository.deleted_at.is_(None)))
        return {r.uuid: r for r in rows}


def test_full_sync_mirrors_every_repository_and_records_the_run(
    sim_factory: SimFactory, runtime_for: RuntimeFactory, migrated_url: str
) -> None:
    sim = sim_factory(repos=250, access_token="sim-token")
    rt = runtime_for(sim, DATABASE_URL=migrated_url)
    seen: list[SyncProgress] = []
    with rt.sessions() as session:
        run = RepositorySync(rt.bitbucket(), session, session.commit, on_progress=seen.append).run(
            "acme"
        )
    assert run.status == "succeeded"
    assert run.counts == {"seen": 250, "invalid": 0, "deleted": 0}
    assert run.api_calls == sim.stats()["calls_total"] == 3
    assert run.calls_by_family == {"repositories": 3}
    assert [p.seen for p in seen] == [100, 200, 250]
    repos = live_repositories(rt)
    assert len(repos) == 250
    listed = {r["uuid"]: r for page in _sim_pages(sim) for r in page}
    sample = repos[next(iter(listed))]
    source = listed[sample.uuid]
    assert (sample.slug, sample.full_name, sample.default_branch) == (
        source["slug"],
        source["full_name"],
        source["mainbranch"]["name"],
    )
    assert sample.updated_on is not None and sample.updated_on.tzinfo is not None
    with session_scope(rt.sessions) as session:
        assert session.scalar(select(func.count()).select_from(Workspace)) == 1
        projects = {r["project"]["uuid"] for r in listed.values() if r.get("project")}
        assert session.scalar(select(func.count()).select_from(Project)) == len(projects)


def _sim_pages(sim: SimProcess) -> list[list[dict]]:
    import requests

    url: str | None = f"{sim.api_url}/repositories/acme?pagelen=100"
    pages = []
    while url:
        body = requests.get(url, headers={"Authorization": "Bearer sim-token"}, timeout=10).json()
        pages.append(body["values"])
        url = body.get("next")
    return pages


def test_a_sync_stopped_by_the_budget_resumes_where_it_stopped(
    sim_factory: SimFactory, runtime_for: RuntimeFactory, sqlite_url: str
) -> None:
    from tests.conftest import migrate

    migrate(sqlite_url)
    sim = sim_factory(repos=250, access_token="sim-token")
    rt = runtime_for(
        sim,
        BITBUCKET_RATE_LIMIT_PER_HOUR="2",
        BITBUCKET_RATE_RESERVE_PERCENT="0",
        BITBUCKET_LEARN_RATE_LIMIT="false",  # hold to the tiny configured limit
    )
    with pytest.raises(BudgetExhausted):
        run_sync(rt)
    with rt.sessions() as session:
        paused = session.scalars(select(SyncRun)).one()
        assert paused.status == "paused"
        assert paused.cursor and paused.cursor["next"].startswith(sim.api_url)
        assert paused.counts["seen"] == 200
        assert paused.api_calls == 2
    assert len(live_repositories(rt)) == 200

    rt.budget.reset()
    run = run_sync(rt)
    assert run.id == paused.id
    assert run.status == "succeeded"
    assert run.counts["seen"] == 250
    assert run.api_calls == 3 == sim.stats()["calls_total"]
    assert len(live_repositories(rt)) == 250


def test_deleted_repositories_are_swept_and_renames_keep_identity(
    sim: SimProcess, runtime_for: RuntimeFactory, sqlite_url: str
) -> None:
    from tests.conftest import migrate

    migrate(sqlite_url)
    rt = runtime_for(sim)
    run_sync(rt)
    before = live_repositories(rt)
    gone, renamed = sorted(before.values(), key=lambda r: r.slug)[:2]
    assert sim.admin("DELETE", f"repos/{gone.slug}").status_code < 300
    assert (
        sim.admin(
            "POST",
            f"repos/{renamed.slug}/rename",
            json={"name": "Renamed Thing", "slug": "renamed-thing"},
        ).status_code
        < 300
    )
    run = run_sync(rt)
    assert run.counts["deleted"] == 1
    after = live_repositories(rt)
    assert gone.uuid not in after
    assert after[renamed.uuid].slug == "renamed-thing"
    assert len(after) == len(before) - 1
    with rt.sessions() as session:
        tombstone = session.scalars(select(Repository).where(Repository.uuid == gone.uuid)).one()
        assert tombstone.deleted_at is not None


def test_a_mass_disappearance_is_not_swept(
    sim: SimProcess, runtime_for: RuntimeFactory, sqlite_url: str
) -> None:
    from tests.conftest import migrate

    migrate(sqlite_url)
    rt = runtime_for(sim)
    run_sync(rt)
    for repo in sorted(live_repositories(rt).values(), key=lambda r: r.slug)[:5]:
        sim.admin("DELETE", f"repos/{repo.slug}")
    run = run_sync(rt, max_delete_share=0.1)
    assert run.status == "succeeded"
    assert run.counts["deleted"] == 0
    assert run.error and "sweep refused: 5 of 30" in run.error
    assert len(live_repositories(rt)) == 30
