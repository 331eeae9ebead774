"""Knowing that a sync is alive, and that it is the only one of its kind.

A `RunWatch` belongs to one task run (or one CLI command). While it watches a sync run, a
background thread touches the run row every `interval` seconds: `heartbeat_at`, and the calls
spent so far (so a worker killed mid-sync leaves its spend on the row). The same thread keeps
the run's lock alive: one sync per (kind, workspace) at a time, a Redis lock whose expiry is
the staleness limit, so a dead holder frees it exactly when beat may declare its run lost.

Services find the watch of the current task through a context variable (`current_watch`):
they never import workers, and without a watch (tests calling services directly) nothing is
locked or heartbeated.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import cast

import redis
from redis.exceptions import LockError
from redis.lock import Lock
from sqlalchemy import Engine, update
from sqlalchemy.exc import SQLAlchemyError

from app.bitbucket.accounting import CallLedger
from app.bitbucket.budget import KEY_PREFIX
from app.bitbucket.errors import BudgetUnavailable
from app.models import SyncRun, SyncStatus, utcnow

log = logging.getLogger(__name__)

LOCK_PREFIX = f"{KEY_PREFIX}:sync-lock"
LOCK_UNAVAILABLE_RETRY_SECONDS = 30.0
RELEASE_IF_HOLDER_STARTS_WITH = """
local holder = redis.call('get', KEYS[1])
if holder and string.sub(holder, 1, string.len(ARGV[1])) == ARGV[1] then
    return redis.call('del', KEYS[1])
end
return 0
"""

_current: ContextVar[RunWatch | None] = ContextVar("bbsync_run_watch", default=None)


class SyncBusy(Exception):
    """Another sync of the same kind and workspace holds the lock: this one is skipped."""


@dataclass
class _Tracked:
    run_id: int
    ledger: CallLedger
    offset: int  # the run's api_calls = offset + ledger.total


def current_watch() -> RunWatch | None:
    return _current.get()


def lock_name(kind: str, workspace: str) -> str:
    return f"{LOCK_PREFIX}/{kind}/{workspace}"


class RunWatch:
    """Heartbeat, calls spent and lock expiry for the sync runs of one task run."""

    def __init__(
        self,
        engine: Engine,
        redis_client: redis.Redis,
        *,
        task_id: str | None,
        interval: float,
        lock_seconds: float,
    ) -> None:
        self.engine = engine
        self.redis = redis_client
        self.task_id = task_id
        self.interval = interval
        self.lock_seconds = lock_seconds
        self.holder = f"{task_id or 'cli'}@{socket.gethostname()}:{os.getpid()}"
        self._locks: dict[str, Lock] = {}
        self._release_dead = redis_client.register_script(RELEASE_IF_HOLDER_STARTS_WITH)
        self._tracked: _Tracked | None = None
        self._guard = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- the lock -----------------------------------------------------------------------

    def hold(self, kind: str, workspace: str) -> str | None:
        """Take the lock of (kind, workspace); None when taken, else who holds it."""
        name = lock_name(kind, workspace)
        lock = self.redis.lock(name, timeout=self.lock_seconds, blocking=False, thread_local=False)
        try:
            if not lock.acquire(token=self.holder) and not self._take_over(name, lock):
                holder = cast(bytes | None, self.redis.get(name))
                return holder.decode(errors="replace") if holder else "another process"
        except redis.RedisError as exc:
            raise BudgetUnavailable(
                f"sync lock unavailable: Redis did not answer ({type(exc).__name__})",
                retry_after=LOCK_UNAVAILABLE_RETRY_SECONDS,
            ) from exc
        with self._guard:
            self._locks[name] = lock
        self._start()
        return None

    def _take_over(self, name: str, lock: Lock) -> bool:
        """A lock held by an earlier delivery of this same task is held by a dead worker (the
        broker redelivers a task only when its worker is lost): take it over at once."""
        if not self.task_id:
            return False
        dead = f"{self.task_id}@".encode()
        if not cast(int, self._release_dead(keys=[name], args=[dead])):
            return False
        log.warning("sync lock taken over from a dead delivery of this task", extra={"lock": name})
        return bool(lock.acquire(token=self.holder))

    def release(self, kind: str, workspace: str) -> None:
        with self._guard:
            lock = self._locks.pop(lock_name(kind, workspace), None)
        if lock is None:
            return
        try:
            lock.release()
        except (LockError, redis.RedisError):
            # Expired or Redis gone: it frees itself after `lock_seconds` either way.
            log.warning("sync lock not released", extra={"lock": lock.name})

    # -- the run row --------------------------------------------------------------------

    def track(self, run_id: int, ledger: CallLedger, offset: int) -> None:
        with self._guard:
            self._tracked = _Tracked(run_id, ledger, offset)
        self._start()

    def untrack(self) -> None:
        with self._guard:
            self._tracked = None

    def beat(self) -> None:
        """One heartbeat: extend the locks held, touch the tracked run row."""
        with self._guard:
            locks = list(self._locks.values())
            tracked = self._tracked
        for lock in locks:
            try:
                lock.extend(self.lock_seconds, replace_ttl=True)
            except (LockError, redis.RedisError) as exc:
                log.warning("sync lock not extended", extra={"lock": lock.name, "error": str(exc)})
        if tracked is None:
            return
        try:
            with self.engine.begin() as connection:
                connection.execute(
                    update(SyncRun)
                    .where(
                        SyncRun.id == tracked.run_id,
                        SyncRun.status == SyncStatus.RUNNING.value,
                    )
                    .values(
                        heartbeat_at=utcnow(),
                        api_calls=tracked.offset + tracked.ledger.total,
                    )
                )
        except SQLAlchemyError as exc:
            # The database is busy or away: the next beat tries again; only a silence longer
            # than the staleness limit makes the run look lost.
            log.warning(
                "run heartbeat not written", extra={"run": tracked.run_id, "error": str(exc)}
            )

    # -- the thread ---------------------------------------------------------------------

    def _start(self) -> None:
        with self._guard:
            if self._thread is not None:
                return
            self._thread = threading.Thread(
                target=self._loop, name="bbsync-run-heartbeat", daemon=True
            )
            self._thread.start()

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            self.beat()

    def close(self) -> None:
        self._stop.set()
        thread = self._thread
        if thread is not None:
            thread.join(timeout=self.interval + 5)
        for name in list(self._locks):
            kind, workspace = name[len(LOCK_PREFIX) + 1 :].split("/", 1)
            self.release(kind, workspace)


@contextmanager
def watching(watch: RunWatch) -> Iterator[RunWatch]:
    """Make `watch` the current one for the block; stop its thread after."""
    token = _current.set(watch)
    try:
        yield watch
    finally:
        _current.reset(token)
        watch.close()
