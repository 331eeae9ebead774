"""The shared rate budget in a real Redis: one window for every process, a reserve only
webhook-driven work may spend, a 429 pausing everyone, and clear retry times."""

from __future__ import annotations

import multiprocessing
import time
from typing import Any

import pytest
import redis

from app.bitbucket.budget import Priority, RateBudget
from app.bitbucket.errors import BudgetExhausted, BudgetPaused, BudgetUnavailable


def make_budget(
    redis_url: str,
    limit: int = 10,
    reserve: int = 2,
    window: int = 3600,
    credential: str = "cred-a",
) -> RateBudget:
    return RateBudget(redis_url, credential, limit=limit, window_seconds=window, reserve=reserve)


def test_backfill_stops_at_the_reserve_and_webhooks_spend_it(redis_url: str) -> None:
    budget = make_budget(redis_url, limit=10, reserve=2)
    for _ in range(8):
        budget.acquire(Priority.BACKFILL)
    with pytest.raises(BudgetExhausted) as caught:
        budget.acquire(Priority.BACKFILL)
    assert 3500 < (caught.value.retry_after or 0) <= 3600
    budget.acquire(Priority.WEBHOOK)
    budget.acquire(Priority.WEBHOOK)
    with pytest.raises(BudgetExhausted):
        budget.acquire(Priority.WEBHOOK)
    snapshot = budget.snapshot()
    assert (snapshot.used, snapshot.remaining, snapshot.backfill_remaining) == (10, 0, 0)
    assert snapshot.frees_at is not None


def test_budgets_of_different_credentials_are_separate(redis_url: str) -> None:
    first = make_budget(redis_url, limit=3, reserve=0, credential="one")
    second = make_budget(redis_url, limit=3, reserve=0, credential="two")
    for _ in range(3):
        first.acquire()
    second.acquire()
    assert first.snapshot().remaining == 0
    assert second.snapshot().remaining == 2


def test_calls_free_up_as_the_window_rolls(redis_url: str) -> None:
    budget = make_budget(redis_url, limit=2, reserve=0, window=1)
    budget.acquire()
    budget.acquire()
    with pytest.raises(BudgetExhausted) as caught:
        budget.acquire()
    assert (caught.value.retry_after or 0) <= 1.0
    time.sleep(1.1)  # inherent: the 1 s window must really roll past the first calls
    budget.acquire()


def test_pause_with_retry_after_stops_every_priority(redis_url: str) -> None:
    budget = make_budget(redis_url)
    other_process_view = make_budget(redis_url)
    paused = budget.pause(retry_after=30)
    assert 29 <= paused <= 30
    with pytest.raises(BudgetPaused) as caught:
        other_process_view.acquire(Priority.WEBHOOK)
    assert 28 <= (caught.value.retry_after or 0) <= 30
    assert other_process_view.snapshot().paused_until is not None


def test_pause_without_retry_after_waits_for_the_window_to_free(redis_url: str) -> None:
    budget = make_budget(redis_url, window=600)
    budget.acquire()
    paused = budget.pause(retry_after=None)
    # The oldest call was just made, so a slot frees one window from now.
    assert 590 <= paused <= 600
    empty = make_budget(redis_url, window=600, credential="unused")
    assert 590 <= empty.pause(None) <= 600


def test_a_shorter_pause_never_shortens_a_longer_one(redis_url: str) -> None:
    budget = make_budget(redis_url)
    budget.pause(retry_after=120)
    budget.pause(retry_after=5)
    assert budget.paused_for() > 100


def _spend_all(
    redis_url: str, limit: int, reserve: int, start: Any, results: multiprocessing.Queue
) -> None:
    budget = RateBudget(redis_url, "shared", limit=limit, window_seconds=3600, reserve=reserve)
    budget.snapshot()  # connect before the start line, so both race from the first call
    start.wait(timeout=30)
    granted = refused = 0
    for _ in range(limit):
        try:
            budget.acquire(Priority.BACKFILL)
            granted += 1
        except BudgetExhausted:
            refused += 1
    results.put((granted, refused))


def test_two_processes_never_overspend_the_shared_budget(redis_url: str) -> None:
    limit, reserve = 400, 80
    context = multiprocessing.get_context("spawn")
    results: multiprocessing.Queue = context.Queue()
    start = context.Barrier(2)
    workers = [
        context.Process(target=_spend_all, args=(redis_url, limit, reserve, start, results))
        for _ in range(2)
    ]
    for worker in workers:
        worker.start()
    outcomes = [results.get(timeout=60) for _ in workers]
    for worker in workers:
        worker.join(timeout=30)
    granted = sum(g for g, _ in outcomes)
    print(
        f"\nbudget figure: {granted} calls granted to 2 processes asking {2 * limit} "
        f"against a backfill ceiling of {limit - reserve} (limit {limit}, reserve {reserve})"
    )
    assert granted == limit - reserve
    assert all(g > 0 for g, _ in outcomes), "both processes drew from the one window"
    assert (
        make_budget(redis_url, limit=limit, reserve=reserve, credential="shared").snapshot().used
        == limit - reserve
    )


def test_no_call_goes_out_uncounted_when_redis_is_down() -> None:
    budget = RateBudget("redis://127.0.0.1:1/0", "x", limit=5)
    with pytest.raises(BudgetUnavailable) as caught:
        budget.acquire()
    assert "Redis did not answer" in str(caught.value)
    assert caught.value.retry_after == 30
    with pytest.raises(redis.ConnectionError):
        budget.snapshot()
