"""Task names, queues and routes: the contract between whoever enqueues and the workers.

The web side and the CLI enqueue by these names (`send_task`), so they never import worker
code; `workers/` registers its tasks under the same names.
"""

from __future__ import annotations

from typing import Any

from celery import Celery

QUEUE_EVENTS = "events"  # webhook deliveries: small, latency-sensitive
QUEUE_SYNC = "sync"  # full syncs and reconciliation: long, budget-heavy
QUEUE_DEFAULT = "default"
QUEUES = (QUEUE_EVENTS, QUEUE_SYNC, QUEUE_DEFAULT)

SYNC_ALL_WORKSPACES = "bbsync.sync.all_workspaces"
SYNC_REPOSITORIES = "bbsync.sync.repositories"
SYNC_WORKSPACE = "bbsync.sync.workspace"

ROUTES: dict[str, dict[str, str]] = {
    SYNC_ALL_WORKSPACES: {"queue": QUEUE_SYNC},
    SYNC_REPOSITORIES: {"queue": QUEUE_SYNC},
    SYNC_WORKSPACE: {"queue": QUEUE_SYNC},
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
        broker_transport_options={"max_retries": 1},
    )
    return app


def enqueue(app: Celery, name: str, *args: Any, **kwargs: Any) -> str:
    """Send task `name` to its queue; returns the task id."""
    result = app.send_task(name, args=args, kwargs=kwargs)
    return str(result.id)
