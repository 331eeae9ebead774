"""Backstage's own Bitbucket Cloud provider beside bbsync, on the same simulated workspace.

The Node harness in `bench/backstage_node/` runs the real
`@backstage/plugin-catalog-backend-module-bitbucket-cloud` discovery (one code search per
project) and the catalog's URL reader over every location it found: one pass cold, one pass
with the ETags of the first (what every later refresh costs). Beside it: bbsync's cold and warm
full sync. Calls per hour at Backstage's defaults: the catalog re-processes each location every
100 to 150 s (`processingInterval`), each time a conditional read of the file; discovery runs on
the provider's schedule (here every 30 minutes, the documented example). bbsync: one warm full
sync an hour (beat's default), webhooks aside.

    python -m bench.backstage_peer [--repos 1000]

The harness's npm packages are installed on first use (`npm ci`, from its lockfile), not by
`make install`. `package.json` pins `@backstage/plugin-bitbucket-cloud-common` to 0.3.12 with
an npm override: the provider 0.5.15 asks for ^0.3.13, which the registry this project can
reach does not carry; the provider's code is unchanged.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import redis

from bench.sync_cost import REDIS_URL, ROOT, run_sync
from bitbucket_sim.testing import SimProcess

HARNESS = Path(__file__).resolve().parent / "backstage_node"
EMAIL, TOKEN = "bench@example.com", "bench"
DISCOVERIES_PER_HOUR = 2  # schedule: every 30 minutes
REFRESH_SECONDS = (100, 150)  # Backstage's default processing interval, per entity


class HarnessUnavailable(RuntimeError):
    """Node or npm is missing, or the packages could not be installed."""


def ensure_harness() -> None:
    """`npm ci` the harness once; the lockfile pins the Backstage packages."""
    if shutil.which("node") is None or shutil.which("npm") is None:
        raise HarnessUnavailable("node and npm are needed")
    marker = HARNESS / "node_modules" / "@backstage" / "backend-defaults" / "package.json"
    if marker.exists():
        return
    done = subprocess.run(
        ["npm", "ci", "--no-audit", "--no-fund"],
        cwd=HARNESS,
        capture_output=True,
        text=True,
        timeout=900,
    )
    if done.returncode != 0:
        raise HarnessUnavailable(f"npm ci failed:\n{done.stderr[-2000:]}")


def run_harness(sim: SimProcess) -> dict[str, Any]:
    """The Backstage provider's discovery and two read passes against `sim`."""
    ensure_harness()
    sim.reset_stats()
    done = subprocess.run(
        ["node", str(HARNESS / "peer.cjs"), sim.api_url, sim.workspace, EMAIL, TOKEN],
        capture_output=True,
        text=True,
        timeout=1800,
    )
    if done.returncode != 0:
        raise HarnessUnavailable(f"the Backstage harness failed:\n{done.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def start_simulator(repos: int) -> SimProcess:
    return SimProcess(
        workspace="bench",
        repos=repos,
        seed=11,
        access_token=TOKEN,  # bbsync's credential
        email=EMAIL,
        api_token=TOKEN,  # Backstage's (Basic email:token)
        startup_timeout=120,
        rate_limit="10000000/h",
        raw_rate_limit="10000000/h",
    )


def measure(repos: int) -> dict[str, Any]:
    redis.Redis.from_url(REDIS_URL).flushdb()
    with tempfile.TemporaryDirectory() as folder, start_simulator(repos) as sim:
        files = sum(len(r["catalog_paths"]) for r in sim.repositories())
        backstage = run_harness(sim)
        database_url = f"sqlite:///{folder}/bench.db"
        subprocess.run(
            [sys.executable, "-m", "alembic", "upgrade", "head"],
            cwd=ROOT,
            env={**os.environ, "DATABASE_URL": database_url},
            check=True,
            capture_output=True,
        )
        cold = run_sync(database_url, sim)
        warm = run_sync(database_url, sim)
    return {"repos": repos, "files": files, "backstage": backstage, "cold": cold, "warm": warm}


def hourly(row: dict[str, Any]) -> tuple[int, int, int]:
    """Backstage's calls per hour (fastest and slowest refresh), and bbsync's."""
    phases = row["backstage"]["phases"]
    discovery = phases["discovery"]["sim_calls"] * DISCOVERIES_PER_HOUR
    per_pass = phases["etag_read"]["sim_calls"]
    fast, slow = (discovery + per_pass * 3600 // s for s in REFRESH_SECONDS)
    return fast, slow, row["warm"]["sim_calls"]


def report(row: dict[str, Any]) -> None:
    phases = row["backstage"]["phases"]
    fast, slow, bbsync = hourly(row)
    print(
        f"Backstage Bitbucket Cloud provider, {row['repos']} repositories, "
        f"{row['files']} catalog files: found {row['backstage']['locations']} locations; "
        f"discovery {phases['discovery']['sim_calls']} calls, first read pass "
        f"{phases['read']['sim_calls']} calls, ETag pass {phases['etag_read']['sim_calls']} "
        f"calls ({phases['etag_read']['not_modified']} answered 304)"
    )
    print(
        f"  bbsync: cold sync {row['cold']['sim_calls']} calls, warm sync "
        f"{row['warm']['sim_calls']} calls | per hour at Backstage's defaults: "
        f"{slow:,} to {fast:,} calls vs bbsync {bbsync} (ratio {slow / max(1, bbsync):.0f} to "
        f"{fast / max(1, bbsync):.0f}x)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repos", type=int, default=1000)
    args = parser.parse_args()
    try:
        report(measure(args.repos))
    except HarnessUnavailable as exc:
        print(f"Backstage peer benchmark skipped: {exc}")


if __name__ == "__main__":
    main()
