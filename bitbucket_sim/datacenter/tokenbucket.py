"""Data Center's rate limiting: one token bucket per user, refilled at a steady rate."""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class TokenAdmission:
    """The answer to one request: allowed, or the whole seconds until a token is back."""

    allowed: bool
    retry_after: int
    remaining: int


class TokenBuckets:
    """Buckets of `size` tokens refilled at `rate` tokens/s; `rate` None means no limiting."""

    def __init__(
        self, rate: float | None, size: int, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._rate = rate
        self._size = size
        self._clock = clock
        self._lock = threading.Lock()
        self._buckets: dict[str, tuple[float, float]] = {}  # user -> (tokens, stamp)

    @property
    def enabled(self) -> bool:
        return self._rate is not None

    def configure(self, rate: float | None, size: int) -> None:
        with self._lock:
            self._rate, self._size = rate, size
            self._buckets.clear()

    def reset(self) -> None:
        with self._lock:
            self._buckets.clear()

    def try_take(self, user: str) -> TokenAdmission:
        """Take one token from `user`'s bucket (a new bucket starts full)."""
        with self._lock:
            rate = self._rate
            if rate is None:
                return TokenAdmission(True, 0, self._size)
            now = self._clock()
            tokens, stamp = self._buckets.get(user, (float(self._size), now))
            tokens = min(float(self._size), tokens + (now - stamp) * rate)
            if tokens < 1.0:
                self._buckets[user] = (tokens, now)
                return TokenAdmission(False, max(1, math.ceil((1.0 - tokens) / rate)), 0)
            tokens -= 1.0
            self._buckets[user] = (tokens, now)
            return TokenAdmission(True, 0, int(tokens))
