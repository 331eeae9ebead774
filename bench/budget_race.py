"""The process body of the budget race in `make bench` (importable, as spawn requires)."""

from __future__ import annotations

import os
from typing import Any

from app.bitbucket.budget import Priority, RateBudget
from app.bitbucket.errors import BudgetExhausted

REDIS_URL = os.environ.get("BBSYNC_BENCH_REDIS", "redis://127.0.0.1:6379/14")


def race(limit: int, reserve: int, start: Any, results: Any) -> None:
    budget = RateBudget(REDIS_URL, "bench-race", limit=limit, reserve=reserve)
    budget.snapshot()
    start.wait(timeout=30)
    granted = 0
    for _ in range(limit):
        try:
            budget.acquire(Priority.BACKFILL)
            granted += 1
        except BudgetExhausted:
            pass
    results.put(granted)
