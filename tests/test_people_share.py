"""The people sync within its share of the budget (`BBSYNC_PEOPLE_SHARE`): members and groups
every run, the repository-permissions walk as far as the share goes, oldest read first, so
successive runs sweep every repository; a permission is revoked only in a repository the walk
read in full. Live simulator; SQLite and PostgreSQL; a real Celery worker."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from app.config import SettingsError, settings_from_env
from app.db import make_engine, make_session_factory
from app.models import AccessAudit, Repository, RepositoryPermission, SyncRun, utcnow
from app.runtime import Runtime
from app.sync.people import BATCH_REPOSITORIES, PeopleSync, people_calls_left, people_coverage
from app.sync.workspace import WorkspaceSync
from app.task_names import SYNC_MEMBERS, enqueue, producer
from app.web import create_app
from bitbucket_sim.testing import SimProcess
from tests.conftest import api_client, migrate
from tests.test_worker import WorkerFactory, start_worker, worker_env  # noqa: F401  (fixture)


def _listing(rt: Runtime) -> None:
    with rt.sessions() as session:
        WorkspaceSync(rt.bitbucket(), session, session.commit, rt.settings).run("acme")


def _people(rt: Runtime, max_calls: int | None) -> tuple[set[str], int, dict[str, Any]]:
    """Slugs whose permissions one run read in full, the calls it spent, and its counts."""
    with rt.sessions() as session:
        before = {r.slug: r.permissions_read_at for r in session.scalars(select(Repository))}
        client = rt.bitbucket()
        run = PeopleSync(client, session, session.commit, rt.settings, max_calls=max_calls).run(
            "acme"
        )
        assert run.status == "succeeded", run.error
        after = {r.slug: r.permissions_read_at for r in session.scalars(select(Repository))}
        counts = dict(run.counts or {})
    read = {slug for slug, at in after.items() if at != before.get(slug)}
    return read, client.ledger.total, counts


def _oldest_first(rt: Runtime, n: int) -> set[str]:
    with rt.sessions() as session:
        rows = session.scalars(
            select(Repository.slug)
            .order_by(Repository.permissions_read_at.asc().nulls_first(), Repository.full_name)
            .limit(n)
        )
        return set(rows)


def _sweep_order(rt: Runtime) -> list[str]:
    with rt.sessions() as session:
        return list(
            session.scalars(
                select(Repository.slug).order_by(
                    Repository.permissions_read_at.asc().nulls_first(), Repository.full_name
                )
            )
        )


def _live_permissions(rt: Runtime, account: str) -> dict[str, str]:
    """`{slug: permission}` of `account`'s live permissions."""
    with rt.sessions() as session:
        return {
            slug: permission
            for slug, permission in session.execute(
                select(Repository.slug, RepositoryPermission.permission)
                .join(Repository, RepositoryPermission.repository_id == Repository.id)
                .where(
                    RepositoryPermission.principal == account,
                    RepositoryPermission.removed_at.is_(None),
                )
            )
        }


def test_the_walk_resumes_where_it_stopped_and_covers_every_repository(
    sim_factory: Callable[..., SimProcess], runtime_for: Callable[..., Runtime], migrated_url: str
) -> None:
    sim = sim_factory(repos=130, seed=8, access_token="sim-token")
    rt = runtime_for(sim, DATABASE_URL=migrated_url)  # 1,000 an hour: 30 for people
    _listing(rt)
    sim.reset_stats()

    # No share left: members and groups are read all the same, the walk waits.
    read, overhead, counts = _people(rt, max_calls=0)
    assert read == set() and counts["members"] > 0 and counts["groups"] > 0
    assert counts["permission_calls"] == 0 and counts["permissions_deferred"] == 130
    assert sim.stats()["calls"].get("permissions", 0) == 0

    # One query a run: each run reads the next batch, never read ones first.
    swept: set[str] = set()
    left = 130
    while left:
        expected = _oldest_first(rt, BATCH_REPOSITORIES)
        read, spent, counts = _people(rt, max_calls=overhead + 1)
        assert spent <= overhead + 1
        assert read == expected and len(read) == BATCH_REPOSITORIES
        # Never read ones first: the walk goes on instead of back.
        assert len(read - swept) == min(left, BATCH_REPOSITORIES)
        assert counts["permission_calls"] == 1
        assert counts["permissions_deferred"] == 130 - len(read)  # not read by this run
        left -= len(read - swept)
        swept |= read
    assert len(swept) == 130
    with rt.sessions() as session:
        coverage = people_coverage(session, "acme", rt.settings)
        stored = session.scalar(
            select(func.count()).where(RepositoryPermission.removed_at.is_(None))
        )
    assert coverage.repositories == 130 and coverage.never_read == 0
    # A batch a call, after what members and groups cost of the 30 an hour.
    assert coverage.oldest is not None
    assert coverage.sweep_hours == pytest.approx(130 / BATCH_REPOSITORIES / (30 - overhead))
    every = sum(len(r["user_permissions"]) for r in sim.repositories())
    assert stored == every

    # The sweep starts over with the repositories read longest ago.
    first = _oldest_first(rt, BATCH_REPOSITORIES)
    read, _, _ = _people(rt, max_calls=overhead + 1)
    assert read == first
    assert sim.stats()["calls"]["permissions"] == -(-130 // BATCH_REPOSITORIES) + 1


def test_no_revocation_in_repositories_the_walk_did_not_reach(
    sim_factory: Callable[..., SimProcess], runtime_for: Callable[..., Runtime], migrated_url: str
) -> None:
    sim = sim_factory(repos=150, seed=8, access_token="sim-token")
    rt = runtime_for(sim, DATABASE_URL=migrated_url, BITBUCKET_RATE_LIMIT_PER_HOUR="100000")
    _listing(rt)
    read, _, counts = _people(rt, max_calls=None)  # `bbsync sync --members`: a full walk
    assert len(read) == 150 and counts["permissions_deferred"] == 0
    _, overhead, _ = _people(rt, max_calls=0)

    # Bitbucket takes one permission away in the first, second and last batch of the sweep.
    order = _sweep_order(rt)
    taken: dict[str, str] = {}
    for slug in (order[3], order[BATCH_REPOSITORIES + 5], order[-1]):
        account = next(iter(sim.admin("GET", f"repos/{slug}").json()["user_permissions"]))
        assert sim.admin("DELETE", f"repos/{slug}/permissions/users/{account}").ok
        taken[slug] = account

    walked: set[str] = set()
    for run in range(-(-150 // BATCH_REPOSITORIES)):
        read, spent, counts = _people(rt, max_calls=overhead + 1)
        assert spent <= overhead + 1
        fresh = read - walked
        assert len(fresh) == min(BATCH_REPOSITORIES, 150 - len(walked))
        walked |= read
        for slug, account in taken.items():
            # Revoked exactly where the walk has read since: nowhere else.
            assert (slug in _live_permissions(rt, account)) == (slug not in walked), (run, slug)
        assert counts["revoked_permissions"] == len(fresh & set(taken))
    assert len(walked) == 150
    with rt.sessions() as session:
        audited = session.scalars(
            select(AccessAudit.subject).where(AccessAudit.action == "permission_revoked")
        ).all()
    assert sorted(audited) == sorted(taken.values())


def test_a_member_who_leaves_loses_every_permission_at_once(
    sim_factory: Callable[..., SimProcess], runtime_for: Callable[..., Runtime], sqlite_url: str
) -> None:
    migrate(sqlite_url)
    sim = sim_factory(repos=150, seed=8, access_token="sim-token")
    rt = runtime_for(sim, DATABASE_URL=sqlite_url, BITBUCKET_RATE_LIMIT_PER_HOUR="100000")
    _listing(rt)
    _people(rt, max_calls=None)
    _, overhead, _ = _people(rt, max_calls=0)
    with rt.sessions() as session:
        leaver = session.execute(
            select(RepositoryPermission.principal, func.count())
            .where(RepositoryPermission.principal_type == "user")
            .group_by(RepositoryPermission.principal)
            .order_by(func.count().desc())
        ).first()
    assert leaver is not None and leaver[1] >= 10
    granted = _live_permissions(rt, leaver[0])
    assert sim.admin("DELETE", f"members/{leaver[0]}").ok
    # One batch of the walk only: the membership listing says enough.
    read, _, counts = _people(rt, max_calls=overhead + 1)
    assert len(read) == BATCH_REPOSITORIES and set(granted) - read
    assert counts["removed_members"] == 1 and counts["revoked_permissions"] == len(granted)
    assert _live_permissions(rt, leaver[0]) == {}


def test_the_share_follows_the_settings_and_past_runs_in_the_window(
    sim_factory: Callable[..., SimProcess], runtime_for: Callable[..., Runtime], sqlite_url: str
) -> None:
    migrate(sqlite_url)
    sim = sim_factory(repos=10, seed=3, access_token="sim-token")
    rt = runtime_for(sim, DATABASE_URL=sqlite_url, BBSYNC_PEOPLE_SHARE="0.02")
    settings = rt.settings
    assert settings.people_share == 0.02 and settings.members_interval_seconds == 3600
    with rt.sessions() as session:
        assert people_calls_left(session, "acme", settings) == 20  # 2 % of 1,000, one run/h
        session.add(SyncRun(kind="members", workspace="acme", api_calls=15))
        session.add(
            SyncRun(
                kind="members",
                workspace="acme",
                api_calls=50,
                started_at=utcnow() - timedelta(hours=2),  # an earlier window
            )
        )
        session.commit()
        assert people_calls_left(session, "acme", settings) == 5
        assert people_calls_left(session, "other", settings) == 20


def _runs(database_url: str) -> list[SyncRun]:
    engine = make_engine(database_url)
    try:
        with make_session_factory(engine)() as session:
            return list(
                session.scalars(
                    select(SyncRun).where(SyncRun.kind == "members").order_by(SyncRun.id)
                )
            )
    finally:
        engine.dispose()


def _wait_for_runs(database_url: str, count: int, timeout: float = 60) -> list[SyncRun]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        runs = [r for r in _runs(database_url) if r.status != "running"]
        if len(runs) >= count:
            return runs
        time.sleep(0.3)
    raise AssertionError(f"{count} people syncs did not finish within {timeout}s")


def test_a_real_worker_keeps_the_people_sync_within_its_share(
    sim_factory: Callable[..., SimProcess],
    runtime_for: Callable[..., Runtime],
    postgres_url: str,
    redis_url: str,
    start_worker: WorkerFactory,  # noqa: F811
) -> None:
    migrate(postgres_url)
    sim = sim_factory(repos=300, seed=4, access_token="sim-token")
    window = {
        "BITBUCKET_RATE_LIMIT_PER_HOUR": "1000",
        "BITBUCKET_RATE_WINDOW_SECONDS": "12",
        "BITBUCKET_LEARN_RATE_LIMIT": "false",
        "BBSYNC_MEMBERS_INTERVAL": "12",
        "BBSYNC_PEOPLE_SHARE": "0.006",  # 6 calls a window
    }
    rt = runtime_for(sim, DATABASE_URL=postgres_url, **window)
    _listing(rt)
    sim.reset_stats()
    start_worker(worker_env(sim, postgres_url, redis_url, **window))
    send = producer(redis_url)

    enqueue(send, SYNC_MEMBERS, "acme")
    (first,) = _wait_for_runs(postgres_url, 1)
    enqueue(send, SYNC_MEMBERS, "acme")  # a second run in the same window: nothing left
    second = _wait_for_runs(postgres_url, 2)[1]
    assert first.status == second.status == "succeeded"
    assert first.api_calls <= 6 and first.counts["permission_calls"] > 0
    assert first.counts["permission_repositories"] + first.counts["permissions_deferred"] == 300
    assert second.counts["permission_calls"] == 0 and second.counts["members"] > 0
    assert second.counts["permissions_deferred"] == 300
    assert sim.stats()["calls"]["permissions"] == first.counts["permission_calls"]

    def never_read() -> int:
        with rt.sessions() as session:
            return people_coverage(session, "acme", rt.settings).never_read

    # Later windows go on where the first stopped until every repository was read.
    runs = [first, second]
    assert never_read() == 300 - first.counts["permission_repositories"]
    while never_read() and len(runs) < 12:
        time.sleep(12.5)  # the next window
        enqueue(send, SYNC_MEMBERS, "acme")
        runs = _wait_for_runs(postgres_url, len(runs) + 1)
        assert runs[-1].api_calls <= 6 and runs[-1].counts["permission_calls"] > 0
    assert never_read() == 0
    read = [r.counts["permission_repositories"] for r in runs]
    assert sum(read[:-1]) < 300 <= sum(read)  # the last run goes on with the oldest read


def test_the_shares_are_validated_like_the_others() -> None:
    assert settings_from_env({}).people_share == 0.03
    assert settings_from_env({}).activity_sweep_share == 0.05
    for name in ("BBSYNC_PEOPLE_SHARE", "BBSYNC_ACTIVITY_SWEEP_SHARE"):
        for bad in ("0", "1.5", "a third"):
            with pytest.raises(SettingsError, match=name):
                settings_from_env({name: bad})


def test_status_the_budget_api_and_the_status_page_show_the_sweeps(
    sim_factory: Callable[..., SimProcess],
    runtime_for: Callable[..., Runtime],
    sqlite_url: str,
    redis_url: str,
    tmp_path: Path,
) -> None:
    migrate(sqlite_url)
    sim = sim_factory(repos=130, seed=8, access_token="sim-token")
    rt = runtime_for(sim, DATABASE_URL=sqlite_url)
    _listing(rt)
    _, overhead, _ = _people(rt, max_calls=0)
    _people(rt, max_calls=overhead + 1)  # one batch read: the rest not yet

    env = {
        **os.environ,
        "DATABASE_URL": sqlite_url,
        "REDIS_URL": redis_url,
        "BITBUCKET_API_URL": sim.api_url,
        "BITBUCKET_WORKSPACES": "acme",
        "BITBUCKET_ACCESS_TOKEN": "sim-token",
    }
    result = subprocess.run(
        [sys.executable, "-m", "app.cli", "status"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    people = next(line for line in result.stdout.splitlines() if "people:" in line)
    assert "oldest permissions read 0.0 h ago" in people
    assert f"{130 - BATCH_REPOSITORIES} repositories not yet" in people
    assert "a full sweep takes" in people
    assert any("activity: never reconciled" in line for line in result.stdout.splitlines())

    app = create_app(runtime=rt)
    sweeps = api_client(app).get("/api/budget").json["sweeps"]["acme"]
    assert sweeps["people"]["never"] == 130 - BATCH_REPOSITORIES
    assert sweeps["people"]["repositories"] == 130 and sweeps["people"]["share"] == 0.03
    assert sweeps["people"]["oldest"] is not None and sweeps["people"]["sweep_hours"] > 0
    assert sweeps["activity"]["never"] == 130 and sweeps["activity"]["oldest"] is None
    page = app.test_client().get("/").get_data(as_text=True)
    assert 'id="sweep-acme-people"' in page and 'id="sweep-acme-activity"' in page
    assert f"{130 - BATCH_REPOSITORIES} of 130 not yet" in page
