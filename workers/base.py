"""The base task: owns the runtime, the unit of work (session + commit) and the retry policy.

Tasks stay thin like views: open a unit of work, call a service in `app.sync`, return counts.
Retry by error class: budget/429/5xx (`RetryLater`) retry with the countdown the error
carries or an exponential backoff; 4xx and everything else fail at once for an operator.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from celery import Celery, Task
from sqlalchemy.orm import Session

from app.bitbucket.errors import RetryLater
from app.db import session_scope
from app.logs import log_fields
from app.runtime import Runtime

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

    @contextmanager
    def retrying(self, **fields: Any) -> Iterator[None]:
        """Turn `RetryLater` into a Celery retry with a countdown; the worker never sleeps.
        `fields` (workspace, delivery, repository…) go on every log line of the block."""
        try:
            with log_fields(task=self.name, task_id=self.request.id, **fields):
                yield
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
