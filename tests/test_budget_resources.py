"""One window per Bitbucket resource (API calls, raw file content), each shared by every
process; a 429 pauses only the resource it came from; limits announced by Bitbucket in
`X-RateLimit-Limit` are followed by every process. Real Redis, real simulator."""

from __future__ import annotations

import multiprocessing
from collections.abc import Callable
from typing import Any

import pytest

from app.bitbucket.budget import Priority, RateBudget, Resource, resource_for
from app.bitbucket.client import api_path
from app.bitbucket.errors import BudgetExhausted, BudgetPaused, RateLimited
from app.bitbucket.quota import alert_counts
from app.runtime import Runtime
from bitbucket_sim.testing import SimProcess


def test_calls_count_in_the_window_of_their_resource() -> None:
    assert resource_for("repositories/acme/svc/src/main/catalog-info.yaml") is Resource.RAW
    assert resource_for("repositories/acme/svc/src/abc123/?format=meta") is Resource.RAW
    assert resource_for("repositories/acme/svc") is Resource.API
    assert resource_for("workspaces/acme/search/code?search_query=src/") is Resource.API


def _drain(redis_url: str, resource: str, start: Any, results: multiprocessing.Queue) -> None:
    """One process spends every slot of one resource's window, then tries the other's."""
    budgets = {
        r: RateBudget(redis_url, "shared", limit=limit, reserve=0, resource=Resource(r))
        for r, limit in (("repositories", 20), ("raw", 50))
    }
    for budget in budgets.values():
        budget.snapshot()
    start.wait(timeout=30)
    granted = 0
    try:
        while True:
            budgets[resource].acquire(Priority.BACKFILL)
            granted += 1
    except BudgetExhausted:
        pass
    results.put((resource, granted))


def test_raw_reads_and_api_calls_never_starve_each_other_across_processes(
    redis_url: str,
) -> None:
    context = multiprocessing.get_context("spawn")
    results: multiprocessing.Queue = context.Queue()
    start = context.Barrier(2)
    workers = [
        context.Process(target=_drain, args=(redis_url, resource, start, results))
        for resource in ("raw", "repositories")
    ]
    for worker in workers:
        worker.start()
    granted = dict(results.get(timeout=60) for _ in workers)
    for worker in workers:
        worker.join(timeout=30)
    # Each process got its resource's whole window, whatever the other spent meanwhile.
    assert granted == {"raw": 50, "repositories": 20}
    api = RateBudget(redis_url, "shared", limit=20, reserve=0)
    raw = RateBudget(redis_url, "shared", limit=50, reserve=0, resource=Resource.RAW)
    assert (api.snapshot().used, raw.snapshot().used) == (20, 50)


def test_a_raw_429_pauses_file_reads_only(
    sim_factory: Callable[..., SimProcess], runtime_for: Callable[..., Runtime]
) -> None:
    sim = sim_factory(repos=5, access_token="sim-token", raw_rate_limit="2/h", retry_after=120)
    rt = runtime_for(sim)
    client = rt.bitbucket()
    slug = sim.repositories()[0]["slug"]
    readme = api_path("repositories", "acme", slug, "src", "main", "README.md")
    with pytest.raises(RateLimited):
        for _ in range(5):
            client.request("GET", readme, ok=(200, 404))
    assert rt.raw_budget.snapshot().paused_until is not None
    assert rt.budget.snapshot().paused_until is None
    other_process = runtime_for(sim).bitbucket()
    with pytest.raises(BudgetPaused):
        other_process.request("GET", readme, ok=(200, 404))
    assert other_process.get_json(api_path("repositories", "acme", slug))["slug"] == slug


def test_an_announced_limit_is_followed_by_every_process(
    sim_factory: Callable[..., SimProcess], runtime_for: Callable[..., Runtime]
) -> None:
    # Scaled limits: Bitbucket announces 3,000/h for this access token; bbsync is set to 1,000.
    sim = sim_factory(repos=3, access_token="sim-token", rate_limit="3000/h")
    rt = runtime_for(sim)
    assert rt.budget.snapshot().limit == 1000
    rt.bitbucket().get_json(api_path("repositories", "acme"))
    elsewhere = runtime_for(sim).budget.snapshot()  # another process: a fresh runtime
    assert (elsewhere.limit, elsewhere.configured_limit, elsewhere.announced_limit) == (
        3000,
        1000,
        3000,
    )
    assert elsewhere.reserve == 600  # the reserve keeps its share (20 %)
    fixed = runtime_for(sim, BITBUCKET_LEARN_RATE_LIMIT="false")
    fixed.budget.reset()
    fixed.bitbucket().get_json(api_path("repositories", "acme"))
    assert fixed.budget.snapshot().limit == 1000  # told not to follow Bitbucket's announcement


def test_an_announced_limit_never_goes_below_the_floor_and_near_limit_alerts(
    sim_factory: Callable[..., SimProcess], runtime_for: Callable[..., Runtime]
) -> None:
    sim = sim_factory(repos=3, access_token="sim-token", rate_limit="20/h")
    rt = runtime_for(sim, BITBUCKET_RATE_LIMIT_FLOOR="50")
    client = rt.bitbucket()
    for _ in range(17):  # past 80 % of 20: the simulator says NearLimit
        client.get_json(api_path("repositories", "acme"))
    snapshot = rt.budget.snapshot()
    assert (snapshot.announced_limit, snapshot.limit) == (20, 50)
    assert alert_counts(rt.redis).get("near_limit") == 1


def test_budget_api_and_status_show_each_resource(
    sim_factory: Callable[..., SimProcess], runtime_for: Callable[..., Runtime]
) -> None:
    from app.web import create_app
    from tests.conftest import api_client

    sim = sim_factory(repos=3, access_token="sim-token")
    rt = runtime_for(sim)
    slug = sim.repositories()[0]["slug"]
    rt.bitbucket().request(
        "GET", api_path("repositories", "acme", slug, "src", "main", "README.md"), ok=(200, 404)
    )
    body = api_client(create_app(runtime=rt)).get("/api/budget").json
    assert body["limit"] == 1000 and body["used"] == 0
    assert body["resources"]["raw"]["used"] == 1
    assert body["resources"]["raw"]["limit"] == 5000
    assert body["resources"]["repositories"]["resource"] == "repositories"


def test_a_redis_fault_while_sharing_an_announced_limit_fails_no_call() -> None:
    """The answer is in hand: a limit that cannot be shared now is shared with a later one."""
    budget = RateBudget("redis://127.0.0.1:1/0", "x", limit=1000, reserve=200)
    budget.learn(3000)
    assert budget.limit == 3000  # this process follows it at once
