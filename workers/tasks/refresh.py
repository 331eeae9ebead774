"""The catalog read of one repository a push (or a rename, a new repository) asks for:
coalesced per repository in Redis, run on the webhook reserve, retried with backoff."""

from __future__ import annotations

import logging
from typing import Any

import redis
from celery import shared_task

from app.bitbucket.budget import Priority, shared_state
from app.bitbucket.errors import (
    BudgetExhausted,
    BudgetPaused,
    BudgetUnavailable,
    RateLimited,
    RetryLater,
)
from app.ops.logs import log_fields
from app.sync.catalog.phase import CatalogSync
from app.sync.refresh_failures import clear_refresh_failure, record_refresh_failure
from app.task_names import REFRESH_REPOSITORY_CATALOG
from workers.base import BbsyncTask

log = logging.getLogger(__name__)
REFRESH_KEY_PREFIX = "bbsync:catalog-refresh/"


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
