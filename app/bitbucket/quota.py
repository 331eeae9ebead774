"""Quota alerts: told before the budget runs out, and whenever Bitbucket says 429.

After every few calls a process looks at the shared window; past the threshold (default 80 %
of the limit) it warns once per window for every process together (a Redis key marks the
alert as sent): a log line, a counter for `/metrics`, and a Sentry message when Sentry is on.
A 429 always alerts.
"""

from __future__ import annotations

import logging

import redis
import sentry_sdk

from app.bitbucket.budget import KEY_PREFIX, RateBudget

log = logging.getLogger(__name__)

ALERTS_KEY = f"{KEY_PREFIX}:quota-alerts"
CHECK_EVERY = 10


class QuotaWatch:
    def __init__(
        self,
        budget: RateBudget,
        redis_client: redis.Redis,
        warn_percent: int = 80,
        others: tuple[RateBudget, ...] = (),
    ):
        self.budget = budget
        self.budgets = (budget, *others)  # one per Bitbucket resource window
        self.redis = redis_client
        self.warn_percent = warn_percent
        self._calls = 0

    def after_call(self) -> None:
        """Look at the windows every `CHECK_EVERY` calls of this process; alert past the mark."""
        self._calls += 1
        if self._calls % CHECK_EVERY:
            return
        # Alerts are telemetry: a Redis fault here never fails the call that was made (the
        # budget itself reports Redis trouble on the next `acquire`).
        for budget in self.budgets:
            try:
                self._check(budget)
            except redis.RedisError:
                log.warning("quota not checked: Redis did not answer")
                return

    def _check(self, budget: RateBudget) -> None:
        snapshot = budget.snapshot()
        used_percent = 100 * snapshot.used / snapshot.limit
        if used_percent < self.warn_percent:
            return
        suffix = "" if budget is self.budget else f"/{budget.resource.value}"
        marker = f"{ALERTS_KEY}/near-limit/{budget.fingerprint}{suffix}"
        if self.redis.set(marker, "1", nx=True, ex=budget.window_seconds):
            message = (
                f"Bitbucket {budget.resource.value} budget {used_percent:.0f}% used "
                f"({snapshot.used}/{snapshot.limit} calls in the window); backfill stops at "
                f"{snapshot.limit - snapshot.reserve}"
            )
            self._alert("near_limit", message, logging.WARNING)

    def announced_near_limit(self, budget: RateBudget, endpoint: str) -> None:
        """Bitbucket said `X-RateLimit-NearLimit: true`: alert once per window, as above."""
        marker = f"{ALERTS_KEY}/announced-near-limit/{budget.fingerprint}/{budget.resource}"
        try:
            first = self.redis.set(marker, "1", nx=True, ex=budget.window_seconds)
        except redis.RedisError:
            return  # the budget itself reports Redis trouble on the next call
        if first:
            message = (
                f"Bitbucket says the {budget.resource.value} limit is near "
                f"(X-RateLimit-NearLimit on {endpoint})"
            )
            self._alert("near_limit", message, logging.WARNING)

    def rate_limited(self, endpoint: str, pause_seconds: float) -> None:
        self._alert(
            "rate_limited",
            f"Bitbucket answered 429 to {endpoint}; every process paused {pause_seconds:.0f}s",
            logging.ERROR,
        )

    def _alert(self, kind: str, message: str, level: int) -> None:
        log.log(level, message, extra={"alert": kind})
        try:
            self.redis.hincrby(ALERTS_KEY, kind, 1)
        except redis.RedisError:
            log.warning("quota alert not counted", exc_info=True)
        sentry_sdk.capture_message(message, level="warning" if level < logging.ERROR else "error")


def alert_counts(redis_client: redis.Redis) -> dict[str, int]:
    raw = redis_client.hgetall(ALERTS_KEY)
    return {
        (k.decode() if isinstance(k, bytes) else str(k)): int(v)
        for k, v in raw.items()  # type: ignore[union-attr]
    }
