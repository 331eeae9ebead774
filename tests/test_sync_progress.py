"""Progress under faults, through real worker processes, the Redis broker, PostgreSQL and the
simulator: a tight rate limit never livelocks a sync, a worker killed mid-sync is noticed and
its sync resumed, two syncs of one workspace never run at once, and a task that kills its
worker twice is parked instead of coming back forever."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from app.db import make_engine, make_session_factory
from app.models import ParkedTask, SyncRun
from app.runtime import Runtime
from app.sync.liveness import RunWatch
from app.sync.runs import lost_runs, resumable_run
from app.task_names import SYNC_WORKSPACE, enqueue, producer
from app.web import create_app
from bench.processes import celery_beat
from bitbucket_sim.testing import SimProcess
from tests.conftest import REDIS_TEST_URL as BBSYNC_TEST_REDIS
from tests.conftest import ROOT, make_settings, migrate, run_bbsync
from tests.fault_support import wait_until
from tests.test_worker import WorkerFactory, start_worker, worker_env

__all__ = ["start_worker"]  # the fixture, imported for this module's tests

SimFactory = Callable[..., SimProcess]
UNLIMITED = "1000000"


def runs(database_url: str, **where: Any) -> list[SyncRun]:
    engine = make_engine(database_url)
    try:
        with make_session_factory(engine)() as session:
            query = select(SyncRun).order_by(SyncRun.id)
            for name, value in where.items():
                query = query.where(getattr(SyncRun, name) == value)
            return list(session.scalars(query))
    finally:
        engine.dispose()


def pool_children(worker: subprocess.Popen[str]) -> list[int]:
    """The pids of a worker's pool processes (its direct children)."""
    children: list[int] = []
    task_dir = Path(f"/proc/{worker.pid}/task")
    for thread in task_dir.iterdir() if task_dir.exists() else []:
        text = (thread / "children").read_text().split()
        children.extend(int(pid) for pid in text)
    return children


@pytest.fixture
def start_beat(tmp_path: Path) -> Iterator[Callable[[dict[str, str]], subprocess.Popen[str]]]:
    started: list[subprocess.Popen[str]] = []

    def start(env: dict[str, str]) -> subprocess.Popen[str]:
        log = open(tmp_path / "beat.log", "w")  # noqa: SIM115
        process = subprocess.Popen(
            celery_beat(tmp_path / "beat-schedule"),
            cwd=ROOT,
            env={**os.environ, **env},
            stdout=log,
            stderr=subprocess.STDOUT,
            text=True,
        )
        started.append(process)
        return process

    yield start
    for process in started:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()


def test_a_tight_rate_limit_moves_the_catalog_forward_on_every_retry(
    sim_factory: SimFactory, migrated_postgres_url: str, redis_url: str, start_worker: WorkerFactory
) -> None:
    """Bitbucket allows 10 calls a second (429, Retry-After: 1) and the catalog needs about
    90: far fewer than a batch per window. Each retry resumes where the last stopped (no new
    listing, no new search) and commits what it read, so the sync completes."""
    sim = sim_factory(
        repos=80,
        seed=3,
        access_token="sim-token",
        rate_limit="10/s",
        raw_rate_limit="10/s",
        retry_after=1,
    )
    env = worker_env(sim, migrated_postgres_url, redis_url, BITBUCKET_RATE_LIMIT_PER_HOUR=UNLIMITED)
    start_worker(env)
    enqueue(producer(redis_url), SYNC_WORKSPACE, "acme")
    done = wait_until(
        lambda: runs(migrated_postgres_url, kind="catalog", status="succeeded"),
        300,
        "catalog synced",
    )
    catalog = done[0]
    attempts = catalog.counts["checked_per_attempt"]
    assert catalog.counts["checked"] == catalog.counts["candidates"] == 80
    assert len(attempts) >= 3, attempts  # the window really cut it short, several times
    assert all(read > 0 for read in attempts), attempts  # every retry committed something
    assert sum(attempts) == 80
    # One run, resumed: one search and one listing, not one per retry.
    assert len(runs(migrated_postgres_url, kind="catalog")) == 1
    stats = sim.stats()
    assert stats["rate_limited"] >= len(attempts) - 1
    listing = runs(migrated_postgres_url, kind="repositories")
    assert [r.status for r in listing] == ["succeeded"]
    assert stats["calls"].get("search", 0) <= 2


def liveness_env(sim: SimProcess, database_url: str, redis_url: str) -> dict[str, str]:
    return worker_env(
        sim,
        database_url,
        redis_url,
        BITBUCKET_RATE_LIMIT_PER_HOUR=UNLIMITED,
        BBSYNC_RUN_HEARTBEAT_SECONDS="1",
        BBSYNC_RUN_STALE_SECONDS="4",
    )


def running_with_calls(database_url: str, kind: str = "catalog") -> SyncRun | None:
    for run in runs(database_url, kind=kind, status="running"):
        if run.api_calls > 0:
            return run
    return None


def test_a_sync_whose_worker_is_killed_resumes_within_minutes_with_its_calls_counted(
    sim_factory: SimFactory,
    migrated_postgres_url: str,
    redis_url: str,
    start_worker: WorkerFactory,
    start_beat: Callable[[dict[str, str]], subprocess.Popen[str]],
) -> None:
    sim = sim_factory(repos=1500, seed=4, access_token="sim-token")
    env = liveness_env(sim, migrated_postgres_url, redis_url)
    worker = start_worker(env)
    enqueue(producer(redis_url), SYNC_WORKSPACE, "acme")
    # The heartbeat flushes the calls onto the row while the sync runs.
    seen = wait_until(
        lambda: running_with_calls(migrated_postgres_url), 120, "catalog calls flushed"
    )
    os.killpg(worker.pid, signal.SIGKILL)  # the worker and its pool, as a machine dies
    worker.wait(timeout=10)
    killed_at = time.monotonic()
    start_worker(env)
    start_beat(env)
    done = wait_until(
        lambda: runs(migrated_postgres_url, kind="catalog", status="succeeded"), 180, "sync resumed"
    )
    resumed_after = time.monotonic() - killed_at
    lost = runs(migrated_postgres_url, id=seen.id)[0]
    assert lost.status == "failed"
    assert lost.error and lost.error.startswith("worker lost")
    assert lost.api_calls >= seen.api_calls > 0
    finished = done[0]
    # The continuation read only what the lost run had not: together, every repository once.
    assert finished.counts["lost"] == 1
    assert finished.counts["checked"] == 1500
    assert finished.started_at == lost.started_at
    listing = runs(migrated_postgres_url, kind="repositories")
    spent = sum(r.api_calls for r in [*listing, lost, finished])
    # Calls made between the last heartbeat and the kill are the only ones not on a row.
    assert spent <= sim.stats()["calls_total"]
    assert finished.api_calls < spent
    print(f"\nsync resumed and finished {resumed_after:.1f}s after the kill")


def test_two_syncs_of_one_workspace_at_once_run_one_and_skip_the_other(
    sim_factory: SimFactory, migrated_postgres_url: str, redis_url: str, start_worker: WorkerFactory
) -> None:
    sim = sim_factory(repos=1500, seed=4, access_token="sim-token")
    env = liveness_env(sim, migrated_postgres_url, redis_url)
    start_worker(env)
    start_worker(env)
    app = producer(redis_url)
    # Beat's sync and an operator's `bbsync sync --queue`, at the same moment.
    enqueue(app, SYNC_WORKSPACE, "acme")
    enqueue(app, SYNC_WORKSPACE, "acme")
    wait_until(
        lambda: runs(migrated_postgres_url, kind="catalog", status="succeeded"), 180, "synced"
    )
    skipped = wait_until(lambda: runs(migrated_postgres_url, status="skipped"), 60, "a skipped run")
    assert len(skipped) == 1
    assert skipped[0].error and "skipped: another" in skipped[0].error
    assert "acme is running" in skipped[0].error
    assert len(runs(migrated_postgres_url, kind="catalog", status="succeeded")) == 1
    # Nothing was read twice: the calls on the rows are every call Bitbucket saw.
    assert sum(r.api_calls for r in runs(migrated_postgres_url)) == sim.stats()["calls_total"]


def test_a_task_that_kills_its_worker_twice_is_parked_and_shown(
    sim_factory: SimFactory, migrated_postgres_url: str, redis_url: str, start_worker: WorkerFactory
) -> None:
    """The OOM killer takes the pool process mid-sync, twice: the broker hands the same
    task back each time (acks_late, reject_on_worker_lost). The third delivery parks it."""
    sim = sim_factory(repos=1500, seed=4, access_token="sim-token")
    env = liveness_env(sim, migrated_postgres_url, redis_url)
    worker = start_worker(env)
    task_id = enqueue(producer(redis_url), SYNC_WORKSPACE, "acme")
    killed: list[int] = []
    for death in (1, 2):
        run = wait_until(
            lambda: [
                r
                for r in runs(migrated_postgres_url, task_id=task_id, status="running")
                if r.api_calls > 0 and r.id not in killed
            ],
            120,
            f"delivery {death} running",
        )[0]
        children = pool_children(worker)
        assert len(children) == 1
        os.kill(children[0], signal.SIGKILL)
        killed.append(run.id)
    parked = wait_until(lambda: parked_tasks(migrated_postgres_url), 120, "task parked")
    assert [(p.task_id, p.task_name, p.args) for p in parked] == [
        (task_id, SYNC_WORKSPACE, ["acme"])
    ]
    assert "died with their worker" in parked[0].reason
    # The first death was marked lost and continued by the redelivery; the second parked.
    first, second = (runs(migrated_postgres_url, id=run_id)[0] for run_id in killed)
    assert first.status == "failed" and first.error and first.error.startswith("worker lost")
    assert second.status == "parked" and second.error == parked[0].reason
    assert not runs(migrated_postgres_url, status="running")
    assert not runs(migrated_postgres_url, kind="catalog", status="succeeded")
    assert worker.poll() is None  # the worker itself lives on
    settings = {
        "DATABASE_URL": migrated_postgres_url,
        "REDIS_URL": redis_url,
        "BITBUCKET_WORKSPACES": "acme",
    }
    status = run_bbsync("status", env=settings, cwd=ROOT)
    assert "PARKED tasks" in status.stdout and SYNC_WORKSPACE in status.stdout
    rt = Runtime(make_settings(**settings, BITBUCKET_WEBHOOK_SECRET="test-secret"))
    metrics = create_app(runtime=rt).test_client().get("/metrics").get_data(as_text=True)
    assert f'bbsync_parked_tasks{{task="{SYNC_WORKSPACE}"}} 1.0' in metrics
    rt.engine.dispose()


def parked_tasks(database_url: str) -> list[ParkedTask]:
    engine = make_engine(database_url)
    try:
        with make_session_factory(engine)() as session:
            return list(session.scalars(select(ParkedTask)))
    finally:
        engine.dispose()


def test_bbsync_sync_says_it_was_skipped_while_another_sync_holds_the_workspace(
    sim: SimProcess, sqlite_url: str, redis_client: Any
) -> None:
    migrate(sqlite_url)
    env = {
        "DATABASE_URL": sqlite_url,
        "REDIS_URL": BBSYNC_TEST_REDIS,
        "BITBUCKET_API_URL": sim.api_url,
        "BITBUCKET_WORKSPACES": "acme",
        "BITBUCKET_ACCESS_TOKEN": "sim-token",
    }
    rt = Runtime(make_settings(**env))
    # A worker's sync of acme holds the repositories lock (taken as its task does).
    holder = RunWatch(rt.engine, redis_client, task_id="beat-task", interval=1, lock_seconds=30)
    assert holder.hold("repositories", "acme") is None
    try:
        result = run_bbsync("sync", env=env, cwd=ROOT)
    finally:
        holder.close()
        rt.engine.dispose()
    assert "skipped: another repositories sync of acme is running (beat-task@" in result.stderr
    assert sim.stats()["calls_total"] == 0
    skipped = runs(sqlite_url, status="skipped")
    assert [(r.kind, r.workspace) for r in skipped] == [("repositories", "acme")]
    # Once the lock is free, the next sync runs.
    assert run_bbsync("sync", env=env, cwd=ROOT).returncode == 0
    assert runs(sqlite_url, kind="catalog", status="succeeded")


def test_beat_marks_silent_runs_lost_and_parks_a_chain_lost_twice(migrated_url: str) -> None:
    engine = make_engine(migrated_url)
    old = datetime.now(UTC) - timedelta(minutes=5)
    try:
        with make_session_factory(engine)() as session:
            for workspace, lost_before in (("once", 0), ("twice", 1)):
                session.add(
                    SyncRun(
                        kind="catalog",
                        workspace=workspace,
                        status="running",
                        started_at=old,
                        heartbeat_at=old,
                        api_calls=42,
                        counts={"checked": 7, "lost": lost_before} if lost_before else {},
                        cursor={"found": None},
                    )
                )
            session.add(
                SyncRun(
                    kind="catalog",
                    workspace="alive",
                    status="running",
                    started_at=old,
                    heartbeat_at=datetime.now(UTC),
                )
            )
            session.commit()
            resume = lost_runs(session, stale_seconds=90)
            session.commit()
            assert [r.workspace for r in resume] == ["once"]
            states = {r.workspace: r for r in session.scalars(select(SyncRun))}
            assert states["once"].status == "failed"
            assert states["once"].error == (
                f"worker lost: no heartbeat since {old.isoformat(timespec='seconds')}; "
                "42 calls spent"
            )
            assert states["twice"].status == "parked"
            assert states["twice"].error and "lost 2 times" in states["twice"].error
            assert states["alive"].status == "running"
            # The lost run is continued from its cursor, counts and start; the parked is not.
            continued = resumable_run(session, "catalog", "once")
            assert continued is not None and continued.id is None
            assert continued.cursor == {"found": None} and continued.counts == {"lost": 1}
            assert continued.started_at == states["once"].started_at
            assert resumable_run(session, "catalog", "twice") is None
    finally:
        engine.dispose()
