"""Webhook-driven catalog refreshes that failed their last attempt.

A failed refresh must not vanish: its delivery is marked `failed` with the reason (so
`bbsync deliveries --failed` lists it and `bbsync deliveries retry --failed` sends it again),
and its repository is shown stale, with the reason, in `bbsync status`, the status page and
`/metrics` until a refresh or a clean catalog run reads it again.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from app.models import DeliveryStatus, Repository, WebhookDelivery, Workspace, utcnow


@dataclass(frozen=True)
class StaleRepository:
    full_name: str
    reason: str
    since: datetime


def record_refresh_failure(
    session: Session, repository_id: int, delivery_id: int | None, reason: str
) -> None:
    """The last attempt failed: the repository is stale, its delivery failed. Caller commits."""
    now = utcnow()
    reason = reason[:2000]
    session.execute(
        update(Repository)
        .where(Repository.id == repository_id)
        .values(catalog_refresh_error=reason, catalog_refresh_failed_at=now)
        .execution_options(synchronize_session=False)
    )
    if delivery_id is not None:
        session.execute(
            update(WebhookDelivery)
            .where(WebhookDelivery.id == delivery_id)
            .values(
                status=DeliveryStatus.FAILED.value,
                error=f"catalog refresh failed: {reason}"[:2000],
                processed_at=now,
            )
            .execution_options(synchronize_session=False)
        )


def clear_refresh_failure(session: Session, repository_id: int) -> None:
    """A refresh read the repository: its catalog is current again."""
    session.execute(
        update(Repository)
        .where(Repository.id == repository_id, Repository.catalog_refresh_failed_at.is_not(None))
        .values(catalog_refresh_error=None, catalog_refresh_failed_at=None)
        .execution_options(synchronize_session=False)
    )


def clear_workspace_refresh_failures(session: Session, workspace: str) -> int:
    """A catalog run that read every changed repository without a failure mends them all
    (a failed refresh leaves the repository's checked head behind, so the run re-read it)."""
    in_workspace = select(Workspace.id).where(Workspace.slug == workspace)
    result = session.execute(
        update(Repository)
        .where(
            Repository.workspace_id.in_(in_workspace),
            Repository.catalog_refresh_failed_at.is_not(None),
        )
        .values(catalog_refresh_error=None, catalog_refresh_failed_at=None)
        .execution_options(synchronize_session=False)
    )
    return int(getattr(result, "rowcount", 0) or 0)


def stale_repositories(session: Session, limit: int = 50) -> list[StaleRepository]:
    rows = session.execute(
        select(
            Repository.full_name,
            Repository.catalog_refresh_error,
            Repository.catalog_refresh_failed_at,
        )
        .where(Repository.catalog_refresh_failed_at.is_not(None), Repository.deleted_at.is_(None))
        .order_by(Repository.catalog_refresh_failed_at.desc())
        .limit(limit)
    ).all()
    return [StaleRepository(name, reason or "", since or utcnow()) for name, reason, since in rows]


def stale_count(session: Session) -> int:
    return int(
        session.scalar(
            select(func.count())
            .select_from(Repository)
            .where(
                Repository.catalog_refresh_failed_at.is_not(None), Repository.deleted_at.is_(None)
            )
        )
        or 0
    )
