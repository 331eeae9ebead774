"""Tasks that kill their worker: counted per delivery, parked after the second death.

A worker killed mid-task (the OOM killer, a SIGKILL) never runs the task's `finally`: the
broker hands the same task (same id) to the next worker, which may die the same way, forever.
`DeliveryCount` makes that visible: a Redis counter per task id, raised before each run and
cleared when a run ends any way Python sees. Whatever is left in it on the next delivery is
the number of deliveries that died with their worker.
"""

from __future__ import annotations

import logging
from typing import Any, cast

import redis
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from app.bitbucket.budget import KEY_PREFIX
from app.models import ParkedTask, SyncRun, SyncStatus, utcnow

log = logging.getLogger(__name__)

DELIVERIES_PREFIX = f"{KEY_PREFIX}:task-deliveries"
DEATHS_BEFORE_PARKING = 2
# Long past the broker's visibility timeout: a redelivery always finds the count.
COUNT_TTL_SECONDS = 3 * 24 * 3600
MAX_ARGS_CHARS = 2000


class DeliveryCount:
    def __init__(self, redis_client: redis.Redis, task_id: str) -> None:
        self.redis = redis_client
        self.key = f"{DELIVERIES_PREFIX}/{task_id}"

    def start(self) -> int:
        """Count this delivery; returns how many earlier deliveries died unfinished."""
        pipe = self.redis.pipeline()
        pipe.incr(self.key)
        pipe.expire(self.key, COUNT_TTL_SECONDS)
        count = cast(int, pipe.execute()[0])
        return count - 1

    def clear(self) -> None:
        try:
            self.redis.delete(self.key)
        except redis.RedisError:
            # Left behind, it would read as one death if this task is delivered again.
            log.warning("task delivery count not cleared", extra={"key": self.key})


def park_task(session: Session, task_id: str, task_name: str, args: list[Any], deaths: int) -> str:
    """Record the task as parked (and a sync run it was running); returns the reason."""
    reason = (
        f"parked: {deaths} deliveries of this task died with their worker "
        "(killed: out of memory or a signal); not run again"
    )
    shown = [a if len(repr(a)) <= MAX_ARGS_CHARS else repr(a)[:MAX_ARGS_CHARS] for a in args]
    existing = session.scalars(select(ParkedTask).where(ParkedTask.task_id == task_id)).first()
    if existing is None:
        session.add(
            ParkedTask(
                task_id=task_id,
                task_name=task_name,
                args=shown,
                reason=reason,
                deliveries=deaths + 1,
                parked_at=utcnow(),
            )
        )
    session.execute(
        update(SyncRun)
        .where(SyncRun.task_id == task_id, SyncRun.status == SyncStatus.RUNNING.value)
        .values(status=SyncStatus.PARKED.value, error=reason, finished_at=utcnow())
        .execution_options(synchronize_session=False)
    )
    return reason
