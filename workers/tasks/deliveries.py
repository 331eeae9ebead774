"""Webhook deliveries: processing one (then scheduling the catalog reads it asks for),
sending again the ones the broker lost, and draining the Redis spool into the outbox."""

from __future__ import annotations

import logging
import random
import time
from datetime import UTC, datetime, timedelta
from typing import Any

from celery import shared_task
from celery.exceptions import Retry
from kombu.exceptions import OperationalError
from sqlalchemy import or_, select, update
from sqlalchemy.exc import SQLAlchemyError

from app.bitbucket.budget import Priority
from app.bitbucket.datacenter_webhooks import is_datacenter_event
from app.models import DeliveryStatus, WebhookDelivery, utcnow
from app.outbox import DeliverySpool, database_unavailable
from app.sync.datacenter_events import DataCenterEventProcessor
from app.sync.events import EventProcessor
from app.task_names import DRAIN_SPOOL, PROCESS_DELIVERY, REQUEUE_DELIVERIES, enqueue_safely
from workers.base import BbsyncTask
from workers.tasks.datacenter import schedule_project_walk
from workers.tasks.refresh import schedule_catalog_refresh

log = logging.getLogger(__name__)
# A delivery queued this long ago and not processed was lost (the web process died between
# storing and enqueueing, or the broker dropped it): processing is idempotent, send it again.
STALE_QUEUED = timedelta(minutes=10)


@shared_task(bind=True, base=BbsyncTask, name=PROCESS_DELIVERY, soft_time_limit=120, time_limit=150)
def process_delivery(self: BbsyncTask, delivery_id: int) -> str:
    """Apply one stored webhook delivery (idempotent: a processed one is skipped)."""
    refresh: list[int] = []
    walks: list[str] = []
    started = time.monotonic()
    try:
        with self.retrying(delivery=delivery_id), self.unit_of_work() as session:
            delivery = session.get(WebhookDelivery, delivery_id)
            if delivery is None:
                return f"delivery {delivery_id} not found"
            if delivery.status in (DeliveryStatus.PROCESSED.value, DeliveryStatus.IGNORED.value):
                return f"delivery {delivery_id} already {delivery.status}"
            processor: EventProcessor | DataCenterEventProcessor
            if is_datacenter_event(delivery.event_key):
                processor = DataCenterEventProcessor(
                    session,
                    self.runtime.datacenter_settings,
                    schedule_refresh=refresh.append,
                    schedule_walk=walks.append,
                )
            else:
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
        for project_key in dict.fromkeys(walks):
            schedule_project_walk(self, project_key)
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
