"""The shared budget in Data Center mode: a token bucket per credential, kept in Redis.

Bitbucket Data Center has no hourly window. When an admin turns rate limiting on, each user
gets a token bucket (Atlassian's proposed default: 60 tokens, refilled at 5 a second) and a
call finding it empty gets 429 with `Retry-After`; many instances run without any limit. So
bbsync keeps a bucket of its own per (server, credential), configured at or below the
server's, which every process on every machine takes from: a Lua script refills and takes in
one step, on Redis's clock, so processes with skewed clocks still share one rate.

It has the interface of `RateBudget` (the client cannot tell them apart) and keeps its 429
pause: a 429 pauses every process for `Retry-After` (or, without one, the time our own bucket
takes to fill: seconds, not the hour a Cloud window can take, so webhook work needs no probe
through it), and empties the bucket so that calls resume at the steady rate, not in a burst.
The webhook reserve is a floor: backfill takes a token only while more than the reserve is
left, webhook-driven work may take the last one.

A bucket refills in fractions of a second, so a wait shorter than `max_wait_seconds` is slept
in place: a walk over a thousand repositories is paced at the configured rate instead of
retrying its task every few calls. Longer waits raise `BudgetExhausted` as the window does.
"""

from __future__ import annotations

import math
import time
from datetime import UTC, datetime
from typing import cast

import redis

from app.bitbucket.budget import (
    KEY_PREFIX,
    BudgetSnapshot,
    Priority,
    RateBudget,
    Resource,
    shared_state,
)
from app.bitbucket.errors import BudgetExhausted

SNAPSHOT_RESOURCE = "datacenter"  # how the bucket shows beside Cloud's windows (metrics, API)

# KEYS[1]: the bucket (hash: tokens, at). ARGV: rate per second, burst, cost, floor.
# Returns {taken (0/1), tokens left as a string} (Lua numbers become integers in replies).
_TAKE = """
local clock = redis.call('TIME')
local now = tonumber(clock[1]) + tonumber(clock[2]) / 1000000
local rate = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local cost = tonumber(ARGV[3])
local floor = tonumber(ARGV[4])
local state = redis.call('HMGET', KEYS[1], 'tokens', 'at')
local tokens = tonumber(state[1])
local at = tonumber(state[2])
if tokens == nil or at == nil then
  tokens = burst
  at = now
end
if now > at then
  tokens = math.min(burst, tokens + (now - at) * rate)
  at = now
end
local taken = 0
if cost > 0 and tokens - cost >= floor then
  tokens = tokens - cost
  taken = 1
end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'at', tostring(at))
redis.call('PEXPIRE', KEYS[1], math.ceil((at - now + burst / rate) * 1000) + 1000)
return {taken, tostring(tokens)}
"""

# KEYS[1]: the bucket. ARGV: seconds until it starts refilling. Empties it until then.
_DRAIN = """
local clock = redis.call('TIME')
local now = tonumber(clock[1]) + tonumber(clock[2]) / 1000000
local at = now + tonumber(ARGV[1])
redis.call('HSET', KEYS[1], 'tokens', '0', 'at', tostring(at))
redis.call('PEXPIRE', KEYS[1], math.ceil((at - now + tonumber(ARGV[2])) * 1000) + 1000)
return 1
"""


class TokenBucketBudget(RateBudget):
    """Take tokens from the shared bucket of one Data Center credential before each call."""

    def __init__(
        self,
        redis_url: str,
        credential_fingerprint: str,
        rate_per_second: float,
        burst: int,
        reserve: int = 0,
        redis_client: redis.Redis | None = None,
        probe_seconds: float = 60.0,
        max_wait_seconds: float = 2.0,
    ) -> None:
        if rate_per_second <= 0:
            raise ValueError("rate_per_second must be positive")
        if burst <= 0:
            raise ValueError("burst must be positive")
        super().__init__(
            redis_url,
            credential_fingerprint,
            limit=burst,
            # Reported as the budget's window: the time an empty bucket takes to fill.
            window_seconds=max(1, math.ceil(burst / rate_per_second)),
            reserve=reserve,
            redis_client=redis_client,
            resource=Resource.API,  # Data Center has one bucket for every call
            probe_seconds=probe_seconds,
        )
        self.rate_per_second = rate_per_second
        self.burst = burst
        self.max_wait_seconds = max_wait_seconds
        self._bucket_key = f"{KEY_PREFIX}:bucket/{credential_fingerprint}"
        self._take = self.redis.register_script(_TAKE)
        self._drain = self.redis.register_script(_DRAIN)

    def learn(self, announced: int) -> None:
        """Data Center announces no limit: nothing to follow."""

    def _tokens(self, cost: int, floor: int) -> tuple[bool, float]:
        taken, left = cast(
            list[bytes | int],
            self._take(
                keys=[self._bucket_key],
                args=[repr(self.rate_per_second), self.burst, cost, floor],
            ),
        )
        return int(taken) == 1, float(left)

    def _acquire(self, priority: Priority, cost: int) -> bool:
        priority = Priority(priority)
        floor = 0 if priority is Priority.WEBHOOK else self.reserve
        if cost > self.burst - floor:
            raise ValueError(f"a cost of {cost} never fits a bucket of {self.burst - floor}")
        probe = False
        paused_for = self._read_state()
        if paused_for > 0:
            probe = self._through_pause(priority, paused_for)
        while True:
            taken, left = self._tokens(cost, floor)
            if taken:
                return probe
            wait = max(0.01, (floor + cost - left) / self.rate_per_second)
            if wait > self.max_wait_seconds:
                raise BudgetExhausted(
                    f"{priority.value} budget used up ({left:.1f} of {self.burst} tokens left, "
                    f"{floor} kept for webhooks at {self.rate_per_second:g}/s); "
                    f"frees in {wait:.1f}s",
                    retry_after=wait,
                )
            time.sleep(wait)

    def _pause(self, retry_after: float | None) -> float:
        """A 429: every process waits `Retry-After` (or until our bucket would be full again:
        Data Center's own bucket is empty, and we do not know its rate), then starts from an
        empty bucket."""
        guess = self.burst / self.rate_per_second
        known = retry_after is not None and retry_after >= 0
        paused = super()._pause(retry_after if known else max(1.0, guess))
        self._drain(keys=[self._bucket_key], args=[repr(paused), repr(guess)])
        return paused

    def snapshot(self) -> BudgetSnapshot:
        with shared_state("rate budget"):
            paused_for = self._read_state()
            _, left = self._tokens(0, 0)
        now = time.time()
        used = max(0, math.ceil(self.burst - left))
        refill = (self.burst - left) / self.rate_per_second + max(0.0, paused_for)
        return BudgetSnapshot(
            resource=SNAPSHOT_RESOURCE,
            configured_limit=self.configured_limit,
            announced_limit=None,
            limit=self.burst,
            reserve=self.reserve,
            used=used,
            remaining=max(0, math.floor(left)),
            backfill_remaining=max(0, math.floor(left - self.reserve)),
            window_seconds=self.window_seconds,
            frees_at=_utc(now + refill) if used else None,
            paused_until=_utc(now + paused_for) if paused_for > 0 else None,
        )

    def reset(self) -> None:
        super().reset()
        self.redis.delete(self._bucket_key)


def _utc(timestamp: float) -> datetime:
    return datetime.fromtimestamp(timestamp, tz=UTC)
