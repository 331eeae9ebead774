"""The Celery app factory: queues, routes, reliability settings and the beat schedule."""

from __future__ import annotations

import logging
import time
from typing import Any

from celery import Celery, bootsteps
from celery.signals import task_postrun, task_prerun, worker_process_init
from kombu import Queue

from app.config import Settings
from app.ops.logs import configure_logging
from app.ops.observability import init_sentry
from app.ops.telemetry import record_task
from app.runtime import Runtime
from app.task_names import (
    DRAIN_SPOOL,
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
from workers.base import bind_runtime, current_runtime

log = logging.getLogger(__name__)

# Long enough for a full sync of a large workspace; the Redis broker re-delivers an unacked
# task after `visibility_timeout`, so it must exceed the longest task.
SYNC_TIME_LIMIT = 2 * 3600
SPOOL_DRAIN_SECONDS = 5.0


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
        # Nothing reads task results: storing them only made a task that had done its work
        # fail when Redis (the result backend) hiccupped at the end.
        task_ignore_result=True,
        broker_connection_retry_on_startup=True,
        # A broker outage costs time, never the worker: keep reconnecting however long it
        # lasts (Celery's default gives up after 100 attempts, about 45 minutes).
        broker_connection_retry=True,
        broker_connection_max_retries=None,
        # Events let Flower show every queue and task.
        worker_send_task_events=True,
        task_send_sent_event=True,
        timezone="UTC",
        beat_schedule=beat_schedule(settings),
        worker_hijack_root_logger=False,
    )
    app.autodiscover_tasks(["workers"], related_name="tasks", force=True)
    app.steps["consumer"].add(RequeueOnConnect)
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
        # Deliveries spooled in Redis while the database was down: moved within seconds of
        # its return (a cheap XLEN while there are none). Expires rather than piling up.
        "drain-spool": {
            "task": DRAIN_SPOOL,
            "schedule": SPOOL_DRAIN_SECONDS,
            "options": {"expires": SPOOL_DRAIN_SECONDS * 2},
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


class RequeueOnConnect(bootsteps.StartStopStep):
    """Each time the worker (re)connects to its broker, send what an outage held back.

    Deliveries that arrived while the broker was down are `pending`; those queued before it
    went away may be gone with it (a Redis broker without persistence). Without this they
    would wait for beat's requeue (`BBSYNC_REQUEUE_AFTER_SECONDS`, 10 minutes for queued).
    """

    requires = ("celery.worker.consumer.tasks:Tasks",)

    def __init__(self, parent: Any, **kwargs: Any) -> None:
        super().__init__(parent, **kwargs)
        self.lost_at: float | None = None

    def start(self, parent: Any) -> None:
        lost_at, self.lost_at = self.lost_at, None
        try:
            # With the default publish retry: the producer pool's connections died with the
            # broker and are re-established here.
            parent.app.send_task(REQUEUE_DELIVERIES, kwargs={"lost_at": lost_at})
        except Exception as exc:
            # Whatever went wrong, this hook must never stop the consumer (an exception here
            # ends the worker). Down again already: the next reconnection, or beat, sends it.
            self.lost_at = lost_at or time.time()
            log.warning("requeue after reconnect not sent", extra={"error": type(exc).__name__})
        else:
            log.info("broker connected; pending deliveries requeued", extra={"lost_at": lost_at})

    def stop(self, parent: Any) -> None:
        # Called when the connection is lost (before the reconnect) and at shutdown.
        if self.lost_at is None:
            self.lost_at = time.time()


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
