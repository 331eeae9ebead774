"""`bench/sync_cost --flavor datacenter`: what a full Data Center sync costs, against the
simulator's Data Center flavour, for servers of N repositories.

For each N: calls, wall time and peak memory of the syncing process (its own process, the
worker's situation) for a cold sync, a warm sync with nothing changed, and a warm sync after
1 % of the repositories changed their catalog file (listing pages at 1,000 a page, one
default-branch head per repository, catalog files read only where the head moved); the
simulator's rate limiting is off and bbsync's token bucket lifted, so what is measured is
calls, not waiting.

Beside them, Backstage's Data Center provider (`@backstage/plugin-catalog-backend-module-
bitbucket-server`, `BitbucketServerEntityProvider.findEntities`, read in backstage/backstage
`plugins/catalog-backend-module-bitbucket-server/src/providers/BitbucketServerEntityProvider.ts`
and `src/lib/BitbucketServerClient.ts`): every discovery pages `/projects`, then
`/projects/{KEY}/repos` of each project, through a client throttled to 1 request/s
(`pThrottle({limit: 1, interval: 1000})`), passing only `start`, so each page holds the
server's default 25; it emits one Location per repository and reads no file itself (the
catalog's URL reader does, on each processing loop). Its time to discover N repositories is
therefore its throttled calls at 1/s: `ceil(projects / 25) + sum over projects of
ceil(repos / 25)` seconds. When the repository JSON has no `defaultBranch` (older servers;
the simulator's default) it also asks `/default-branch` per repository, with a plain `fetch`
outside the throttle in the version read, so those calls are counted but not timed.
bbsync's own cold sync is also shown at Data Center's default token bucket (5 calls/s
refill, the rate bbsync paces itself to by default): its calls / 5 seconds.
"""

from __future__ import annotations

import json
import math
import os
import resource
import subprocess
import sys
import tempfile
import time
from collections import Counter
from typing import Any

import redis

from bitbucket_sim.testing import SimProcess

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REDIS_URL = os.environ.get("BBSYNC_BENCH_REDIS", "redis://127.0.0.1:6379/14")
BACKSTAGE_PAGE = 25  # Data Center's default page size: the provider asks for no other
BACKSTAGE_RATE = 1.0  # requests per second, fixed in its client
DC_DEFAULT_RATE = 5.0  # Atlassian's default token bucket refill, bbsync's default pace


def child(database_url: str, server_url: str) -> None:
    """One full Data Center sync in this process; prints its figures as JSON."""
    from app.config import settings_from_env
    from app.runtime import Runtime
    from app.sync.datacenter import DataCenterSync

    rt = Runtime(
        settings_from_env(
            {
                "DATABASE_URL": database_url,
                "REDIS_URL": REDIS_URL,
                "BITBUCKET_WORKSPACES": "",
                "BITBUCKET_DC_URL": server_url,
                "BITBUCKET_DC_TOKEN": "bench",
                # The budget is not what is measured here.
                "BITBUCKET_DC_RATE_PER_SECOND": "1000000",
                "BITBUCKET_DC_BURST": "1000000",
            }
        )
    )
    started = time.perf_counter()
    with rt.sessions() as session:
        result = DataCenterSync(
            rt.datacenter(), session, session.commit, rt.settings, rt.datacenter_settings
        ).run()
    wall = time.perf_counter() - started
    if not result.ok:
        raise SystemExit(f"Data Center sync failed: {result.failed}")
    counts = [p.catalog.counts for p in result.projects]
    print(
        json.dumps(
            {
                "wall": wall,
                "maxrss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                "files": sum(c.get("files_fetched", 0) for c in counts),
                "checked": sum(c.get("checked", 0) for c in counts),
            }
        )
    )


def run_sync(database_url: str, sim: SimProcess) -> dict[str, Any]:
    sim.reset_stats()
    done = subprocess.run(
        [sys.executable, "-m", "bench.sync_cost_datacenter", "--child", database_url, sim.url],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        raise SystemExit(f"sync failed:\n{done.stderr[-3000:]}")
    figures: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    stats = sim.stats()
    figures["sim_calls"] = stats["calls_total"]
    figures["by_family"] = {k: v for k, v in stats["calls"].items() if v}
    return figures


def backstage_discovery(repos: list[dict[str, Any]]) -> dict[str, int]:
    """Backstage's Data Center provider's calls for one discovery (see module docstring)."""
    per_project = Counter(r["project_key"] for r in repos)
    throttled = math.ceil(len(per_project) / BACKSTAGE_PAGE) or 1
    throttled += sum(math.ceil(n / BACKSTAGE_PAGE) for n in per_project.values())
    return {
        "projects": len(per_project),
        "throttled_calls": throttled,
        "default_branch_calls": len(repos),
        "seconds": math.ceil(throttled / BACKSTAGE_RATE),
    }


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
            flavor="datacenter",
            workspace="bench",
            repos=size,
            seed=11,
            access_token="bench",
            startup_timeout=300,
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
        cold = run_sync(database_url, sim)
        warm = run_sync(database_url, sim)
        changed = change_catalog_files(sim, 0.01)
        after = run_sync(database_url, sim)
        return {
            "size": size,
            "changed": changed,
            "cold": cold,
            "warm": warm,
            "after_change": after,
            "backstage": backstage_discovery(repos),
        }


def report(row: dict[str, Any]) -> None:
    cold, warm, after, bs = row["cold"], row["warm"], row["after_change"], row["backstage"]
    print(
        f"N={row['size']:>6} ({bs['projects']} projects): cold {cold['sim_calls']} calls, "
        f"{cold['wall']:.1f}s, {cold['maxrss_mb']:.0f} MB | warm {warm['sim_calls']} calls, "
        f"{warm['wall']:.1f}s | after 1% ({row['changed']} changed) {after['sim_calls']} calls, "
        f"{after['wall']:.1f}s | bbsync cold at {DC_DEFAULT_RATE:.0f}/s: "
        f"{cold['sim_calls'] / DC_DEFAULT_RATE:.0f}s | Backstage Data Center provider, one "
        f"discovery: {bs['throttled_calls']} throttled calls = {bs['seconds']}s at 1/s "
        f"(+ {bs['default_branch_calls']} unthrottled default-branch calls, files read later "
        "by the catalog)"
    )
    print(
        f"          calls: cold {cold['by_family']}; warm {warm['by_family']}; "
        f"after 1% {after['by_family']}"
    )


def main(sizes: list[int]) -> None:
    print("full Data Center sync cost (figures, not pass/fail)")
    for size in sizes:
        report(measure(size))


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--child":
        child(sys.argv[2], sys.argv[3])
    else:
        main([int(s) for s in (sys.argv[1] if len(sys.argv) > 1 else "1000").split(",")])
