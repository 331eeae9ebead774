"""A real Celery worker process runs tasks end to end: enqueued by name as the web side does,
through the Redis broker, against the simulator and PostgreSQL; no eager mode."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis
from sqlalchemy import select

from app.db import make_engine, make_session_factory
from app.models import CatalogEntity, Repository, SyncRun
from app.ops.telemetry import task_figures
from app.task_names import SYNC_ALL_WORKSPACES, enqueue, producer
from bench.processes import celery_worker
from bitbucket_sim.testing import SimProcess
from tests.conftest import ROOT, migrate
from tests.fault_support import wait_until

WorkerFactory = Callable[[dict[str, str]], subprocess.Popen[str]]


@pytest.fixture
def start_worker(tmp_path: Path) -> Iterator[WorkerFactory]:
    workers: list[subprocess.Popen[str]] = []

    def start(env: dict[str, str]) -> subprocess.Popen[str]:
        log = open(tmp_path / f"worker-{len(workers)}.log", "w")  # noqa: SIM115
        process = subprocess.Popen(
            celery_worker(1, hostname=f"test{len(workers)}@%h"),
            cwd=ROOT,
            env={**os.environ, **env},
            stdout=log,
            stderr=subprocess.STDOUT,
            text=True,
            # Its own process group: a test can kill the worker with its pool, as a machine
            # or container dies.
            start_new_session=True,
        )
        workers.append(process)
        return process

    yield start
    for process in workers:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()


def wait_for_run(
    database_url: str, status: str, timeout: float = 90, kind: str = "repositories"
) -> SyncRun:
    engine = make_engine(database_url)
    sessions = make_session_factory(engine)

    def reached() -> SyncRun | None:
        with sessions() as session:
            return session.scalars(
                select(SyncRun).where(SyncRun.status == status, SyncRun.kind == kind)
            ).first()

    try:
        return wait_until(reached, timeout, f"a {kind} sync run {status}", interval=0.3)
    finally:
        engine.dispose()


def count_repositories(database_url: str) -> int:
    engine = make_engine(database_url)
    try:
        with make_session_factory(engine)() as session:
            return len(session.scalars(select(Repository.id)).all())
    finally:
        engine.dispose()


def worker_env(sim: SimProcess, database_url: str, redis_url: str, **extra: str) -> dict[str, str]:
    return {
        "DATABASE_URL": database_url,
        "REDIS_URL": redis_url,
        "CELERY_BROKER_URL": redis_url,
        "BITBUCKET_API_URL": sim.api_url,
        "BITBUCKET_WORKSPACES": "acme",
        "BITBUCKET_ACCESS_TOKEN": "sim-token",
        "LOG_FORMAT": "json",
        **extra,
    }


def test_beat_task_enqueued_by_name_syncs_through_a_real_worker(
    sim_factory: Callable[..., SimProcess],
    migrated_postgres_url: str,
    redis_url: str,
    start_worker: WorkerFactory,
) -> None:
    sim = sim_factory(repos=120, access_token="sim-token")
    start_worker(worker_env(sim, migrated_postgres_url, redis_url))
    enqueue(producer(redis_url), SYNC_ALL_WORKSPACES)
    listing = wait_for_run(migrated_postgres_url, "succeeded")
    assert listing.workspace == "acme"
    assert listing.counts["seen"] == 120
    assert listing.api_calls == 2
    catalog = wait_for_run(migrated_postgres_url, "succeeded", kind="catalog")
    assert catalog.counts["checked"] == 120
    assert listing.api_calls + catalog.api_calls == sim.stats()["calls_total"]
    assert count_repositories(migrated_postgres_url) == 120
    # The worker's task signals counted the runs in Redis, for /metrics.
    client = redis.Redis.from_url(redis_url)
    # Recorded just after the task returns.
    wait_until(lambda: "bbsync.sync.workspace" in task_figures(client), 15, "task figures")
    figures = task_figures(client)
    assert figures["bbsync.sync.workspace"]["runs"] >= 1
    assert figures["bbsync.sync.all_workspaces"]["runs"] >= 1
    engine = make_engine(migrated_postgres_url)
    try:
        with make_session_factory(engine)() as session:
            components = session.scalars(
                select(CatalogEntity).where(CatalogEntity.kind == "Component")
            ).all()
        assert len(components) >= 60
    finally:
        engine.dispose()


def test_a_task_out_of_budget_retries_later_and_resumes(
    sim_factory: Callable[..., SimProcess],
    migrated_postgres_url: str,
    redis_url: str,
    start_worker: WorkerFactory,
) -> None:
    sim = sim_factory(repos=250, access_token="sim-token")
    env = worker_env(
        sim,
        migrated_postgres_url,
        redis_url,
        BITBUCKET_RATE_LIMIT_PER_HOUR="2",
        BITBUCKET_RATE_RESERVE_PERCENT="0",
        BITBUCKET_RATE_WINDOW_SECONDS="3",
        BITBUCKET_LEARN_RATE_LIMIT="false",
    )
    start_worker(env)
    enqueue(producer(redis_url), "bbsync.sync.repositories", "acme")
    paused = wait_for_run(migrated_postgres_url, "paused", timeout=60)
    assert paused.counts["seen"] == 200
    run = wait_for_run(migrated_postgres_url, "succeeded", timeout=60)
    assert run.id == paused.id
    assert run.counts["seen"] == 250
    assert count_repositories(migrated_postgres_url) == 250
    assert sim.stats()["calls_total"] == 3


def test_the_retention_task_prunes_the_change_log_through_a_real_worker(
    sim: SimProcess, sqlite_url: str, redis_url: str, start_worker: WorkerFactory
) -> None:
    from datetime import timedelta

    from sqlalchemy import update

    from app.catalog.changes import change_floor
    from app.catalog.entities import built
    from app.models import CatalogChange, EntitySource, utcnow
    from app.sync.entity_writer import EntityWriter
    from app.task_names import PRUNE_ACTIVITY

    migrate(sqlite_url)
    engine = make_engine(sqlite_url)
    sessions = make_session_factory(engine)
    try:
        with sessions() as session:
            writer = EntityWriter(session, "acme")
            for name in ("old", "older"):
                body = {"apiVersion": "backstage.io/v1alpha1", "kind": "Component"}
                writer.write(built({**body, "metadata": {"name": name}}), EntitySource.GENERATED)
            session.commit()
            session.execute(update(CatalogChange).values(changed_at=utcnow() - timedelta(days=8)))
            session.commit()
        start_worker(worker_env(sim, sqlite_url, redis_url))
        enqueue(producer(redis_url), PRUNE_ACTIVITY)

        def floor_moved() -> int:
            with sessions() as session:
                return change_floor(session)

        wait_until(floor_moved, 90, "the change floor moved", interval=0.3)
        with sessions() as session:
            assert change_floor(session) == 2  # the newest old change is the floor now
            assert session.scalars(select(CatalogChange.entity_id)).all() == [None]
    finally:
        engine.dispose()
