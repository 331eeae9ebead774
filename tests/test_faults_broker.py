"""Broker faults through real processes: a Celery worker whose broker (a private Redis, or a
private vhost on RabbitMQ) is really stopped and started, deliveries held back by the outage,
and the requeue racing a worker. Figures are printed (`pytest -s`), never asserted."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any, Protocol

import pytest
import redis
from sqlalchemy import select

from app.config import settings_from_env
from app.models import DeliveryStatus, WebhookDelivery, utcnow
from app.ops.telemetry import task_figures
from app.runtime import Runtime
from app.task_names import (
    PROCESS_DELIVERY,
    PRUNE_ACTIVITY,
    REQUEUE_DELIVERIES,
    enqueue,
    enqueue_safely,
    producer,
)
from bitbucket_sim.testing import SimProcess
from tests.fault_support import PrivateRabbit, PrivateRedis, wait_until
from tests.test_worker import WorkerFactory, start_worker  # noqa: F401  (fixture)
from tests.webhook_support import pullrequest_body


class Broker(Protocol):
    def url(self) -> str: ...
    def stop(self) -> None: ...
    def start(self) -> None: ...


class RedisBroker:
    def __init__(self, server: PrivateRedis) -> None:
        self.server = server

    def url(self) -> str:
        return self.server.url(0)

    def stop(self) -> None:
        self.server.stop()

    def start(self) -> None:
        self.server.start()


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[PrivateRedis]:
    server = PrivateRedis(tmp_path)
    server.start()
    yield server
    server.stop()


@pytest.fixture
def rabbit() -> Iterator[PrivateRabbit]:
    why_not = PrivateRabbit.ensure_running()
    if why_not:
        pytest.skip(why_not)
    broker = PrivateRabbit()
    broker.create()
    yield broker
    if not broker.answers():
        broker.start()
    broker.delete()


@pytest.fixture(params=["redis", "rabbitmq"])
def broker(request: pytest.FixtureRequest) -> Broker:
    if request.param == "redis":
        return RedisBroker(request.getfixturevalue("private_redis"))
    rabbit_broker: PrivateRabbit = request.getfixturevalue("rabbit")
    return rabbit_broker


def env_for(database_url: str, redis_url: str, broker_url: str, **extra: str) -> dict[str, str]:
    return {
        "DATABASE_URL": database_url,
        "REDIS_URL": redis_url,
        "CELERY_BROKER_URL": broker_url,
        "BITBUCKET_WORKSPACES": "acme",
        "BITBUCKET_ACCESS_TOKEN": "sim-token",
        "LOG_FORMAT": "json",
        **extra,
    }


def send(broker_url: str, task: str, countdown: float | None = None) -> None:
    """Send with kombu's publish retry: a pooled connection the restart broke is replaced
    (the web process instead leaves such a delivery to the requeue)."""
    producer(broker_url).send_task(task, countdown=countdown, retry=True)


def runs(redis_url: str, task: str) -> int:
    client = redis.Redis.from_url(redis_url)
    try:
        return int(task_figures(client).get(task, {}).get("runs", 0))
    finally:
        client.close()


def worker_log(tmp_path: Path) -> str:
    return "\n".join(p.read_text() for p in sorted(tmp_path.glob("worker-*.log")))


def store_deliveries(
    rt: Runtime, sim: SimProcess, count: int, status: DeliveryStatus, age: timedelta
) -> list[int]:
    """`count` pull request deliveries as the web process stores them, `age` ago."""
    repos = sim.repositories()
    at = utcnow() - age
    rows = []
    for i in range(count):
        repo = repos[i % len(repos)]
        body = pullrequest_body(
            1000 + i,
            "OPEN",
            "2026-11-01T10:00:00.000001+00:00",
            slug=repo["slug"],
            uuid_=repo["uuid"],
            api_url=sim.api_url,
        )
        rows.append(
            WebhookDelivery(
                request_uuid=str(uuid.uuid4()),
                event_key="pullrequest:created",
                body=body,
                repository_uuid=repo["uuid"],
                repository_full_name=f"acme/{repo['slug']}",
                status=status.value,
                received_at=at,
                enqueued_at=at if status is DeliveryStatus.QUEUED else None,
            )
        )
    with rt.sessions.begin() as session:
        session.add_all(rows)
    return [r.id for r in rows]


def statuses(rt: Runtime, ids: list[int]) -> dict[int, WebhookDelivery]:
    with rt.sessions() as session:
        rows = session.scalars(select(WebhookDelivery).where(WebhookDelivery.id.in_(ids)))
        return {r.id: r for r in rows}


def test_a_worker_holding_a_countdown_task_survives_a_broker_restart(
    broker: Broker,
    migrated_postgres_url: str,
    redis_url: str,
    start_worker: WorkerFactory,  # noqa: F811
    tmp_path: Path,
) -> None:
    worker = start_worker(env_for(migrated_postgres_url, redis_url, broker.url()))
    # The worker's connect hook sends a requeue: the first run says it is consuming.
    wait_until(lambda: runs(redis_url, REQUEUE_DELIVERIES) >= 1, 90, "worker ready")
    # A countdown task under acks_late: the worker holds it unacknowledged.
    send(broker.url(), PRUNE_ACTIVITY, countdown=3600)
    wait_until(lambda: "bbsync.activity.prune" in worker_log(tmp_path), 30, "task received")

    broker.stop()
    wait_until(
        lambda: "Connection to broker lost" in worker_log(tmp_path) or worker.poll() is not None,
        60,
        "worker noticing the outage",
    )
    broker.start()
    back = time.monotonic()
    wait_until(
        lambda: runs(redis_url, REQUEUE_DELIVERIES) >= 2 or worker.poll() is not None,
        120,
        "worker reconnected",
    )
    resumed = time.monotonic() - back
    assert worker.poll() is None, worker_log(tmp_path)[-3000:]
    assert "Unrecoverable error" not in worker_log(tmp_path)

    send(broker.url(), PRUNE_ACTIVITY)
    wait_until(lambda: runs(redis_url, PRUNE_ACTIVITY) >= 1, 60, "a task after the restart")
    assert worker.poll() is None
    print(f"\n{type(broker).__name__}: worker consuming again {resumed:.1f}s after restart")


def test_deliveries_held_back_by_a_broker_outage_go_as_soon_as_it_returns(
    broker: Broker,
    sim_factory: Callable[..., SimProcess],
    migrated_postgres_url: str,
    redis_url: str,
    start_worker: WorkerFactory,  # noqa: F811
    tmp_path: Path,
) -> None:
    sim = sim_factory(repos=6, access_token="sim-token")
    env = env_for(migrated_postgres_url, redis_url, broker.url(), BITBUCKET_API_URL=sim.api_url)
    rt = Runtime(settings_from_env(env))
    worker = start_worker(env)
    wait_until(lambda: runs(redis_url, REQUEUE_DELIVERIES) >= 1, 90, "worker ready")

    broker.stop()
    wait_until(lambda: "Connection to broker lost" in worker_log(tmp_path), 60, "outage seen")
    # Sent before the outage and lost with it (a broker without persistence), and stored
    # during the outage with the broker refusing them: none is older than beat's thresholds.
    queued = store_deliveries(rt, sim, 5, DeliveryStatus.QUEUED, timedelta(seconds=30))
    pending = store_deliveries(rt, sim, 5, DeliveryStatus.PENDING, timedelta(seconds=1))
    broker.start()
    back = time.monotonic()

    def all_processed() -> bool:
        rows = statuses(rt, queued + pending).values()
        return all(r.status == DeliveryStatus.PROCESSED.value for r in rows)

    # No beat runs here: only the worker's reconnect hook can send them.
    wait_until(all_processed, 120, "held-back deliveries processed")
    print(
        f"\n{type(broker).__name__}: 10 held-back deliveries processed "
        f"{time.monotonic() - back:.1f}s after the broker returned; lost: 0"
    )
    assert worker.poll() is None
    rt.engine.dispose()


def test_requeue_never_puts_a_processed_delivery_back(
    sim_factory: Callable[..., SimProcess],
    migrated_url: str,
    redis_url: str,
    start_worker: WorkerFactory,  # noqa: F811
) -> None:
    sim = sim_factory(repos=6, access_token="sim-token", rate_limit="100000/h")
    env = env_for(
        migrated_url,
        redis_url,
        redis_url,
        BITBUCKET_API_URL=sim.api_url,
        BITBUCKET_RATE_LIMIT_PER_HOUR="100000",
    )
    rt = Runtime(settings_from_env(env))
    # Two workers: one runs the requeue while the other processes what it sends.
    start_worker(env)
    start_worker(env)
    wait_until(lambda: runs(redis_url, REQUEUE_DELIVERIES) >= 2, 90, "both workers ready")
    ids = store_deliveries(rt, sim, 300, DeliveryStatus.PENDING, timedelta(minutes=5))
    requeues = runs(redis_url, REQUEUE_DELIVERIES)
    enqueue(producer(redis_url), REQUEUE_DELIVERIES)

    def settled() -> bool:
        rows = statuses(rt, ids).values()
        return all(r.processed_at is not None for r in rows)

    wait_until(settled, 180, "every delivery processed")
    # The requeue has returned: an update of its own still to come would show now.
    wait_until(lambda: runs(redis_url, REQUEUE_DELIVERIES) > requeues, 60, "the requeue done")
    rows = statuses(rt, ids)
    reverted = [i for i, r in rows.items() if r.status != DeliveryStatus.PROCESSED.value]
    assert reverted == []
    assert all(r.tries == 1 for r in rows.values())
    rt.engine.dispose()


def test_a_delivery_waiting_for_budget_is_not_sent_again_by_the_requeue(
    sim_factory: Callable[..., SimProcess],
    migrated_postgres_url: str,
    redis_url: str,
    start_worker: WorkerFactory,  # noqa: F811
) -> None:
    sim = sim_factory(repos=3, access_token="sim-token")
    env = env_for(
        migrated_postgres_url,
        redis_url,
        redis_url,
        BITBUCKET_API_URL=sim.api_url,
        BITBUCKET_RATE_LIMIT_PER_HOUR="2",
    )
    rt = Runtime(settings_from_env(env))
    for _ in range(2):
        rt.budget.acquire()  # the window is spent: the delivery must wait about an hour
    (delivery_id,) = store_deliveries(rt, sim, 1, DeliveryStatus.QUEUED, timedelta(minutes=20))
    start_worker(env)
    enqueue(producer(redis_url), PROCESS_DELIVERY, delivery_id)

    def retry_recorded() -> bool:
        row = statuses(rt, [delivery_id])[delivery_id]
        return row.enqueued_at is not None and row.enqueued_at > utcnow()

    wait_until(retry_recorded, 60, "the retry's due time recorded")
    # Beat's requeue now finds nothing stale to send again.
    enqueue(producer(redis_url), REQUEUE_DELIVERIES)
    wait_until(lambda: runs(redis_url, REQUEUE_DELIVERIES) >= 2, 60, "requeue ran")
    row = statuses(rt, [delivery_id])[delivery_id]
    assert row.status == DeliveryStatus.QUEUED.value
    assert row.enqueued_at is not None and row.enqueued_at > utcnow() + timedelta(minutes=30)
    rt.engine.dispose()


def test_the_first_send_that_works_after_an_outage_requeues_at_once(
    private_redis: PrivateRedis,
) -> None:
    app = producer(private_redis.url())
    private_redis.stop()
    assert not enqueue_safely(app, PROCESS_DELIVERY, 1)
    private_redis.start()
    assert enqueue_safely(app, PROCESS_DELIVERY, 2)
    client = redis.Redis.from_url(private_redis.url())
    names = [_task_name(m) for m in client.lrange("default", 0, -1)]  # type: ignore[union-attr]
    assert REQUEUE_DELIVERIES in names
    client.close()


def _task_name(raw: Any) -> str:
    import json

    return str(json.loads(raw)["headers"]["task"])
