"""What a full sync costs, against the simulator, for workspaces of N repositories.

For each N: API calls, wall time and peak memory of the syncing process for a cold sync, a
warm sync with nothing changed, and a warm sync after 1 % of the repositories changed their
catalog file; beside them the calls the Backstage Bitbucket Cloud entity provider would spend
in an hour on the same workspace (a code search per project per discovery run, then a read
of every catalog file on each refresh, every 150 s), and the ratio.

    python -m bench.sync_cost [--sizes 1000,5000,10000]

Each sync runs in its own process (the worker's situation), so its peak RSS is its own.
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
    parser.add_argument("--child", nargs=2, metavar=("DATABASE_URL", "API_URL"))
    args = parser.parse_args()
    if args.child:
        child(*args.child)
        return
    print("full sync cost (figures, not pass/fail)")
    for size in (int(s) for s in args.sizes.split(",")):
        report(measure(size))


if __name__ == "__main__":
    main()
