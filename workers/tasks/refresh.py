"""The catalog read of one repository a push (or a rename, a new repository) asks for:
coalesced per repository in Redis, run on the webhook reserve, retried with backoff."""

from __future__ import annotations

import logging
from typing import Any

import redis
from celery import shared_task
from sqlalchemy.orm import Session

from app.bitbucket.budget import Priority, shared_state
from app.bitbucket.errors import (
    BudgetExhausted,
    BudgetPaused,
    BudgetUnavailable,
    RateLimited,
    RetryLater,
)
from app.models import Repository, Workspace
from app.ops.logs import log_fields
from app.sync.catalog.phase import CatalogSync
from app.sync.datacenter import DataCenterCatalogSync, is_datacenter_workspace
from app.sync.refresh_failures import clear_refresh_failure, record_refresh_failure
from app.task_names import REFRESH_REPOSITORY_CATALOG
from workers.base import BbsyncTask

log = logging.getLogger(__name__)
REFRESH_KEY_PREFIX = "bbsync:catalog-refresh/"


def coalesced_send(
    task: BbsyncTask,
    window: str,
    window_seconds: float,
    name: str,
    now_args: list[Any],
    trailing_args: list[Any],
    **log_extra: Any,
) -> str:
    """Send `name` at once after a quiet spell, or once at the end of the window `window`
    (a Redis key) for everything asked within it: "now", "trailing" or "coalesced"."""
    redis_client = task.runtime.redis
    window_ms = int(window_seconds * 1000)
    try:
        if redis_client.set(window, "1", nx=True, px=window_ms):
            when: str | float = "now"
        else:
            trailing = f"{window}/trailing"
            if not redis_client.set(trailing, "1", nx=True, px=window_ms + 60_000):
                return "coalesced"
            when = max(0, int(redis_client.pttl(window) or 0)) / 1000  # type: ignore[arg-type]
    except redis.RedisError:
        # Coalescing is an optimisation: without Redis the task goes at once, uncoalesced.
        log.warning("not coalesced: Redis did not answer", extra={"task": name, **log_extra})
        when = "now"
    if when == "now":
        task.app.send_task(name, args=now_args)
        return "now"
    task.app.send_task(name, args=trailing_args, countdown=when)
    return "trailing"


def schedule_catalog_refresh(task: BbsyncTask, repository_id: int, delivery_id: int) -> str:
    """Coalesce the catalog reads of a burst of pushes to one repository.

    The first push after a quiet spell is read at once (fresh within a second); pushes within
    the next `push_coalesce_seconds` share one trailing read at the end of that window, which
    sees all of them. So a burst costs at most two reads per window, however many pushes.
    `delivery_id` is the delivery the read answers for: marked failed if the read never works.
    """
    return coalesced_send(
        task,
        f"{REFRESH_KEY_PREFIX}{repository_id}",
        task.runtime.settings.push_coalesce_seconds,
        REFRESH_REPOSITORY_CATALOG,
        [repository_id, False, delivery_id],
        [repository_id, True, delivery_id],
        delivery=delivery_id,
    )


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
                result = _catalog_sync(self, session, repository_id).refresh_repository(
                    repository_id
                )
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


def _catalog_sync(task: BbsyncTask, session: Session, repository_id: int) -> CatalogSync:
    """The catalog phase of the repository's source: Data Center's for a `{host}/{KEY}`
    workspace, Cloud's otherwise; on the webhook reserve either way."""
    rt = task.runtime
    repo = session.get(Repository, repository_id)
    ws = session.get(Workspace, repo.workspace_id) if repo is not None else None
    if ws is not None and is_datacenter_workspace(ws.slug):
        return DataCenterCatalogSync(
            rt.datacenter(Priority.WEBHOOK),
            session,
            session.commit,
            rt.settings,
            rt.datacenter_settings,
        )
    return CatalogSync(rt.bitbucket(Priority.WEBHOOK), session, session.commit, rt.settings)


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
