"""The Celery app factory: queues, routes, reliability settings and the beat schedule."""

from __future__ import annotations

import time
from typing import Any

from celery import Celery
from celery.signals import task_postrun, task_prerun, worker_process_init
from kombu import Queue

from app.config import Settings
from app.logs import configure_logging
from app.observability import init_sentry
from app.runtime import Runtime
from app.tasks import (
    PRUNE_ACTIVITY,
    QUEUE_DEFAULT,
    QUEUES,
    RECONCILE_ALL_ACTIVITY,
    RECOVER_LOST_RUNS,
    REQUEUE_DELIVERIES,
    ROUTES,
    SYNC_ALL_MEMBERS,
    SYNC_ALL_WORKSPACES,
)
from app.telemetry import record_task
from workers.base import bind_runtime, current_runtime

# Long enough for a full sync of a large workspace; the Redis broker re-delivers an unacked
# task after `visibility_timeout`, so it must exceed the longest task.
SYNC_TIME_LIMIT = 2 * 3600


def create_celery(settings: Settings) -> Celery:
    """Build the worker/beat Celery app for `settings`."""
    app = Celery("bbsync", broker=settings.broker_url, backend=settings.redis_url)
    app.conf.update(
        task_serializer="json",
        result_serializer="json",
        accept_content=["json"],
        task_queues=[Queue(name) for name in QUEUES],
        task_default_queue=QUEUE_DEFAULT,
        task_routes=ROUTES,
        # Tasks are idempotent: ack after running, re-run if a worker dies mid-task.
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_time_limit=SYNC_TIME_LIMIT + 300,
        task_soft_time_limit=SYNC_TIME_LIMIT,
        broker_transport_options={"visibility_timeout": SYNC_TIME_LIMIT + 600},
        result_expires=24 * 3600,
        broker_connection_retry_on_startup=True,
        # Events let Flower show every queue and task.
        worker_send_task_events=True,
        task_send_sent_event=True,
        timezone="UTC",
        beat_schedule=beat_schedule(settings),
        worker_hijack_root_logger=False,
    )
    app.autodiscover_tasks(["workers"], related_name="tasks", force=True)
    bind_runtime(app, Runtime(settings))
    return app


def beat_schedule(settings: Settings) -> dict[str, dict[str, Any]]:
    return {
        "full-sync": {
            "task": SYNC_ALL_WORKSPACES,
            "schedule": float(settings.full_sync_interval_seconds),
        },
        "activity-reconcile": {
            "task": RECONCILE_ALL_ACTIVITY,
            "schedule": float(settings.activity_interval_seconds),
        },
        "activity-prune": {"task": PRUNE_ACTIVITY, "schedule": 24 * 3600.0},
        "members-sync": {
            "task": SYNC_ALL_MEMBERS,
            "schedule": float(settings.members_interval_seconds),
        },
        "recover-lost-runs": {
            "task": RECOVER_LOST_RUNS,
            "schedule": float(max(5, settings.run_stale_seconds // 3)),
        },
        "requeue-deliveries": {
            "task": REQUEUE_DELIVERIES,
            "schedule": float(max(5, settings.requeue_after_seconds // 2)),
        },
    }


_started: dict[str, float] = {}


@task_prerun.connect
def _task_started(task_id: str | None = None, **_: Any) -> None:
    if task_id:
        _started[task_id] = time.monotonic()


@task_postrun.connect
def _task_finished(
    task_id: str | None = None, task: Any = None, state: str | None = None, **_: Any
) -> None:
    started = _started.pop(task_id or "", None)
    runtime = current_runtime()
    if started is None or runtime is None or task is None:
        return
    # A retry is not a failure: it is the budget or Bitbucket asking to come back later.
    record_task(runtime.redis, task.name, time.monotonic() - started, failed=state == "FAILURE")


@worker_process_init.connect
def _after_fork(**_: Any) -> None:
    # A forked pool process must not reuse the parent's database connections.
    runtime = current_runtime()
    if runtime is not None:
        runtime.dispose()


def setup_process(settings: Settings) -> None:
    configure_logging(settings)
    init_sentry(settings, component="worker")
