"""The shared budget in Data Center mode, in a real Redis: a token bucket per credential that
every process draws from, a reserve only webhook-driven work may spend, pacing at the steady
rate, and a 429 pausing everyone then restarting from an empty bucket."""

from __future__ import annotations

import multiprocessing
import time
from collections.abc import Callable
from typing import Any

import pytest

from app.bitbucket.budget import Priority
from app.bitbucket.errors import BudgetExhausted, BudgetPaused, BudgetUnavailable
from app.bitbucket.token_bucket import TokenBucketBudget
from app.runtime import Runtime
from app.web import create_app
from tests.conftest import api_client


def make_bucket(
    redis_url: str,
    rate: float = 0.001,
    burst: int = 10,
    reserve: int = 2,
    credential: str = "dc-a",
    max_wait: float = 0.0,
) -> TokenBucketBudget:
    return TokenBucketBudget(
        redis_url,
        credential,
        rate_per_second=rate,
        burst=burst,
        reserve=reserve,
        max_wait_seconds=max_wait,
    )


def test_backfill_stops_at_the_reserve_and_webhooks_spend_it(redis_url: str) -> None:
    bucket = make_bucket(redis_url, rate=0.001, burst=10, reserve=2)
    for _ in range(8):
        bucket.acquire(Priority.BACKFILL)
    with pytest.raises(BudgetExhausted) as caught:
        bucket.acquire(Priority.BACKFILL)
    assert (caught.value.retry_after or 0) > 100  # one token back at 0.001/s: ~1000s
    bucket.acquire(Priority.WEBHOOK)
    bucket.acquire(Priority.WEBHOOK)
    with pytest.raises(BudgetExhausted):
        bucket.acquire(Priority.WEBHOOK)
    snapshot = bucket.snapshot()
    assert (snapshot.limit, snapshot.reserve, snapshot.used) == (10, 2, 10)
    assert (snapshot.remaining, snapshot.backfill_remaining) == (0, 0)
    assert snapshot.frees_at is not None and snapshot.paused_until is None


def test_an_empty_bucket_refills_at_the_rate(redis_url: str) -> None:
    bucket = make_bucket(redis_url, rate=20, burst=2, reserve=0)
    bucket.acquire()
    bucket.acquire()
    with pytest.raises(BudgetExhausted) as caught:
        bucket.acquire()
    assert 0 < (caught.value.retry_after or 0) <= 0.06
    time.sleep(0.12)
    bucket.acquire()  # two tokens back at 20/s after 0.1s
    bucket.acquire()


def test_short_waits_are_paced_in_place(redis_url: str) -> None:
    bucket = make_bucket(redis_url, rate=20, burst=5, reserve=0, max_wait=1.0)
    started = time.monotonic()
    for _ in range(15):
        bucket.acquire()
    elapsed = time.monotonic() - started
    print(f"\nbucket figure: 15 calls through a bucket of 5 at 20/s took {elapsed:.2f}s")
    assert elapsed >= 0.45  # ten calls beyond the burst need 10/20 s of refill


def test_buckets_of_different_credentials_are_separate(redis_url: str) -> None:
    first = make_bucket(redis_url, burst=3, reserve=0, credential="one")
    second = make_bucket(redis_url, burst=3, reserve=0, credential="two")
    for _ in range(3):
        first.acquire()
    second.acquire()
    assert first.snapshot().remaining == 0
    assert second.snapshot().remaining == 2


def test_a_429_pauses_every_process_then_starts_from_an_empty_bucket(redis_url: str) -> None:
    one = make_bucket(redis_url, rate=10, burst=50, reserve=0, credential="shared")
    other = make_bucket(redis_url, rate=10, burst=50, reserve=0, credential="shared")
    one.acquire()
    paused = one.pause(1.0)
    assert 0.9 <= paused <= 1.0
    for budget in (one, other):
        for priority in Priority:
            with pytest.raises(BudgetPaused) as caught:
                budget.acquire(priority)
            assert 0 < (caught.value.retry_after or 0) <= 1.0
    assert other.snapshot().paused_until is not None
    time.sleep(1.15)
    other.acquire()  # about one token refilled since the pause ended, not a full burst
    assert other.snapshot().remaining <= 2


def test_a_429_without_retry_after_waits_for_our_bucket_to_refill(redis_url: str) -> None:
    bucket = make_bucket(redis_url, rate=5, burst=60, reserve=0)
    assert 11.5 <= bucket.pause(None) <= 12.0  # 60 tokens at 5/s


def _spend_all(redis_url: str, start: Any, results: Any) -> None:
    bucket = make_bucket(redis_url, rate=0.001, burst=300, reserve=60, credential="shared")
    start.wait()
    granted = refused = 0
    for _ in range(300):
        try:
            bucket.acquire(Priority.BACKFILL)
            granted += 1
        except BudgetExhausted:
            refused += 1
    results.put((granted, refused))


def test_two_processes_never_overspend_the_shared_bucket(redis_url: str) -> None:
    context = multiprocessing.get_context("spawn")
    results: multiprocessing.Queue = context.Queue()
    start = context.Barrier(2)
    workers = [
        context.Process(target=_spend_all, args=(redis_url, start, results)) for _ in range(2)
    ]
    for worker in workers:
        worker.start()
    outcomes = [results.get(timeout=60) for _ in workers]
    for worker in workers:
        worker.join(timeout=30)
    granted = sum(g for g, _ in outcomes)
    assert granted == 300 - 60
    assert all(g > 0 for g, _ in outcomes), "both processes drew from the one bucket"


def test_no_call_goes_out_uncounted_when_redis_is_down() -> None:
    bucket = TokenBucketBudget("redis://127.0.0.1:1/0", "x", rate_per_second=5, burst=5)
    with pytest.raises(BudgetUnavailable) as caught:
        bucket.acquire()
    assert "Redis did not answer" in str(caught.value)


def test_the_budget_api_and_metrics_show_the_data_center_bucket(
    runtime_for: Callable[..., Runtime],
) -> None:
    rt = runtime_for(
        BITBUCKET_DC_URL="https://bitbucket.example.com",
        BITBUCKET_DC_TOKEN="dc-secret",
        BITBUCKET_DC_RATE_PER_SECOND="2",
        BITBUCKET_DC_BURST="20",
    )
    for _ in range(3):
        rt.datacenter_budget.acquire(Priority.BACKFILL)
    response = api_client(create_app(runtime=rt)).get("/api/budget")
    assert response.status_code == 200
    body = response.json
    assert body["resources"]["repositories"]["limit"] == 1000  # Cloud's window, as before
    dc = body["datacenter"]
    assert (dc["host"], dc["rate_per_second"], dc["limit"], dc["reserve"]) == (
        "bitbucket.example.com",
        2.0,
        20,
        4,
    )
    assert dc["used"] == 3 and dc["remaining"] == 17
    assert "dc-secret" not in response.get_data(as_text=True)
    metrics = create_app(runtime=rt).test_client().get("/metrics").get_data(as_text=True)
    assert 'bbsync_budget_used{resource="datacenter"} 3.0' in metrics
    assert 'bbsync_budget_limit{resource="datacenter"} 20.0' in metrics
    assert 'bbsync_budget_paused{resource="datacenter"} 0.0' in metrics
    assert runtime_for().settings.datacenter is None
    assert (
        api_client(create_app(runtime=runtime_for())).get("/api/budget").json["datacenter"] is None
    )
