"""`make bench`: figures for the foundation, each against a baseline measured in the same run.

1. Calls a repository listing costs: bbsync's pages (100 a page, trimmed fields) against
   Bitbucket's default listing (10 a page, full payloads), on the simulator.
2. What the shared budget costs per call: `RateBudget.acquire` against a bare Redis round trip.
3. The budget across processes: calls granted to N processes racing for one window, against
   the ceiling.
4. A full sync's calls, time and memory for 1,000 / 5,000 / 10,000 repositories, cold, warm
   and after 1 % changed, against the Backstage provider's hourly calls (`bench/sync_cost.py`;
   sizes from `BBSYNC_BENCH_SIZES`).
5. Descriptor parsing under the bounds, legitimate and hostile (`bench/descriptors.py`).
6. Backstage's real Bitbucket Cloud provider and URL reader (a Node harness, installed on first
   use) beside bbsync's cold and warm sync: calls per pass and per hour
   (`bench/backstage_peer.py`; `BBSYNC_BENCH_PEER_REPOS`, default 1000).
7. The cold sync under Bitbucket's default limits, time compressed, with a window per resource
   against the old single window and the physical bound (`bench/sync_cost.py --cold-limits`;
   size from `BBSYNC_BENCH_COLD_LIMITS`, default 1000).
8. The steady state under default limits with a real worker and beat, time compressed: calls
   per simulated hour per job and resource, change latency with webhooks off, sweep coverage
   (`bench/steady_state.py`; sizes from `BBSYNC_BENCH_STEADY_SIZES`, default 200, and 2 quiet
   + 2 changing simulated hours: `python -m bench.steady_state --sizes 1000,10000` for more).
9. Push -> entity in Backstage's own catalog API through bbsync's provider module, beside the
   `url` location at Backstage's default processing interval, p50/p95 over 50 pushes
   (`bench/backstage_freshness.py`; `BBSYNC_BENCH_BACKSTAGE_PUSHES`; needs
   `make backstage-install`).
"""

from __future__ import annotations

import multiprocessing
import os
import time

import redis
import requests

from app.bitbucket.budget import Priority, RateBudget
from app.config import settings_from_env
from app.runtime import Runtime
from app.sync.repositories import REPOSITORY_LIST_FIELDS
from bench import backstage_peer, descriptors, steady_state, sync_cost
from bench.budget_race import race
from bitbucket_sim.testing import SimProcess

REDIS_URL = os.environ.get("BBSYNC_BENCH_REDIS", "redis://127.0.0.1:6379/14")
REPOS = int(os.environ.get("BBSYNC_BENCH_REPOS", "1000"))


def listing_cost() -> None:
    with SimProcess(workspace="bench", repos=REPOS, seed=3, access_token="t") as sim:
        baseline_calls, baseline_bytes = 0, 0
        url: str | None = f"{sim.api_url}/repositories/bench"
        while url:
            response = requests.get(url, headers={"Authorization": "Bearer t"}, timeout=30)
            baseline_calls += 1
            baseline_bytes += len(response.content)
            url = response.json().get("next")
        sim.reset_stats()
        rt = Runtime(
            settings_from_env(
                {
                    "REDIS_URL": REDIS_URL,
                    "BITBUCKET_API_URL": sim.api_url,
                    "BITBUCKET_ACCESS_TOKEN": "t",
                    "BITBUCKET_RATE_LIMIT_PER_HOUR": "100000",
                }
            )
        )
        rt.budget.reset()
        client = rt.bitbucket()
        bbsync_bytes = 0
        for page in client.iter_pages("repositories/bench", {"fields": REPOSITORY_LIST_FIELDS}):
            bbsync_bytes += len(repr(page.values))
        calls = sim.stats()["calls_total"]
    print(
        f"listing {REPOS} repositories: bbsync {calls} calls vs default listing "
        f"{baseline_calls} calls (ratio {calls / baseline_calls:.2f}); "
        f"payload ~{bbsync_bytes / max(baseline_bytes, 1):.2f} of the untrimmed bytes"
    )


def budget_overhead(samples: int = 3000) -> None:
    client = redis.Redis.from_url(REDIS_URL)
    start = time.perf_counter()
    for _ in range(samples):
        client.ping()
    ping = (time.perf_counter() - start) / samples
    budget = RateBudget(REDIS_URL, "bench-overhead", limit=samples * 10, redis_client=client)
    budget.reset()
    start = time.perf_counter()
    for _ in range(samples):
        budget.acquire(Priority.BACKFILL)
    acquire = (time.perf_counter() - start) / samples
    budget.reset()
    print(
        f"budget acquire: {acquire * 1e6:.0f} µs per call vs Redis PING {ping * 1e6:.0f} µs "
        f"(ratio {acquire / ping:.1f}); against a ~100 ms Bitbucket call that is "
        f"{acquire / 0.1:.2%}"
    )


def budget_across_processes(processes: int = 4, limit: int = 1000, reserve: int = 200) -> None:
    RateBudget(REDIS_URL, "bench-race", limit=limit, reserve=reserve).reset()
    context = multiprocessing.get_context("spawn")
    results = context.Queue()
    start = context.Barrier(processes)
    workers = [
        context.Process(target=race, args=(limit, reserve, start, results))
        for _ in range(processes)
    ]
    for worker in workers:
        worker.start()
    granted = [results.get(timeout=120) for _ in workers]
    for worker in workers:
        worker.join()
    print(
        f"budget across {processes} processes asking {processes * limit} calls: granted "
        f"{sum(granted)} (per process {granted}) against a backfill ceiling of "
        f"{limit - reserve}; overspend {sum(granted) - (limit - reserve)}"
    )


def main() -> None:
    print("bbsync benchmarks (figures, not pass/fail)")
    listing_cost()
    budget_overhead()
    budget_across_processes()
    descriptors.main()
    sizes = os.environ.get("BBSYNC_BENCH_SIZES", "1000,5000,10000")
    for size in (int(s) for s in sizes.split(",") if s.strip()):
        sync_cost.report(sync_cost.measure(size))
    try:
        backstage_peer.report(
            backstage_peer.measure(int(os.environ.get("BBSYNC_BENCH_PEER_REPOS", "1000")))
        )
    except backstage_peer.HarnessUnavailable as exc:
        print(f"Backstage peer benchmark skipped: {exc}")
    cold = int(os.environ.get("BBSYNC_BENCH_COLD_LIMITS", "1000"))
    if cold:
        sync_cost.report_cold_limits(sync_cost.cold_under_limits(cold))
    steady_state.run(os.environ.get("BBSYNC_BENCH_STEADY_SIZES", "200"), 2, 2, 1)
    # Imported here: it reuses the tests' system fixtures (and picks its own Redis database).
    from bench import backstage_freshness

    if backstage_freshness.CLI.exists():
        every = 3.0
        pushes = int(os.environ.get("BBSYNC_BENCH_BACKSTAGE_PUSHES", "50"))
        backstage_freshness.report(backstage_freshness.measure(pushes, every, 300.0), every)
    else:
        print("Backstage freshness benchmark skipped: run `make backstage-install`")


if __name__ == "__main__":
    main()
