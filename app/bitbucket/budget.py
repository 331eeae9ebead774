"""The one shared rate budget per Bitbucket credential, kept in Redis.

Bitbucket counts calls in a rolling one-hour window per credential. Every bbsync process on
every machine takes a slot here before each call, so together they never pass the limit.
The window is a moving-window log kept by the `limits` library (its Redis storage runs the
check-and-take as one Lua script, atomic across processes); we call its storage directly so
that two ceilings share one log: webhook-driven work may use the whole limit, backfill stops
short of it by the reserve.

Bitbucket keeps a window per resource: raw file content (`/src/`) has its own (5,000/h) beside
the one every API call counts in (1,000/h), so each `Resource` gets its own `RateBudget`: file
reads never starve API calls, nor the reverse. When Bitbucket announces a limit in
`X-RateLimit-Limit` (scaled limits for access tokens on larger workspaces), the window follows
it for every process (`learn`), never below a configured floor.

A 429 from Bitbucket pauses that resource's budget for everyone: until `Retry-After` when
Bitbucket sends one, otherwise until the oldest call in our window ages out. Callers that find
no budget get `BudgetExhausted`/`BudgetPaused` carrying `retry_after`; they never sleep here.

Without `Retry-After` the pause is a guess that can be an hour: right for backfill, too long
for a user waiting on a webhook. So during such a pause webhook-driven work probes: every
`probe_seconds` one call (one for every process together) goes out, and when Bitbucket
answers it the pause is lifted for webhook work (backfill keeps waiting).
"""

from __future__ import annotations

import enum
import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any, cast

import redis
from limits.storage import RedisStorage

from app.bitbucket.errors import BudgetExhausted, BudgetPaused, BudgetUnavailable

log = logging.getLogger(__name__)

KEY_PREFIX = "bbsync"
UNAVAILABLE_RETRY_SECONDS = 30.0


# An announced limit is trusted for a day after it was last seen.
LEARNED_LIMIT_SECONDS = 24 * 3600


class Resource(enum.StrEnum):
    API = "repositories"  # every API call (Bitbucket's `/2.0/repositories/*` window)
    RAW = "raw"  # raw file content: `/src/` reads


def resource_for(path: str) -> Resource:
    """The Bitbucket window a call to `path` (relative to the API base) counts in."""
    return Resource.RAW if "/src/" in path.split("?", 1)[0] else Resource.API


class Priority(enum.StrEnum):
    WEBHOOK = "webhook"  # may spend the reserve: a user is waiting for this change
    BACKFILL = "backfill"  # reconciliation and full syncs: stops short of the reserve


@dataclass(frozen=True)
class BudgetSnapshot:
    """The budget as every process sees it now."""

    limit: int
    reserve: int
    used: int
    remaining: int
    backfill_remaining: int
    window_seconds: int
    frees_at: datetime | None  # when the oldest call in the window ages out
    paused_until: datetime | None
    resource: str = Resource.API.value
    configured_limit: int | None = None  # from settings; `limit` differs when Bitbucket announced
    announced_limit: int | None = None  # the last `X-RateLimit-Limit` seen, when fresh

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        for key in ("frees_at", "paused_until"):
            value = data[key]
            data[key] = value.isoformat() if value else None
        return data


class RateBudget:
    """Take slots from the shared window before calling Bitbucket with one credential."""

    def __init__(
        self,
        redis_url: str,
        credential_fingerprint: str,
        limit: int,
        window_seconds: int = 3600,
        reserve: int = 0,
        redis_client: redis.Redis | None = None,
        resource: Resource = Resource.API,
        floor: int = 1,
        probe_seconds: float = 60.0,
    ) -> None:
        if limit <= 0:
            raise ValueError("limit must be positive")
        if not 0 <= reserve < limit:
            raise ValueError("reserve must be at least 0 and below the limit")
        self.configured_limit = limit
        self.configured_reserve = reserve
        self.window_seconds = window_seconds
        self.resource = Resource(resource)
        self.floor = max(1, floor)
        self.redis = redis_client or redis.Redis.from_url(redis_url)
        self._storage = RedisStorage(
            redis_url, connection_pool=self.redis.connection_pool, key_prefix=KEY_PREFIX
        )
        self.fingerprint = credential_fingerprint
        # The API window keeps the keys it had before raw content got a window of its own.
        suffix = "" if self.resource is Resource.API else f"/{self.resource.value}"
        self._window_key = f"budget/{credential_fingerprint}{suffix}"
        self._pause_key = f"{KEY_PREFIX}:budget-paused/{credential_fingerprint}{suffix}"
        self._learned_key = f"{KEY_PREFIX}:budget-learned/{credential_fingerprint}/{resource}"
        self._announced: int | None = None  # as last read from Redis by this process
        self._learned_written = (0, 0.0)  # (value, when) this process last wrote
        # Set while the pause is a guess (no Retry-After): webhook work may probe.
        self._blind_key = f"{self._pause_key}/blind"
        self._probe_key = f"{self._pause_key}/probe"  # the next probe waits for its expiry
        self._lifted_key = f"{self._pause_key}/lifted"  # a probe got through: webhooks go on
        self.probe_seconds = probe_seconds

    @property
    def limit(self) -> int:
        """The window's limit: Bitbucket's announced one when known, else the configured."""
        return self._effective(self._announced)[0]

    @property
    def reserve(self) -> int:
        return self._effective(self._announced)[1]

    def _effective(self, announced: int | None) -> tuple[int, int]:
        if announced is None:
            return self.configured_limit, self.configured_reserve
        limit = max(self.floor, announced)
        reserve = min(limit - 1, self.configured_reserve * limit // self.configured_limit)
        return limit, reserve

    def ceiling(self, priority: Priority) -> int:
        webhook = Priority(priority) is Priority.WEBHOOK
        return self.limit if webhook else self.limit - self.reserve

    def learn(self, announced: int) -> None:
        """Follow the limit Bitbucket announced (`X-RateLimit-Limit`) in every process."""
        if announced <= 0:
            return
        value, when = self._learned_written
        now = time.time()
        self._announced = announced
        if value == announced and now - when < 60:
            return  # written a moment ago: spare Redis a write per call
        try:
            self.redis.set(self._learned_key, str(announced), ex=LEARNED_LIMIT_SECONDS)
        except redis.RedisError:
            # The call it came with was made and answered: sharing the limit can wait for the
            # next answer (the budget reports Redis trouble on the next `acquire`).
            log.warning("announced limit not shared: Redis did not answer")
            return
        self._learned_written = (announced, now)

    def _read_state(self) -> float:
        """Refresh the announced limit and return the seconds left of a 429 pause."""
        pause, learned = cast(
            list[bytes | None], self.redis.mget(self._pause_key, self._learned_key)
        )
        self._announced = int(learned) if learned else None
        return 0.0 if pause is None else max(0.0, float(pause) - time.time())

    def acquire(self, priority: Priority = Priority.BACKFILL, cost: int = 1) -> bool:
        """Take `cost` slots or raise `BudgetPaused` / `BudgetExhausted` with `retry_after`.
        True when the call is a probe through a pause: report its answer with `answered`.

        When Redis is unreachable no call may go out uncounted: `BudgetUnavailable`.
        """
        with shared_state("rate budget"):
            return self._acquire(priority, cost)

    def _acquire(self, priority: Priority, cost: int) -> bool:
        probe = False
        paused_for = self._read_state()
        if paused_for > 0:
            probe = self._through_pause(Priority(priority), paused_for)
        ceiling = self.ceiling(priority)
        if self._storage.acquire_entry(self._window_key, ceiling, self.window_seconds, cost):
            return probe
        # The slot that frees first for this ceiling is the ceiling-th newest call.
        oldest, count = self._storage.get_moving_window(
            self._window_key, ceiling, self.window_seconds
        )
        retry_after = max(1.0, oldest + self.window_seconds - time.time()) if count else 1.0
        raise BudgetExhausted(
            f"{priority.value} budget for {self.resource.value} used up ({count}/{ceiling} "
            "calls in the window); "
            f"frees in {retry_after:.0f}s",
            retry_after=retry_after,
        )

    def _through_pause(self, priority: Priority, paused_for: float) -> bool:
        """Whether a call may go out during a pause (True: as the probe), else raise."""
        if priority is Priority.WEBHOOK and self.redis.exists(self._blind_key):
            if self.redis.exists(self._lifted_key):
                return False  # a probe got an answer: webhook work goes on
            if self.redis.set(self._probe_key, "1", nx=True, px=int(self.probe_seconds * 1000)):
                return True
            wait = max(0.1, int(cast(int, self.redis.pttl(self._probe_key))) / 1000)
            raise BudgetPaused(
                f"Bitbucket rate limit hit ({self.resource.value}); webhook calls probe again "
                f"in {wait:.0f}s",
                retry_after=min(paused_for, wait),
            )
        raise BudgetPaused(
            f"Bitbucket rate limit hit ({self.resource.value}); all calls paused for "
            f"{paused_for:.0f}s",
            retry_after=paused_for,
        )

    def answered(self) -> None:
        """The probe got an answer that was not a 429: webhook work resumes; backfill keeps
        waiting for the pause to end."""
        until_ms = cast(bytes | None, self.redis.get(self._pause_key))
        if until_ms is None:
            return
        self.redis.set(self._lifted_key, "1", pxat=int(float(until_ms) * 1000) + 1)

    def paused_for(self) -> float:
        """Seconds left of a 429 pause (0 when not paused)."""
        raw = cast(bytes | None, self.redis.get(self._pause_key))
        if raw is None:
            return 0.0
        return max(0.0, float(raw) - time.time())

    def pause(self, retry_after: float | None = None) -> float:
        """Pause every process after a 429; returns the pause in seconds.

        With no `Retry-After`, wait until the window frees: the oldest call we made in the
        last window ages out (a whole window when we made none, e.g. another tool spent it).
        """
        with shared_state("rate budget pause"):
            return self._pause(retry_after)

    def _pause(self, retry_after: float | None) -> float:
        now = time.time()
        if retry_after is not None and retry_after >= 0:
            until = now + retry_after
        else:
            oldest, count = self._storage.get_moving_window(
                self._window_key, self.limit, self.window_seconds
            )
            until = oldest + self.window_seconds if count else now + self.window_seconds
        until = max(until, now + 1.0)
        current = cast(bytes | None, self.redis.get(self._pause_key))
        if current is None or float(current) < until:
            self.redis.set(self._pause_key, repr(until), pxat=int(until * 1000) + 1)
        longest = max(until, float(current) if current is not None else 0.0)
        pipe = self.redis.pipeline()
        pipe.delete(self._lifted_key)  # a 429 again: webhook work waits for the next probe
        if retry_after is None or retry_after < 0:
            pipe.set(self._blind_key, "1", pxat=int(longest * 1000) + 1)
            pipe.set(self._probe_key, "1", px=int(self.probe_seconds * 1000))
        pipe.execute()
        return until - now

    def snapshot(self) -> BudgetSnapshot:
        paused_for = self._read_state()
        oldest, used = self._storage.get_moving_window(
            self._window_key, self.limit, self.window_seconds
        )
        now = time.time()
        return BudgetSnapshot(
            resource=self.resource.value,
            configured_limit=self.configured_limit,
            announced_limit=self._announced,
            limit=self.limit,
            reserve=self.reserve,
            used=used,
            remaining=max(0, self.limit - used),
            backfill_remaining=max(0, self.limit - self.reserve - used),
            window_seconds=self.window_seconds,
            frees_at=_utc(oldest + self.window_seconds) if used else None,
            paused_until=_utc(now + paused_for) if paused_for > 0 else None,
        )

    def reset(self) -> None:
        """Forget every call and pause (tests and `bbsync budget --reset` only)."""
        self._storage.clear(self._window_key)
        self.redis.delete(
            self._pause_key, self._learned_key, self._blind_key, self._probe_key, self._lifted_key
        )
        self._announced = None
        self._learned_written = (0, 0.0)


@contextmanager
def shared_state(what: str) -> Iterator[None]:
    """A Redis fault while reading or writing shared state (`what`) means "retry later":
    `BudgetUnavailable`, which tasks turn into a retry with a countdown, never a failure."""
    try:
        yield
    except redis.RedisError as exc:
        raise BudgetUnavailable(
            f"{what} unavailable: Redis did not answer ({type(exc).__name__})",
            retry_after=UNAVAILABLE_RETRY_SECONDS,
        ) from exc


def _utc(timestamp: float) -> datetime:
    return datetime.fromtimestamp(timestamp, tz=UTC)
