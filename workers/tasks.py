"""Thin tasks: each opens a unit of work and calls one service in `app.sync`."""

from __future__ import annotations

import logging
import time
from datetime import timedelta
from typing import Any

import sentry_sdk
from celery import shared_task
from celery.exceptions import Retry
from sqlalchemy import or_, select, update

from app.bitbucket.budget import Priority
from app.catalog.changes import prune_changes
from app.credentials_age import token_age_notice
from app.models import DeliveryStatus, WebhookDelivery, utcnow
from app.sync.activity import ActivityReconcile, prune_old_activity
from app.sync.catalog import CatalogSync
from app.sync.events import EventProcessor
from app.sync.people import PeopleSync
from app.sync.repositories import RepositorySync
from app.sync.workspace import WorkspaceSync
from app.tasks import (
    PROCESS_DELIVERY,
    PRUNE_ACTIVITY,
    RECONCILE_ACTIVITY,
    RECONCILE_ALL_ACTIVITY,
    REFRESH_REPOSITORY_CATALOG,
    REQUEUE_DELIVERIES,
    SYNC_ALL_MEMBERS,
    SYNC_ALL_WORKSPACES,
    SYNC_MEMBERS,
    SYNC_REPOSITORIES,
    SYNC_WORKSPACE,
)
from workers.base import BbsyncTask

log = logging.getLogger(__name__)
REFRESH_KEY_PREFIX = "bbsync:catalog-refresh/"
# A delivery queued this long ago and not processed was lost (the web process died between
# storing and enqueueing, or the broker dropped it): processing is idempotent, send it again.
STALE_QUEUED = timedelta(minutes=10)


@shared_task(bind=True, base=BbsyncTask, name=SYNC_ALL_WORKSPACES)
def sync_all_workspaces(self: BbsyncTask) -> list[str]:
    """Beat's entry point: one full sync per configured workspace."""
    notice = token_age_notice(self.runtime.settings)
    if notice:
        log.warning(notice[1], extra={"alert": f"token_{notice[0]}"})
        sentry_sdk.capture_message(notice[1], level="error" if notice[0] == "alert" else "warning")
    workspaces = list(self.runtime.settings.workspaces)
    for workspace in workspaces:
        self.app.send_task(SYNC_WORKSPACE, args=[workspace])
    return workspaces


@shared_task(bind=True, base=BbsyncTask, name=SYNC_WORKSPACE)
def sync_workspace(self: BbsyncTask, workspace: str) -> dict[str, Any]:
    """List one workspace's repositories, then read the catalog files that changed."""
    with self.retrying(workspace=workspace), self.unit_of_work() as session:
        result = WorkspaceSync(
            self.runtime.bitbucket(), session, session.commit, self.runtime.settings
        ).run(workspace)
        return {
            "repositories": {"run_id": result.repositories.id, **result.repositories.counts},
            "catalog": {"run_id": result.catalog.id, **result.catalog.counts},
            "api_calls": result.repositories.api_calls + result.catalog.api_calls,
        }


@shared_task(bind=True, base=BbsyncTask, name=SYNC_REPOSITORIES)
def sync_repositories(self: BbsyncTask, workspace: str) -> dict[str, Any]:
    """Mirror one workspace's repositories; resumes a run paused for budget."""
    with self.retrying(workspace=workspace), self.unit_of_work() as session:
        sync = RepositorySync(self.runtime.bitbucket(), session, commit=session.commit)
        run = sync.run(workspace)
        return {"run_id": run.id, "status": run.status, "api_calls": run.api_calls, **run.counts}


def schedule_catalog_refresh(task: BbsyncTask, repository_id: int) -> str:
    """Coalesce the catalog reads of a burst of pushes to one repository.

    The first push after a quiet spell is read at once (fresh within a second); pushes within
    the next `push_coalesce_seconds` share one trailing read at the end of that window, which
    sees all of them. So a burst costs at most two reads per window, however many pushes.
    """
    redis_client = task.runtime.redis
    window_ms = int(task.runtime.settings.push_coalesce_seconds * 1000)
    window = f"{REFRESH_KEY_PREFIX}{repository_id}"
    if redis_client.set(window, "1", nx=True, px=window_ms):
        task.app.send_task(REFRESH_REPOSITORY_CATALOG, args=[repository_id, False])
        return "now"
    trailing = f"{window}/trailing"
    if redis_client.set(trailing, "1", nx=True, px=window_ms + 60_000):
        remaining_ms = max(0, int(redis_client.pttl(window) or 0))  # type: ignore[arg-type]
        task.app.send_task(
            REFRESH_REPOSITORY_CATALOG, args=[repository_id, True], countdown=remaining_ms / 1000
        )
        return "trailing"
    return "coalesced"


@shared_task(bind=True, base=BbsyncTask, name=PROCESS_DELIVERY, soft_time_limit=120, time_limit=150)
def process_delivery(self: BbsyncTask, delivery_id: int) -> str:
    """Apply one stored webhook delivery (idempotent: a processed one is skipped)."""
    refresh: list[int] = []
    started = time.monotonic()
    try:
        with self.retrying(delivery=delivery_id), self.unit_of_work() as session:
            delivery = session.get(WebhookDelivery, delivery_id)
            if delivery is None:
                return f"delivery {delivery_id} not found"
            if delivery.status in (DeliveryStatus.PROCESSED.value, DeliveryStatus.IGNORED.value):
                return f"delivery {delivery_id} already {delivery.status}"
            processor = EventProcessor(
                self.runtime.bitbucket(Priority.WEBHOOK),
                session,
                self.runtime.settings,
                schedule_refresh=refresh.append,
            )
            summary = processor.process(delivery)
            delivery.status = DeliveryStatus.PROCESSED.value
            delivery.processed_at = utcnow()
            delivery.processing_ms = int((time.monotonic() - started) * 1000)
            delivery.tries = (delivery.tries or 0) + 1
            delivery.error = None
    except Retry:
        raise
    except Exception as exc:
        # Recorded where an operator sees it (`/api/deliveries`, `bbsync deliveries`), then
        # raised so Celery and Sentry see it too; `bbsync deliveries retry` sends it again.
        _record_failure(self, delivery_id, exc)
        raise
    # Only after the commit: the refresh must find what this delivery stored.
    for repository_id in dict.fromkeys(refresh):
        schedule_catalog_refresh(self, repository_id)
    return summary


def _record_failure(task: BbsyncTask, delivery_id: int, exc: Exception) -> None:
    with task.unit_of_work() as session:
        delivery = session.get(WebhookDelivery, delivery_id)
        if delivery is not None:
            delivery.status = DeliveryStatus.FAILED.value
            delivery.error = f"{type(exc).__name__}: {exc}"[:2000]
            delivery.tries = (delivery.tries or 0) + 1
            delivery.processed_at = utcnow()


@shared_task(
    bind=True,
    base=BbsyncTask,
    name=REFRESH_REPOSITORY_CATALOG,
    soft_time_limit=300,
    time_limit=330,
)
def refresh_repository_catalog(
    self: BbsyncTask, repository_id: int, trailing: bool = False
) -> dict[str, Any]:
    """Read one repository's catalog files now, on the webhook reserve."""
    if trailing:
        # From here on a new push schedules another trailing read: none is lost.
        self.runtime.redis.delete(f"{REFRESH_KEY_PREFIX}{repository_id}/trailing")
    with self.retrying(repository_id=repository_id), self.unit_of_work() as session:
        return CatalogSync(
            self.runtime.bitbucket(Priority.WEBHOOK),
            session,
            session.commit,
            self.runtime.settings,
        ).refresh_repository(repository_id)


@shared_task(bind=True, base=BbsyncTask, name=REQUEUE_DELIVERIES)
def requeue_pending(self: BbsyncTask, limit: int = 500) -> int:
    """Send again the deliveries the broker never got (it was down when they arrived), and
    those queued long ago that no worker finished."""
    now = utcnow()
    settings = self.runtime.settings
    with self.unit_of_work() as session:
        stuck = session.scalars(
            select(WebhookDelivery.id)
            .where(
                or_(
                    (WebhookDelivery.status == DeliveryStatus.PENDING.value)
                    & (
                        WebhookDelivery.received_at
                        < now - timedelta(seconds=settings.requeue_after_seconds)
                    ),
                    (WebhookDelivery.status == DeliveryStatus.QUEUED.value)
                    & (WebhookDelivery.enqueued_at < now - STALE_QUEUED),
                )
            )
            .order_by(WebhookDelivery.received_at)
            .limit(limit)
        ).all()
        for delivery_id in stuck:
            self.app.send_task(PROCESS_DELIVERY, args=[delivery_id])
        if stuck:
            session.execute(
                update(WebhookDelivery)
                .where(WebhookDelivery.id.in_(stuck))
                .values(status=DeliveryStatus.QUEUED.value, enqueued_at=now)
            )
    return len(stuck)


@shared_task(bind=True, base=BbsyncTask, name=RECONCILE_ALL_ACTIVITY)
def reconcile_all_activity(self: BbsyncTask) -> list[str]:
    """Beat's entry point: one activity reconciliation per configured workspace."""
    workspaces = list(self.runtime.settings.workspaces)
    for workspace in workspaces:
        self.app.send_task(RECONCILE_ACTIVITY, args=[workspace])
    return workspaces


@shared_task(bind=True, base=BbsyncTask, name=RECONCILE_ACTIVITY)
def reconcile_activity(self: BbsyncTask, workspace: str) -> dict[str, Any]:
    """Pull requests, pipelines and statuses webhooks may have missed; resumable."""
    with self.retrying(workspace=workspace), self.unit_of_work() as session:
        run = ActivityReconcile(
            self.runtime.bitbucket(),
            session,
            session.commit,
            pipelines=self.runtime.settings.reconcile_pipelines,
        ).run(workspace)
        return {"run_id": run.id, "api_calls": run.api_calls, **run.counts}


@shared_task(bind=True, base=BbsyncTask, name=PRUNE_ACTIVITY)
def prune_activity(self: BbsyncTask) -> dict[str, Any]:
    """Retention: pipelines and statuses older than `BBSYNC_RETENTION_DAYS` go, and catalog
    changes older than `BBSYNC_CHANGE_RETENTION_DAYS`."""
    settings = self.runtime.settings
    with self.unit_of_work() as session:
        pruned = prune_old_activity(session, settings.retention_days)
        return {**pruned, **prune_changes(session, settings.change_retention_days)}


@shared_task(bind=True, base=BbsyncTask, name=SYNC_ALL_MEMBERS)
def sync_all_members(self: BbsyncTask) -> list[str]:
    """Beat's entry point (hourly): members, groups and permissions of each workspace."""
    workspaces = list(self.runtime.settings.workspaces)
    for workspace in workspaces:
        self.app.send_task(SYNC_MEMBERS, args=[workspace])
    return workspaces


@shared_task(bind=True, base=BbsyncTask, name=SYNC_MEMBERS)
def sync_members(self: BbsyncTask, workspace: str) -> dict[str, Any]:
    """Members → User entities, groups → Group entities, permissions; revocations audited."""
    with self.retrying(workspace=workspace), self.unit_of_work() as session:
        run = PeopleSync(
            self.runtime.bitbucket(), session, session.commit, self.runtime.settings
        ).run(workspace)
        return {"run_id": run.id, "api_calls": run.api_calls, "error": run.error, **run.counts}
