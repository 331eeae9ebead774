"""The base task: owns the runtime, the unit of work (session + commit) and the retry policy.

Tasks stay thin like views: open a unit of work, call a service in `app.sync`, return counts.
Retry by error class: budget/429/5xx (`RetryLater`) retry with the countdown the error
carries or an exponential backoff; 4xx and everything else fail at once for an operator.

Every delivery of a task is counted in Redis (keyed on the task id) before it runs, and the
count is cleared when the run ends in any way Python sees (success, retry, failure). So a
count left over means earlier deliveries died with their worker (SIGKILL, OOM killer): with
`acks_late` and `reject_on_worker_lost` such a task would come back forever; after
`DEATHS_BEFORE_PARKING` deaths it is parked instead (a `parked_tasks` row, its sync run
marked `parked`), for an operator to see in `bbsync status` and `/metrics`.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import redis
from celery import Celery, Task
from sqlalchemy.orm import Session

from app.bitbucket.errors import RetryLater
from app.db import session_scope
from app.ops.logs import log_fields
from app.runtime import Runtime
from app.sync.liveness import RunWatch, SyncBusy, watching
from app.sync.parking import DEATHS_BEFORE_PARKING, DeliveryCount, park_task

log = logging.getLogger(__name__)

_runtime: Runtime | None = None

MAX_BACKOFF_SECONDS = 600


def bind_runtime(app: Celery, runtime: Runtime) -> None:
    """Make `runtime` the one every task of this process uses."""
    global _runtime
    _runtime = runtime
    app.conf.bbsync_runtime_bound = True


def current_runtime() -> Runtime | None:
    return _runtime


class BbsyncTask(Task):
    acks_late = True
    reject_on_worker_lost = True
    max_retries = 48

    @property
    def runtime(self) -> Runtime:
        if _runtime is None:
            raise RuntimeError("no runtime bound: start workers with `celery -A workers.main`")
        return _runtime

    @contextmanager
    def unit_of_work(self) -> Iterator[Session]:
        """A session for this task run: committed on success, rolled back on error."""
        with session_scope(self.runtime.sessions) as session:
            yield session

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        task_id = self.request.id
        if not task_id or self.request.is_eager or _runtime is None:
            return super().__call__(*args, **kwargs)
        deliveries = DeliveryCount(self.runtime.redis, task_id)
        try:
            deaths = deliveries.start()
        except redis.RedisError:
            # Without Redis the deaths cannot be counted; the task itself decides what a
            # Redis fault means for its work (a retry, for everything that needs the budget).
            log.warning("task deliveries not counted", extra={"task": self.name})
            return super().__call__(*args, **kwargs)
        if deaths >= DEATHS_BEFORE_PARKING:
            with self.unit_of_work() as session:
                reason = park_task(session, task_id, self.name, list(args), deaths)
            deliveries.clear()
            log.error("task parked", extra={"task": self.name, "task_id": task_id})
            return {"parked": reason}
        try:
            return super().__call__(*args, **kwargs)
        finally:
            deliveries.clear()

    @contextmanager
    def retrying(self, **fields: Any) -> Iterator[None]:
        """Turn `RetryLater` into a Celery retry with a countdown; the worker never sleeps.
        `fields` (workspace, delivery, repository…) go on every log line of the block.

        Sync runs inside are watched (heartbeat, calls, one per kind and workspace); a sync
        skipped because another holds its lock ends the block quietly (its run row says so).
        """
        settings = self.runtime.settings
        watch = RunWatch(
            self.runtime.engine,
            self.runtime.redis,
            task_id=self.request.id,
            interval=settings.run_heartbeat_seconds,
            lock_seconds=settings.run_stale_seconds,
        )
        try:
            with log_fields(task=self.name, task_id=self.request.id, **fields), watching(watch):
                yield
        except SyncBusy as exc:
            log.info("task skipped", extra={"task": self.name, "reason": str(exc)})
        except RetryLater as exc:
            countdown = self.countdown(exc)
            log.info(
                "task will retry",
                extra={"task": self.name, "reason": str(exc), "countdown": round(countdown)},
            )
            raise self.retry(exc=exc, countdown=countdown) from None

    def countdown(self, exc: RetryLater) -> float:
        if exc.retry_after is not None:
            # A little jitter so paused tasks don't all come back in the same second.
            return exc.retry_after + random.uniform(0, 5)
        retries = int(self.request.retries or 0)
        return random.uniform(0, min(MAX_BACKOFF_SECONDS, 5 * 2**retries))
