"""The Data Center source through a real Celery worker: beat's entry point syncs it when it is
the only source, and a 429 makes the task retry later and resume where it stopped."""

from __future__ import annotations

import time
from collections.abc import Callable

from sqlalchemy import func, select

from app.db import make_engine, make_session_factory
from app.models import CatalogEntity, SyncRun
from app.task_names import SYNC_ALL_MEMBERS, SYNC_ALL_WORKSPACES, enqueue, producer
from bitbucket_sim.testing import SimProcess
from tests.conftest import migrate
from tests.test_worker import WorkerFactory, start_worker  # noqa: F401 - the fixture

SimFactory = Callable[..., SimProcess]


def dc_worker_env(
    sim: SimProcess, database_url: str, redis_url: str, **extra: str
) -> dict[str, str]:
    return {
        "DATABASE_URL": database_url,
        "REDIS_URL": redis_url,
        "CELERY_BROKER_URL": redis_url,
        "BITBUCKET_WORKSPACES": "",
        "BITBUCKET_ACCESS_TOKEN": "",
        "BITBUCKET_DC_URL": sim.url,
        "BITBUCKET_DC_TOKEN": "dc-token",
        "LOG_FORMAT": "json",
        **extra,
    }


def wait_for_catalogs(database_url: str, projects: int, timeout: float = 120) -> list[SyncRun]:
    """The succeeded catalog runs once every project has one."""
    engine = make_engine(database_url)
    sessions = make_session_factory(engine)
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            with sessions() as session:
                runs = session.scalars(
                    select(SyncRun).where(SyncRun.kind == "catalog", SyncRun.status == "succeeded")
                ).all()
                if len(runs) >= projects:
                    session.expunge_all()
                    return list(runs)
            time.sleep(0.3)
    finally:
        engine.dispose()
    raise AssertionError(f"not every project's catalog succeeded within {timeout}s")


def live_components(database_url: str) -> int:
    engine = make_engine(database_url)
    try:
        with make_session_factory(engine)() as session:
            return (
                session.scalar(
                    select(func.count())
                    .select_from(CatalogEntity)
                    .where(CatalogEntity.kind == "Component", CatalogEntity.deleted_at.is_(None))
                )
                or 0
            )
    finally:
        engine.dispose()


def test_beat_syncs_a_data_center_source_alone_through_a_real_worker(
    sim_factory: SimFactory,
    postgres_url: str,
    redis_url: str,
    start_worker: WorkerFactory,  # noqa: F811
) -> None:
    migrate(postgres_url)
    sim = sim_factory(flavor="datacenter", repos=40, seed=3, access_token="dc-token")
    projects = len({r["project_key"] for r in sim.repositories()})
    start_worker(dc_worker_env(sim, postgres_url, redis_url))
    enqueue(producer(redis_url), SYNC_ALL_WORKSPACES)
    runs = wait_for_catalogs(postgres_url, projects)
    host = sim.url.split("://", 1)[1]
    assert {r.workspace for r in runs} == {f"{host}/{r['project_key']}" for r in sim.repositories()}
    assert sum(r.counts["checked"] for r in runs) == 40
    assert live_components(postgres_url) >= 20


def test_a_429_makes_the_data_center_task_retry_and_resume(
    sim_factory: SimFactory,
    postgres_url: str,
    redis_url: str,
    start_worker: WorkerFactory,  # noqa: F811
) -> None:
    migrate(postgres_url)
    sim = sim_factory(
        flavor="datacenter", repos=30, seed=9, access_token="dc-token", rate_limit="20/s", burst=5
    )
    projects = len({r["project_key"] for r in sim.repositories()})
    start_worker(dc_worker_env(sim, postgres_url, redis_url))
    enqueue(producer(redis_url), "bbsync.sync.datacenter", "")
    runs = wait_for_catalogs(postgres_url, projects, timeout=240)
    stats = sim.stats()
    print(f"\nData Center worker 429 figure: {stats}")
    assert stats["rate_limited"] >= 1
    assert sum(r.counts["checked"] for r in runs) == 30
    # Resumed, not restarted: every head and every file asked for once.
    assert (stats["calls"]["refs"], stats["calls"]["raw"]) == (30, 30)


def test_a_lost_data_center_run_is_resumed_by_the_data_center_task() -> None:
    from workers.tasks.sync import _resume_task

    assert _resume_task("catalog", "bitbucket.example.com/PLAT") == "bbsync.sync.datacenter"
    assert _resume_task("repositories", "127.0.0.1:7990/PLAT") == "bbsync.sync.datacenter"
    assert _resume_task("catalog", "acme") == "bbsync.sync.workspace"
    assert _resume_task("members", "acme") == "bbsync.members.sync_workspace"


def test_the_hourly_members_sync_also_syncs_the_data_center_people(
    sim_factory: SimFactory,
    postgres_url: str,
    redis_url: str,
    start_worker: WorkerFactory,  # noqa: F811
) -> None:
    migrate(postgres_url)
    sim = sim_factory(flavor="datacenter", repos=10, seed=3, access_token="dc-token")
    projects = len({r["project_key"] for r in sim.repositories()})
    start_worker(dc_worker_env(sim, postgres_url, redis_url))
    app = producer(redis_url)
    enqueue(app, SYNC_ALL_WORKSPACES)
    wait_for_catalogs(postgres_url, projects)
    enqueue(app, SYNC_ALL_MEMBERS)
    host = sim.url.split("://", 1)[1]
    engine = make_engine(postgres_url)
    deadline = time.monotonic() + 120
    try:
        while time.monotonic() < deadline:
            with make_session_factory(engine)() as session:
                run = session.scalars(
                    select(SyncRun).where(SyncRun.kind == "members", SyncRun.workspace == host)
                ).first()
                if run is not None and run.status != "running":
                    break
            time.sleep(0.3)
        assert run is not None and run.status == "succeeded", run and run.error
        assert run.counts["members"] > 0 and run.counts["permissions"] > 0
        with make_session_factory(engine)() as session:
            users = session.scalar(
                select(func.count())
                .select_from(CatalogEntity)
                .where(CatalogEntity.kind == "User", CatalogEntity.deleted_at.is_(None))
            )
        assert users == run.counts["members"]
    finally:
        engine.dispose()
