"""What a full sync costs, against the simulator, for workspaces of N repositories.

For each N: API calls, wall time and peak memory of the syncing process for a cold sync, a
warm sync with nothing changed, and a warm sync after 1 % of the repositories changed their
catalog file; beside them the calls the Backstage Bitbucket Cloud entity provider would spend
in an hour on the same workspace (a code search per project per discovery run, then a read
of every catalog file on each refresh, every 150 s), and the ratio.

    python -m bench.sync_cost [--sizes 1000,5000,10000] [--cold-limits 10000]
    python -m bench.sync_cost --flavor datacenter [--sizes 1000,10000]

`--flavor datacenter`: the same cold, warm and 1 % changed figures for a Bitbucket Data Center
server (the simulator's Data Center flavour), beside Backstage's Data Center provider's time
to discover the repositories at its fixed 1 request/s (`bench/sync_cost_datacenter.py`).

Each sync runs in its own process (the worker's situation), so its peak RSS is its own.

`--cold-limits N` (also `BBSYNC_BENCH_COLD_LIMITS`): the cold sync of N repositories under
Bitbucket's DEFAULT limits, time compressed (one simulated hour = one real minute on both
sides: simulator `--rate-limit 1000/m --raw-rate-limit 5000/m`, bbsync
`BITBUCKET_RATE_WINDOW_SECONDS=60`), in simulated hours until the catalog is complete; run
twice: with a window per resource (today), and with the single window bbsync had before
(`raw_budget` is the API budget, so every call, file reads included, is charged to one
1,000/h window: exactly the old client's accounting, the simulator's raw limit then never
binds; limit learning off, as the old client had none, or the window would take the raw
resource's announced 5,000). A fresh window's whole share can be spent at once, so a cold
sync may finish before the rate bound. Beside them the physical bound:
`(pages + search) / API share + files / raw share`, the shares being what backfill may
spend (the limit less the webhook reserve). The sync loop is the worker's: on `RetryLater`
wait `retry_after`, then run the workspace sync again.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import redis

from bitbucket_sim.testing import SimProcess

ROOT = Path(__file__).resolve().parent.parent
REDIS_URL = os.environ.get("BBSYNC_BENCH_REDIS", "redis://127.0.0.1:6379/14")
BACKSTAGE_REFRESHES_PER_HOUR = 3600 // 150
CHILD = (sys.executable, "-m", "bench.sync_cost")
COLD_HOUR = 60.0  # real seconds per simulated hour in the cold sync under limits
COLD_MAX_HOURS = float(os.environ.get("BBSYNC_BENCH_COLD_MAX_HOURS", "8"))  # then give up
COLD_API_LIMIT, COLD_RAW_LIMIT = 1000, 5000  # Bitbucket's defaults


def child(database_url: str, api_url: str) -> None:
    """One full sync in this process; prints its figures as JSON."""
    from app.config import settings_from_env
    from app.runtime import Runtime
    from app.sync.workspace import WorkspaceSync

    rt = Runtime(
        settings_from_env(
            {
                "DATABASE_URL": database_url,
                "REDIS_URL": REDIS_URL,
                "BITBUCKET_API_URL": api_url,
                "BITBUCKET_ACCESS_TOKEN": "bench",
                "BITBUCKET_RATE_LIMIT_PER_HOUR": "100000000",
            }
        )
    )
    started = time.perf_counter()
    with rt.sessions() as session:
        result = WorkspaceSync(rt.bitbucket(), session, session.commit, rt.settings).run("bench")
    wall = time.perf_counter() - started
    print(
        json.dumps(
            {
                "wall": wall,
                "calls": (result.repositories.api_calls if result.repositories else 0)
                + result.catalog.api_calls,
                "maxrss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                "files": result.catalog.counts["files_fetched"],
                "discovery": result.catalog.counts["discovery"],
            }
        )
    )


def cold_child(database_url: str, api_url: str, mode: str) -> None:
    """A cold sync under the default limits (compressed), retried as the worker would."""
    from sqlalchemy import func, select

    from app.bitbucket.budget import Priority
    from app.bitbucket.errors import RetryLater
    from app.config import settings_from_env
    from app.models import Repository, SyncStatus
    from app.runtime import Runtime
    from app.sync.workspace import WorkspaceSync

    rt = Runtime(
        settings_from_env(
            {
                "DATABASE_URL": database_url,
                "REDIS_URL": REDIS_URL,
                "BITBUCKET_API_URL": api_url,
                "BITBUCKET_ACCESS_TOKEN": "bench",
                "BITBUCKET_RATE_WINDOW_SECONDS": str(int(COLD_HOUR)),
                # The old client learned no limits: with one window for both resources it
                # would otherwise take the raw window's announced 5,000 for its own.
                "BITBUCKET_LEARN_RATE_LIMIT": "false" if mode == "single" else "true",
            }
        )
    )
    for budget in rt.budgets:
        budget.reset()
    started, pauses, calls, waited = time.perf_counter(), 0, 0, 0.0
    complete = False
    while time.perf_counter() - started < COLD_MAX_HOURS * COLD_HOUR:
        client = rt.bitbucket()
        if mode == "single":
            client.raw_budget = client.budget  # the old accounting: one window for all
        try:
            with rt.sessions() as session:
                result = WorkspaceSync(client, session, session.commit, rt.settings).run("bench")
            calls += client.ledger.total
            if result.catalog.status == SyncStatus.SUCCEEDED.value:
                complete = True
                break
        except RetryLater as exc:
            calls += client.ledger.total
            pauses += 1
            pause = exc.retry_after if exc.retry_after is not None else 1.0
            waited += pause
            time.sleep(pause)
    wall = time.perf_counter() - started
    with rt.sessions() as session:
        checked = Repository.catalog_checked_on.is_not(None)
        read = session.scalar(select(func.count()).where(checked))
    print(
        json.dumps(
            {
                "complete": complete,
                "repositories_read": read,
                "hours": wall / COLD_HOUR,
                "calls": calls,
                "pauses": pauses,
                "waited_hours": waited / COLD_HOUR,
                "api_share": rt.budget.ceiling(Priority.BACKFILL),
                "raw_share": rt.raw_budget.ceiling(Priority.BACKFILL),
            }
        )
    )


def cold_under_limits(size: int) -> dict[str, Any]:
    """Cold syncs of `size` repositories under default limits, per resource and single."""
    row: dict[str, Any] = {"size": size}
    for mode in ("per-resource", "single"):
        redis.Redis.from_url(REDIS_URL).flushdb()
        with (
            tempfile.TemporaryDirectory() as folder,
            SimProcess(
                workspace="bench",
                repos=size,
                seed=11,
                access_token="bench",
                startup_timeout=300,
                rate_limit=f"{COLD_API_LIMIT}/m",
                raw_rate_limit=f"{COLD_RAW_LIMIT}/m",
            ) as sim,
        ):
            database_url = f"sqlite:///{folder}/bench.db"
            subprocess.run(
                [sys.executable, "-m", "alembic", "upgrade", "head"],
                cwd=ROOT,
                env={**os.environ, "DATABASE_URL": database_url},
                check=True,
                capture_output=True,
            )
            repos = sim.repositories()
            sim.reset_stats()
            done = subprocess.run(
                [*CHILD, "--cold-child", database_url, sim.api_url, mode],
                cwd=ROOT,
                capture_output=True,
                text=True,
            )
            if done.returncode != 0:
                raise SystemExit(f"cold sync failed:\n{done.stderr[-3000:]}")
            figures: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
            stats = sim.stats()
            figures["by_family"] = {k: v for k, v in stats["calls"].items() if v}
            figures["rate_limited"] = stats["rate_limited"]
            row[mode] = figures
            print(f"          {mode}: {json.dumps(figures)}", flush=True)
            row["files"] = sum(1 for r in repos if "catalog-info.yaml" in r["catalog_paths"])
    return row


def report_cold_limits(row: dict[str, Any]) -> None:
    per, single = row["per-resource"], row["single"]
    families = per["by_family"]
    raw = families.get("src", 0)
    api = sum(families.values()) - raw
    bound = api / per["api_share"] + raw / per["raw_share"]
    single_bound = (api + raw) / single["api_share"]

    def done(figures: dict[str, Any]) -> str:
        if figures["complete"]:
            return f"catalog complete after {figures['hours']:.2f} simulated h"
        return (
            f"NOT complete after {figures['hours']:.1f} simulated h "
            f"({figures['repositories_read']} of {row['size']} repositories read)"
        )

    print(
        f"cold sync of {row['size']} repositories under default limits "
        f"({COLD_API_LIMIT}/h API, {COLD_RAW_LIMIT}/h raw; 1 simulated hour = "
        f"{COLD_HOUR:.0f} s): {done(per)} with a "
        f"window per resource ({api} API + {raw} raw calls, {per['pauses']} budget pauses "
        f"= {per['waited_hours']:.2f} h waiting for budget, {per['rate_limited']} 429s) "
        f"| physical bound (pages + search) / "
        f"{per['api_share']} + files / {per['raw_share']} = {bound:.2f} h | single 1,000/h "
        f"window (old accounting): {done(single)} ({single['calls']} calls, "
        f"{single['pauses']} pauses = {single['waited_hours']:.2f} h waiting; its own bound "
        f"{single_bound:.2f} h)"
    )
    print(f"          per resource, calls {families}; single window, calls {single['by_family']}")


def run_sync(database_url: str, sim: SimProcess) -> dict[str, Any]:
    sim.reset_stats()
    done = subprocess.run(
        [sys.executable, "-m", "bench.sync_cost", "--child", database_url, sim.api_url],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        raise SystemExit(f"sync failed:\n{done.stderr[-3000:]}")
    output = done.stdout
    figures: dict[str, Any] = json.loads(output.strip().splitlines()[-1])
    stats = sim.stats()
    figures["sim_calls"] = stats["calls_total"]
    figures["by_family"] = {k: v for k, v in stats["calls"].items() if v}
    return figures


def backstage_hourly_calls(sim: SimProcess) -> int:
    """The Backstage provider's calls per hour for this workspace (see module docstring)."""
    repos = sim.repositories()
    projects = {r["project_key"] for r in repos}
    files = sum(1 for r in repos if "catalog-info.yaml" in r["catalog_paths"])
    search_pages_per_project = max(1, math.ceil(files / max(1, len(projects)) / 100))
    pages = math.ceil(len(repos) / 100)
    return pages + len(projects) * search_pages_per_project + files * BACKSTAGE_REFRESHES_PER_HOUR


def change_catalog_files(sim: SimProcess, share: float) -> int:
    repos = [r for r in sim.repositories() if "catalog-info.yaml" in r["catalog_paths"]]
    count = max(1, int(len(sim.repositories()) * share))
    for repo in repos[:count]:
        content = (
            "apiVersion: backstage.io/v1alpha1\nkind: Component\nmetadata:\n"
            f"  name: {repo['slug']}-changed\nspec:\n  type: service\n"
            "  lifecycle: production\n  owner: group:default/bench\n"
        )
        sim.admin(
            "POST", f"repos/{repo['slug']}/push", json={"files": {"catalog-info.yaml": content}}
        )
    return count


def measure(size: int) -> dict[str, Any]:
    redis.Redis.from_url(REDIS_URL).flushdb()
    with (
        tempfile.TemporaryDirectory() as folder,
        SimProcess(
            workspace="bench",
            repos=size,
            seed=11,
            access_token="bench",
            startup_timeout=120,
            # The budget is not what is measured here: lift Bitbucket's hourly caps.
            rate_limit="10000000/h",
            raw_rate_limit="10000000/h",
        ) as sim,
    ):
        database_url = f"sqlite:///{folder}/bench.db"
        env = {**os.environ, "DATABASE_URL": database_url}
        subprocess.run(
            [sys.executable, "-m", "alembic", "upgrade", "head"],
            cwd=ROOT,
            env=env,
            check=True,
            capture_output=True,
        )
        repos = sim.repositories()
        files = sum(1 for r in repos if "catalog-info.yaml" in r["catalog_paths"])
        cold = run_sync(database_url, sim)
        warm = run_sync(database_url, sim)
        changed = change_catalog_files(sim, 0.01)
        after = run_sync(database_url, sim)
        return {
            "size": size,
            "files": files,
            "pages": math.ceil(size / 100),
            "changed": changed,
            "cold": cold,
            "warm": warm,
            "after_change": after,
            "backstage_hour": backstage_hourly_calls(sim),
        }


def report(row: dict[str, Any]) -> None:
    cold, warm, after = row["cold"], row["warm"], row["after_change"]
    search_pages = cold["by_family"].get("search", 0)
    cold_target = 1.1 * (row["pages"] + search_pages + row["files"])
    bbsync_hour = warm["sim_calls"]  # one warm full sync per hour (beat's default)
    print(
        f"N={row['size']:>6}: cold {cold['sim_calls']} calls (target ≤ {cold_target:.0f}), "
        f"{cold['wall']:.1f}s, {cold['maxrss_mb']:.0f} MB | warm {warm['sim_calls']} calls "
        f"(target ≤ {row['pages'] + 5}), {warm['wall']:.1f}s, {warm['maxrss_mb']:.0f} MB | "
        f"after 1% ({row['changed']} changed) {after['sim_calls']} calls "
        f"(target ≤ {row['pages'] + 3 * row['changed']}), {after['wall']:.1f}s | "
        f"Backstage provider {row['backstage_hour']} calls/h vs bbsync {bbsync_hour} calls/h "
        f"(ratio {row['backstage_hour'] / max(1, bbsync_hour):.0f}x)"
    )
    print(f"          cold discovery: {cold['discovery']}; calls {cold['by_family']}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", default="1000,5000,10000")
    parser.add_argument(
        "--cold-limits", type=int, default=int(os.environ.get("BBSYNC_BENCH_COLD_LIMITS", "0"))
    )
    parser.add_argument("--flavor", choices=("cloud", "datacenter"), default="cloud")
    parser.add_argument("--child", nargs=2, metavar=("DATABASE_URL", "API_URL"))
    parser.add_argument("--cold-child", nargs=3, metavar=("DATABASE_URL", "API_URL", "MODE"))
    args = parser.parse_args()
    if args.child:
        child(*args.child)
        return
    if args.cold_child:
        cold_child(*args.cold_child)
        return
    if args.flavor == "datacenter":
        from bench import sync_cost_datacenter

        sync_cost_datacenter.main([int(s) for s in args.sizes.split(",") if s.strip()])
        return
    print("full sync cost (figures, not pass/fail)")
    for size in (int(s) for s in args.sizes.split(",") if s.strip()):
        report(measure(size))
    if args.cold_limits:
        report_cold_limits(cold_under_limits(args.cold_limits))


if __name__ == "__main__":
    main()
