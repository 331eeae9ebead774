"""Task names, queues and routes: the contract between whoever enqueues and the workers.

The web side and the CLI enqueue by these names (`send_task`), so they never import worker
code; `workers/` registers its tasks under the same names.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from celery import Celery

log = logging.getLogger(__name__)

QUEUE_EVENTS = "events"  # webhook deliveries: small, latency-sensitive
QUEUE_SYNC = "sync"  # full syncs and reconciliation: long, budget-heavy
QUEUE_DEFAULT = "default"
QUEUES = (QUEUE_EVENTS, QUEUE_SYNC, QUEUE_DEFAULT)

SYNC_ALL_WORKSPACES = "bbsync.sync.all_workspaces"
SYNC_REPOSITORIES = "bbsync.sync.repositories"
SYNC_WORKSPACE = "bbsync.sync.workspace"
PROCESS_DELIVERY = "bbsync.events.process_delivery"
REQUEUE_DELIVERIES = "bbsync.events.requeue_pending"
DRAIN_SPOOL = "bbsync.events.drain_spool"
REFRESH_REPOSITORY_CATALOG = "bbsync.events.refresh_repository_catalog"
RECONCILE_ALL_ACTIVITY = "bbsync.activity.reconcile_all"
RECONCILE_ACTIVITY = "bbsync.activity.reconcile_workspace"
PRUNE_ACTIVITY = "bbsync.activity.prune"
SYNC_ALL_MEMBERS = "bbsync.members.sync_all"
SYNC_MEMBERS = "bbsync.members.sync_workspace"
RECOVER_LOST_RUNS = "bbsync.sync.recover_lost_runs"

ROUTES: dict[str, dict[str, str]] = {
    SYNC_ALL_WORKSPACES: {"queue": QUEUE_SYNC},
    SYNC_REPOSITORIES: {"queue": QUEUE_SYNC},
    SYNC_WORKSPACE: {"queue": QUEUE_SYNC},
    PROCESS_DELIVERY: {"queue": QUEUE_EVENTS},
    REFRESH_REPOSITORY_CATALOG: {"queue": QUEUE_EVENTS},
    REQUEUE_DELIVERIES: {"queue": QUEUE_DEFAULT},
    DRAIN_SPOOL: {"queue": QUEUE_EVENTS},
    RECONCILE_ALL_ACTIVITY: {"queue": QUEUE_SYNC},
    RECONCILE_ACTIVITY: {"queue": QUEUE_SYNC},
    PRUNE_ACTIVITY: {"queue": QUEUE_DEFAULT},
    SYNC_ALL_MEMBERS: {"queue": QUEUE_SYNC},
    SYNC_MEMBERS: {"queue": QUEUE_SYNC},
    # Not on "sync": a worker busy with a long sync must not delay finding a dead one.
    RECOVER_LOST_RUNS: {"queue": QUEUE_DEFAULT},
}


def producer(broker_url: str) -> Celery:
    """A Celery app that only sends tasks (used by the web process and the CLI)."""
    app = Celery("bbsync-producer", broker=broker_url, set_as_current=False)
    app.conf.update(
        task_serializer="json",
        accept_content=["json"],
        task_routes=ROUTES,
        task_default_queue=QUEUE_DEFAULT,
        broker_connection_retry_on_startup=False,
        broker_connection_timeout=2,
        broker_transport_options={"max_retries": 0, "socket_connect_timeout": 2},
    )
    return app


def enqueue(app: Celery, name: str, *args: Any, countdown: float | None = None) -> str:
    """Send task `name` to its queue; returns the task id."""
    result = app.send_task(name, args=args, countdown=countdown, retry=False)
    return str(result.id)


# When this process's first failed send happened, while its broker is failing (per process).
_broker_lost_at: float | None = None


def enqueue_safely(app: Celery, name: str, *args: Any, countdown: float | None = None) -> bool:
    """Like `enqueue`, but a broker that is down gives False instead of an error: the caller
    has stored what the task needs, and a scheduled requeue sends it later.

    The first send that works after failures also sends the requeue at once, so what the
    outage held back goes as soon as the broker answers, not at beat's next requeue.
    """
    global _broker_lost_at
    try:
        enqueue(app, name, *args, countdown=countdown)
    except Exception as exc:
        log.warning(
            "broker unavailable; task left for the requeue",
            extra={"task": name, "error": type(exc).__name__},
        )
        if _broker_lost_at is None:
            _broker_lost_at = time.time()
        return False
    lost_at, _broker_lost_at = _broker_lost_at, None
    if lost_at is not None and name != REQUEUE_DELIVERIES:
        log.info("broker answers again; requeueing what it missed", extra={"lost_at": lost_at})
        try:
            app.send_task(REQUEUE_DELIVERIES, kwargs={"lost_at": lost_at}, retry=False)
        except Exception:
            _broker_lost_at = lost_at  # gone again: the next send that works tries again
    return True
