"""Thin tasks: each opens a unit of work and calls one service in `app.sync`."""

from __future__ import annotations

import logging
import random
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import redis
import sentry_sdk
from celery import shared_task
from celery.exceptions import Retry
from kombu.exceptions import OperationalError
from sqlalchemy import or_, select, update
from sqlalchemy.exc import SQLAlchemyError

from app.bitbucket.budget import Priority, shared_state
from app.bitbucket.errors import (
    BudgetExhausted,
    BudgetPaused,
    BudgetUnavailable,
    RateLimited,
    RetryLater,
)
from app.catalog.changes import prune_changes
from app.models import DeliveryStatus, WebhookDelivery, utcnow
from app.ops.credentials_age import token_age_notice
from app.ops.logs import log_fields
from app.outbox import DeliverySpool, database_unavailable
from app.sync.activity import (
    ActivityReconcile,
    activity_calls_left,
    activity_quiet_calls_left,
    prune_old_activity,
)
from app.sync.catalog import CatalogSync
from app.sync.events import EventProcessor
from app.sync.people import PeopleSync, people_calls_left
from app.sync.refresh_failures import (
    clear_refresh_failure,
    clear_workspace_refresh_failures,
    record_refresh_failure,
)
from app.sync.repositories import RepositorySync
from app.sync.runs import lost_runs
from app.sync.workspace import WorkspaceSync
from app.task_names import (
    DRAIN_SPOOL,
    PROCESS_DELIVERY,
    PRUNE_ACTIVITY,
    RECONCILE_ACTIVITY,
    RECONCILE_ALL_ACTIVITY,
    RECOVER_LOST_RUNS,
    REFRESH_REPOSITORY_CATALOG,
    REQUEUE_DELIVERIES,
    SYNC_ALL_MEMBERS,
    SYNC_ALL_WORKSPACES,
    SYNC_MEMBERS,
    SYNC_REPOSITORIES,
    SYNC_WORKSPACE,
    enqueue_safely,
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
        if result.catalog.status == "succeeded" and not result.catalog.counts.get("failures"):
            clear_workspace_refresh_failures(session, workspace)
        listing = result.repositories
        return {
            "repositories": {"run_id": listing.id, **listing.counts} if listing else None,
            "catalog": {"run_id": result.catalog.id, **result.catalog.counts},
            "api_calls": (listing.api_calls if listing else 0) + result.catalog.api_calls,
        }


@shared_task(bind=True, base=BbsyncTask, name=SYNC_REPOSITORIES)
def sync_repositories(self: BbsyncTask, workspace: str) -> dict[str, Any]:
    """Mirror one workspace's repositories; resumes a run paused for budget."""
    with self.retrying(workspace=workspace), self.unit_of_work() as session:
        sync = RepositorySync(self.runtime.bitbucket(), session, commit=session.commit)
        run = sync.run(workspace)
        return {"run_id": run.id, "status": run.status, "api_calls": run.api_calls, **run.counts}


# The task that continues a lost run of each kind (it resumes from the run's cursor).
RESUME_TASKS = {
    "repositories": SYNC_WORKSPACE,
    "catalog": SYNC_WORKSPACE,
    "members": SYNC_MEMBERS,
    "activity": RECONCILE_ACTIVITY,
}


@shared_task(bind=True, base=BbsyncTask, name=RECOVER_LOST_RUNS)
def recover_lost_runs(self: BbsyncTask) -> list[str]:
    """Beat's watchdog: a running sync whose heartbeat went stale lost its worker (killed
    with the message still unacked, which the broker would hold for hours). Mark it lost with
    what it spent and enqueue the task that continues it, now."""
    with self.unit_of_work() as session:
        lost = lost_runs(session, self.runtime.settings.run_stale_seconds)
        resume = dict.fromkeys(
            (RESUME_TASKS[r.kind], r.workspace) for r in lost if r.kind in RESUME_TASKS
        )
    for task, workspace in resume:
        log.warning("lost sync resumed", extra={"task": task, "workspace": workspace})
        self.app.send_task(task, args=[workspace])
    return [f"{task} {workspace}" for task, workspace in resume]


def schedule_catalog_refresh(task: BbsyncTask, repository_id: int, delivery_id: int) -> str:
    """Coalesce the catalog reads of a burst of pushes to one repository.

    The first push after a quiet spell is read at once (fresh within a second); pushes within
    the next `push_coalesce_seconds` share one trailing read at the end of that window, which
    sees all of them. So a burst costs at most two reads per window, however many pushes.
    `delivery_id` is the delivery the read answers for: marked failed if the read never works.
    """
    redis_client = task.runtime.redis
    window_ms = int(task.runtime.settings.push_coalesce_seconds * 1000)
    window = f"{REFRESH_KEY_PREFIX}{repository_id}"
    try:
        if redis_client.set(window, "1", nx=True, px=window_ms):
            when: str | float = "now"
        else:
            trailing = f"{window}/trailing"
            if not redis_client.set(trailing, "1", nx=True, px=window_ms + 60_000):
                return "coalesced"
            when = max(0, int(redis_client.pttl(window) or 0)) / 1000  # type: ignore[arg-type]
    except redis.RedisError:
        # Coalescing is an optimisation: without Redis the read goes at once, uncoalesced.
        log.warning("refresh not coalesced: Redis did not answer", extra={"delivery": delivery_id})
        when = "now"
    if when == "now":
        task.app.send_task(REFRESH_REPOSITORY_CATALOG, args=[repository_id, False, delivery_id])
        return "now"
    task.app.send_task(
        REFRESH_REPOSITORY_CATALOG, args=[repository_id, True, delivery_id], countdown=when
    )
    return "trailing"


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
    except Retry as retry:
        _waiting_until(self, delivery_id, retry)
        raise
    except SQLAlchemyError as exc:
        if not database_unavailable(exc):
            _record_failure(self, delivery_id, exc)
            raise
        # The database went away mid-task (nothing was committed): not the delivery's fault,
        # and the failure could not be recorded anyway. Come back once it may be up again.
        raise self.retry(exc=exc, countdown=random.uniform(2, 10)) from None
    except Exception as exc:
        # Recorded where an operator sees it (`/api/deliveries`, `bbsync deliveries`), then
        # raised so Celery and Sentry see it too; `bbsync deliveries retry` sends it again.
        _record_failure(self, delivery_id, exc)
        raise
    # Only after the commit: the refresh must find what this delivery stored.
    try:
        for repository_id in dict.fromkeys(refresh):
            schedule_catalog_refresh(self, repository_id, delivery_id)
    except (OperationalError, *self.app.connection_for_write().connection_errors) as exc:
        # The broker went away between the commit and the send: processing is idempotent,
        # so the requeue processes the delivery again and schedules the read then.
        _back_to_pending(self, delivery_id)
        log.warning(
            "catalog refresh not sent; delivery left for the requeue",
            extra={"delivery": delivery_id, "error": type(exc).__name__},
        )
        return f"{summary}; catalog refresh left for the requeue"
    return summary


def _waiting_until(task: BbsyncTask, delivery_id: int, retry: Retry) -> None:
    """A retry waits in the broker for its countdown (budget, 429, 5xx): until it is due the
    delivery is not stale, so the requeue must not send it again meanwhile."""
    when = retry.when
    due = when if isinstance(when, datetime) else utcnow() + timedelta(seconds=float(when or 0))
    try:
        with task.unit_of_work() as session:
            session.execute(
                update(WebhookDelivery)
                .where(
                    WebhookDelivery.id == delivery_id,
                    WebhookDelivery.status == DeliveryStatus.QUEUED.value,
                )
                .values(enqueued_at=due)
                .execution_options(synchronize_session=False)
            )
    except SQLAlchemyError:
        # Harmless: at worst the requeue sends it once more, and processing is idempotent.
        log.warning("retry time not recorded", extra={"delivery": delivery_id})


def _back_to_pending(task: BbsyncTask, delivery_id: int) -> None:
    with task.unit_of_work() as session:
        session.execute(
            update(WebhookDelivery)
            .where(WebhookDelivery.id == delivery_id)
            .values(status=DeliveryStatus.PENDING.value, enqueued_at=None)
            .execution_options(synchronize_session=False)
        )


def _record_failure(task: BbsyncTask, delivery_id: int, exc: Exception) -> None:
    with task.unit_of_work() as session:
        delivery = session.get(WebhookDelivery, delivery_id)
        if delivery is not None:
            delivery.status = DeliveryStatus.FAILED.value
            delivery.error = f"{type(exc).__name__}: {exc}"[:2000]
            delivery.tries = (delivery.tries or 0) + 1
            delivery.processed_at = utcnow()


# Waiting for budget is not a failed attempt; everything else (5xx, 401, database) is.
BUDGET_WAITS = (BudgetExhausted, BudgetPaused, BudgetUnavailable, RateLimited)


@shared_task(
    bind=True,
    base=BbsyncTask,
    name=REFRESH_REPOSITORY_CATALOG,
    soft_time_limit=300,
    time_limit=330,
)
def refresh_repository_catalog(
    self: BbsyncTask,
    repository_id: int,
    trailing: bool = False,
    delivery_id: int | None = None,
    attempt: int = 1,
) -> dict[str, Any]:
    """Read one repository's catalog files now, on the webhook reserve.

    A failure is retried with backoff (`BBSYNC_REFRESH_ATTEMPTS` attempts); after the last
    one the delivery is marked failed and the repository shown stale, with the reason.
    """
    attempts = self.runtime.settings.refresh_attempts
    try:
        with log_fields(
            task=self.name,
            task_id=self.request.id,
            repository_id=repository_id,
            delivery=delivery_id,
        ):
            if trailing:
                # From here on a new push schedules another trailing read: none is lost.
                with shared_state("catalog refresh window"):
                    self.runtime.redis.delete(f"{REFRESH_KEY_PREFIX}{repository_id}/trailing")
            with self.unit_of_work() as session:
                result = CatalogSync(
                    self.runtime.bitbucket(Priority.WEBHOOK),
                    session,
                    session.commit,
                    self.runtime.settings,
                ).refresh_repository(repository_id)
                clear_refresh_failure(session, repository_id)
                return result
    except BUDGET_WAITS as exc:
        # Waiting for budget (or for Redis, which holds it) is not a failed attempt.
        raise self.retry(exc=exc, countdown=self.countdown(exc)) from None
    except Exception as exc:
        if attempt >= attempts:
            _refresh_failed(self, repository_id, delivery_id, exc)
            raise
        countdown = self.countdown(exc if isinstance(exc, RetryLater) else RetryLater(str(exc)))
        log.info(
            "catalog refresh failed; will retry",
            extra={
                "repository_id": repository_id,
                "attempt": attempt,
                "reason": f"{type(exc).__name__}: {exc}"[:500],
                "countdown": round(countdown),
            },
        )
        raise self.retry(
            args=[repository_id, False, delivery_id],
            kwargs={"attempt": attempt + 1},
            countdown=countdown,
            exc=exc,
        ) from None


def _refresh_failed(
    task: BbsyncTask, repository_id: int, delivery_id: int | None, exc: BaseException
) -> None:
    reason = f"{type(exc).__name__}: {exc}"
    log.error(
        "catalog refresh failed; repository stale",
        extra={"repository_id": repository_id, "delivery": delivery_id, "reason": reason},
    )
    with task.unit_of_work() as session:
        record_refresh_failure(session, repository_id, delivery_id, reason)


@shared_task(bind=True, base=BbsyncTask, name=REQUEUE_DELIVERIES)
def requeue_pending(self: BbsyncTask, limit: int = 500, lost_at: float | None = None) -> int:
    """Send again the deliveries the broker never got (it was down when they arrived), and
    those queued long ago that no worker finished.

    `lost_at` (set by a worker that just got its broker back) is when the connection was
    lost: then every pending delivery goes at once, and every queued one sent before the
    outage, since the broker may have lost it.

    Each row is claimed with a compare-and-set (`UPDATE … WHERE status still due`) in the
    transaction that sends it, so a delivery a worker processed in between is never put
    back to `queued`, and two requeues never send the same row twice.
    """
    now = utcnow()
    pending_before = now - timedelta(seconds=self.runtime.settings.requeue_after_seconds)
    queued_before = now - STALE_QUEUED
    if lost_at is not None:
        pending_before = now
        queued_before = max(queued_before, datetime.fromtimestamp(lost_at, UTC))
    due = or_(
        (WebhookDelivery.status == DeliveryStatus.PENDING.value)
        & (WebhookDelivery.received_at < pending_before),
        (WebhookDelivery.status == DeliveryStatus.QUEUED.value)
        & (WebhookDelivery.enqueued_at < queued_before),
    )
    with self.unit_of_work() as session:
        candidates = session.scalars(
            select(WebhookDelivery.id).where(due).order_by(WebhookDelivery.received_at).limit(limit)
        ).all()
        if not candidates:
            return 0
        claimed = session.scalars(
            update(WebhookDelivery)
            .where(WebhookDelivery.id.in_(candidates), due)
            .values(status=DeliveryStatus.QUEUED.value, enqueued_at=now)
            .returning(WebhookDelivery.id)
            .execution_options(synchronize_session=False)
        ).all()
        # Sent before the commit: a send that fails rolls the claims back to their old state.
        for delivery_id in sorted(claimed):
            self.app.send_task(PROCESS_DELIVERY, args=[delivery_id])
    log.info(
        "deliveries requeued",
        extra={"requeued": len(claimed), "after_outage": lost_at is not None},
    )
    return len(claimed)


@shared_task(bind=True, base=BbsyncTask, name=DRAIN_SPOOL, soft_time_limit=120, time_limit=150)
def drain_spool(self: BbsyncTask) -> dict[str, Any]:
    """Move deliveries the ingress spooled in Redis while the database was down into the
    outbox, in order, and send them to be processed (beat runs this every few seconds)."""
    spool = DeliverySpool(self.runtime.redis, self.runtime.settings.spool_max_entries)
    if not spool.waiting():
        return {"stored": 0}
    try:
        result = spool.drain(
            self.runtime.sessions,
            lambda delivery_id: enqueue_safely(self.app, PROCESS_DELIVERY, delivery_id),
        )
    except SQLAlchemyError as exc:
        if not database_unavailable(exc):
            raise
        # Still down: nothing moved, nothing lost; the next beat tick tries again.
        return {"stored": 0, "database": "unavailable"}
    return {"stored": result.stored, "duplicates": result.duplicates, "left": result.left}


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
        settings = self.runtime.settings
        run = ActivityReconcile(
            self.runtime.bitbucket(),
            session,
            session.commit,
            pipelines=settings.reconcile_pipelines,
            max_calls=activity_calls_left(session, workspace, settings),
            max_quiet_calls=activity_quiet_calls_left(session, workspace, settings),
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
    """Members → User entities, groups → Group entities, permissions within
    `BBSYNC_PEOPLE_SHARE` (the walk resumes next run); revocations audited."""
    with self.retrying(workspace=workspace), self.unit_of_work() as session:
        settings = self.runtime.settings
        run = PeopleSync(
            self.runtime.bitbucket(),
            session,
            session.commit,
            settings,
            max_calls=people_calls_left(session, workspace, settings),
        ).run(workspace)
        return {"run_id": run.id, "api_calls": run.api_calls, "error": run.error, **run.counts}
