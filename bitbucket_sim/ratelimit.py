"""Bitbucket's rolling-window request limits, per credential and resource."""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from bitbucket_sim.config import RateSpec

REPOSITORIES = "repositories"
RAW = "raw"


@dataclass(frozen=True)
class Admission:
    """The answer to one call: allowed or not, and what the window looks like."""

    allowed: bool
    stamp: float
    limit: RateSpec
    remaining: int


class SlidingWindowLimiter:
    """A sliding log of call times per (bucket, resource); refused calls cost nothing."""

    def __init__(
        self, specs: dict[str, RateSpec], clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._specs = dict(specs)
        self._clock = clock
        self._lock = threading.Lock()
        self._logs: dict[tuple[str, str], deque[float]] = {}

    def set_spec(self, resource: str, spec: RateSpec) -> None:
        with self._lock:
            self._specs[resource] = spec

    def spec(self, resource: str) -> RateSpec:
        with self._lock:
            return self._specs[resource]

    def try_acquire(self, bucket: str, resource: str) -> Admission:
        """Take one call from the window of `bucket` for `resource`, if any is left."""
        with self._lock:
            spec = self._specs[resource]
            now = self._clock()
            log = self._logs.setdefault((bucket, resource), deque())
            horizon = now - spec.window_seconds
            while log and log[0] <= horizon:
                log.popleft()
            if len(log) >= spec.limit:
                return Admission(False, now, spec, 0)
            log.append(now)
            return Admission(True, now, spec, spec.limit - len(log))

    def release(self, bucket: str, resource: str, stamp: float) -> None:
        """Give back a call taken at `stamp` (a 304 that must not cost a call)."""
        with self._lock:
            log = self._logs.get((bucket, resource))
            if log is not None and stamp in log:
                log.remove(stamp)

    def reset(self) -> None:
        """Forget every window."""
        with self._lock:
            self._logs.clear()
