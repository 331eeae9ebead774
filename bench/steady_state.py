"""The steady state under Bitbucket's default per-resource limits, time compressed.

One simulated hour lasts one real minute on both sides: the simulator enforces its default
limits per minute (`--rate-limit 1000/m --raw-rate-limit 5000/m`), bbsync's budget window is
60 s (`BITBUCKET_RATE_WINDOW_SECONDS=60`) and beat's intervals are scaled the same way (full
sync and members every simulated hour, activity every simulated quarter hour). A real Celery
worker (concurrency 2) and beat run against PostgreSQL and the simulator; webhooks are off
(the simulator has no webhook URL), so only scheduled jobs keep bbsync current.

For each N: the cold start until the catalog is complete, then `--quiet-hours` simulated
hours with nothing changing, then `--change-hours` with 1 % of the repositories changing per
simulated hour (a push to the main branch that changes `catalog-info.yaml` and moves
`updated_on`, and a new pull request from a fresh branch). Printed: calls per simulated hour
per job (`sync_runs`: kind and api_calls, by start time) and per resource (the simulator's
counts: `src` is the raw window, everything else the repositories window); how long until a
changed repository's pull request and catalog entity are in bbsync's database; the quiet
sweeps' coverage (activity reconciliation and the people sync's permissions walk: the oldest
read, repositories never read, a full sweep's length at the share).

    python -m bench.steady_state [--sizes 1000,10000] [--quiet-hours 24] [--change-hours 3]

Figures, not pass/fail. Goal at 10,000: quiet, every job together ≤ 20 % of the repositories
window; a change that moves `updated_on` reconciled within one simulated hour.
"""

from __future__ import annotations

import argparse
import os
import random
import tempfile
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import func, select, tuple_

from app.config import settings_from_env
from app.db import make_engine, make_session_factory
from app.models import CatalogEntity, PullRequest, Repository, SyncRun, SyncStatus, utcnow
from app.sync.coverage import sweeps
from app.task_names import SYNC_ALL_WORKSPACES, enqueue, producer
from bench.processes import celery_beat, celery_worker
from bench.system import Processes, flush_redis, migrated_database
from bitbucket_sim.testing import SimProcess

REDIS_URL = os.environ.get("BBSYNC_BENCH_REDIS", "redis://127.0.0.1:6379/14")
HOUR = 60.0  # real seconds per simulated hour (the simulator's `/m` windows)
WORKSPACE = "acme"
TOKEN = "bench"
API_LIMIT, RAW_LIMIT = 1000, 5000  # Bitbucket's defaults, per (simulated) hour


def bbsync_env(database_url: str, api_url: str, folder: str) -> dict[str, str]:
    return {
        "DATABASE_URL": database_url,
        "REDIS_URL": REDIS_URL,
        "CELERY_BROKER_URL": REDIS_URL,
        "BITBUCKET_API_URL": api_url,
        "BITBUCKET_WORKSPACES": WORKSPACE,
        "BITBUCKET_ACCESS_TOKEN": TOKEN,
        "BITBUCKET_WEBHOOK_SECRET": "bench-secret",
        "BITBUCKET_RATE_LIMIT_PER_HOUR": str(API_LIMIT),
        "BITBUCKET_RAW_RATE_LIMIT_PER_HOUR": str(RAW_LIMIT),
        "BITBUCKET_RATE_WINDOW_SECONDS": str(int(HOUR)),
        "BBSYNC_FULL_SYNC_INTERVAL": str(int(HOUR)),
        "BBSYNC_MEMBERS_INTERVAL": str(int(HOUR)),
        "BBSYNC_ACTIVITY_INTERVAL": str(int(HOUR / 4)),
        "BEAT_SCHEDULE_FILE": f"{folder}/beat",
        "LOG_FORMAT": "json",
        "LOG_LEVEL": "WARNING",
    }


@dataclass
class Change:
    slug: str
    entity: str
    pr: int
    at: float
    catalog: float | None = None
    pulls: float | None = None


@dataclass
class Phase:
    name: str
    hours: float
    by_job: dict[str, tuple[int, int, float]]  # kind → (runs, calls, mean real seconds)
    by_resource: dict[str, int]
    families: dict[str, int]


@dataclass
class Result:
    size: int
    cold_hours: float | None
    phases: list[Phase] = field(default_factory=list)
    changes: list[Change] = field(default_factory=list)
    coverage: dict[str, dict[str, Any]] = field(default_factory=dict)


class Bench:
    def __init__(self, size: int, database_url: str, sim: SimProcess, folder: str) -> None:
        self.size, self.sim, self.folder = size, sim, folder
        self.database_url = database_url
        self.sessions = make_session_factory(make_engine(database_url))
        self.settings = settings_from_env(bbsync_env(database_url, sim.api_url, folder))
        self.random = random.Random(size)

    def catalog_done(self) -> bool:
        with self.sessions() as session:
            return bool(
                session.scalar(
                    select(func.count()).where(
                        SyncRun.kind == "catalog", SyncRun.status == SyncStatus.SUCCEEDED.value
                    )
                )
            )

    def phase(self, name: str, started: datetime, stats: dict[str, Any], real: float) -> Phase:
        hours = real / HOUR
        with self.sessions() as session:
            rows = session.execute(
                select(
                    SyncRun.kind,
                    func.count(),
                    func.sum(SyncRun.api_calls),
                    func.avg(SyncRun.duration_ms),
                )
                .where(SyncRun.started_at >= started)
                .group_by(SyncRun.kind)
            ).all()
        by_job = {kind: (n, int(calls or 0), float(ms or 0) / 1000) for kind, n, calls, ms in rows}
        now = self.sim.stats()["calls"]
        families = {k: v - stats["calls"].get(k, 0) for k, v in now.items()}
        families = {k: v for k, v in families.items() if v}
        raw = families.get("src", 0)
        by_resource = {"repositories": sum(families.values()) - raw, "raw": raw}
        return Phase(name, hours, by_job, by_resource, families)

    def change(self, hour: int, count: int, taken: set[str]) -> list[Change]:
        candidates = [
            r["slug"]
            for r in self.sim.repositories()
            if "catalog-info.yaml" in r["catalog_paths"] and r["slug"] not in taken
        ]
        changes = []
        for slug in self.random.sample(candidates, min(count, len(candidates))):
            taken.add(slug)
            entity = f"bench-{hour}-{slug}"[:63]
            content = (
                "apiVersion: backstage.io/v1alpha1\nkind: Component\nmetadata:\n"
                f"  name: {entity}\nspec:\n  type: service\n"
                "  lifecycle: production\n  owner: group:default/bench\n"
            )
            at = time.monotonic()
            branch = f"bench-{hour}"
            self.sim.admin("POST", f"repos/{slug}/push", json={"branch": branch}).raise_for_status()
            pr = self.sim.admin("POST", f"repos/{slug}/pullrequests", json={"source": branch})
            pr.raise_for_status()
            self.sim.admin(
                "POST", f"repos/{slug}/push", json={"files": {"catalog-info.yaml": content}}
            ).raise_for_status()
            changes.append(Change(slug, entity, int(pr.json()["id"]), at))
        return changes

    def poll(self, pending: list[Change]) -> None:
        waiting = [c for c in pending if c.catalog is None or c.pulls is None]
        if not waiting:
            return
        with self.sessions() as session:
            entities = set(
                session.scalars(
                    select(CatalogEntity.name).where(
                        CatalogEntity.name.in_([c.entity for c in waiting]),
                        CatalogEntity.deleted_at.is_(None),
                    )
                )
            )
            pulls = {
                (slug, number)
                for slug, number in session.execute(
                    select(Repository.slug, PullRequest.number)
                    .join(Repository, PullRequest.repository_id == Repository.id)
                    .where(
                        tuple_(Repository.slug, PullRequest.number).in_(
                            [(c.slug, c.pr) for c in waiting]
                        )
                    )
                )
            }
        now = time.monotonic()
        for c in waiting:
            if c.catalog is None and c.entity in entities:
                c.catalog = now - c.at
            if c.pulls is None and (c.slug, c.pr) in pulls:
                c.pulls = now - c.at

    def coverage(self) -> dict[str, dict[str, Any]]:
        """Each sweep's coverage (activity, people) in simulated hours."""
        with self.sessions() as session:
            found = sweeps(session, WORKSPACE, self.settings)
        return {
            s.job: {
                "repositories": s.repositories,
                "never": s.never,
                "oldest_hours": (utcnow() - s.oldest).total_seconds() / HOUR if s.oldest else None,
                "sweep_hours": s.sweep_hours * 3600 / HOUR,  # real hours → simulated
            }
            for s in found
        }


def wait(seconds: float, procs: Processes, tick: Any = None) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        for name in ("worker", "beat"):
            procs.check_alive(name)
        if tick is not None:
            tick()
        time.sleep(min(2.0, max(0.0, deadline - time.monotonic())))


def measure(size: int, quiet_hours: int, change_hours: int, grace_hours: int) -> Result:
    flush_redis(REDIS_URL)
    with (
        tempfile.TemporaryDirectory() as folder,
        migrated_database() as database_url,
        SimProcess(
            workspace=WORKSPACE,
            repos=size,
            seed=17,
            access_token=TOKEN,
            startup_timeout=300,
            rate_limit=f"{API_LIMIT}/m",
            raw_rate_limit=f"{RAW_LIMIT}/m",
        ) as sim,
        Processes(Path(folder)) as procs,
    ):
        bench = Bench(size, database_url, sim, folder)
        env = bbsync_env(database_url, sim.api_url, folder)
        worker = celery_worker(2, loglevel="WARNING", hostname=f"steady{os.getpid()}@%h")
        procs.start("worker", worker, env)
        procs.start("beat", celery_beat(f"{folder}/beat", loglevel="WARNING"), env)
        # Beat's first tick comes one interval after it starts: send the first full sync now,
        # as an operator does after installing (`bbsync sync --async`).
        enqueue(producer(REDIS_URL), SYNC_ALL_WORKSPACES)
        started = time.monotonic()
        cold: float | None = None
        while time.monotonic() - started < 12 * HOUR:
            wait(2, procs)
            if bench.catalog_done():
                cold = (time.monotonic() - started) / HOUR
                break
        result = Result(size, cold)
        print(f"  N={size}: catalog complete after {cold or 0:.2f} simulated hours", flush=True)

        at, stats, t0 = utcnow(), sim.stats(), time.monotonic()
        wait(quiet_hours * HOUR, procs)
        result.phases.append(bench.phase("quiet", at, stats, time.monotonic() - t0))
        result.coverage = bench.coverage()
        print(f"  N={size}: quiet phase done", flush=True)

        at, stats, t0 = utcnow(), sim.stats(), time.monotonic()
        taken: set[str] = set()
        count = max(1, size // 100)
        for hour in range(change_hours):
            result.changes += bench.change(hour, count, taken)
            wait(HOUR, procs, lambda: bench.poll(result.changes))
        result.phases.append(bench.phase("1 %/h changing", at, stats, time.monotonic() - t0))
        wait(grace_hours * HOUR, procs, lambda: bench.poll(result.changes))
        bench.poll(result.changes)
        return result


def _hours(seconds: float | None) -> str:
    return "—" if seconds is None else f"{seconds / HOUR:.2f}"


def _spread(values: list[float | None], cap: float) -> str:
    done = sorted(v for v in values if v is not None)
    missed = len(values) - len(done)
    if not done:
        return f"none within {cap:.0f} h ({missed} missed)"
    median, worst = done[len(done) // 2], done[-1]
    within = sum(1 for v in done if v <= HOUR)
    text = f"median {_hours(median)} h, max {_hours(worst)} h, {within}/{len(values)} within 1 h"
    return text + (f", {missed} not within {cap:.0f} h" if missed else "")


def report(result: Result, change_hours: int, grace_hours: int) -> None:
    cold = "not within 12" if result.cold_hours is None else f"{result.cold_hours:.1f}"
    print(f"N={result.size:>6}: cold catalog complete after {cold} simulated hours")
    for phase in result.phases:
        per_hour = {
            kind: f"{calls / phase.hours:.0f}/h ({runs} runs, {secs:.1f} s real each)"
            for kind, (runs, calls, secs) in sorted(phase.by_job.items())
        }
        total = sum(calls for _, calls, _ in phase.by_job.values()) / phase.hours
        api = phase.by_resource["repositories"] / phase.hours
        raw = phase.by_resource["raw"] / phase.hours
        print(
            f"  {phase.name} ({phase.hours:.1f} simulated h): jobs {per_hour}; all jobs "
            f"{total:.0f}/h = {total / API_LIMIT:.0%} of the repositories window (goal ≤ 20 %)"
        )
        print(
            f"    per resource: repositories {api:.0f}/h of {API_LIMIT}, raw {raw:.0f}/h of "
            f"{RAW_LIMIT}; families per hour "
            f"{ {k: round(v / phase.hours) for k, v in sorted(phase.families.items())} }"
        )
    for job, what in (("activity", "reconciliation"), ("people", "permissions read")):
        cov = result.coverage.get(job, {})
        oldest = "none yet" if cov.get("oldest_hours") is None else f"{cov['oldest_hours']:.1f} h"
        print(
            f"  {job} sweep after the quiet phase: oldest {what} {oldest} ago, "
            f"{cov.get('never')} of {cov.get('repositories')} never read; a full sweep "
            f"takes {cov.get('sweep_hours', 0):.1f} simulated h at the {job} share"
        )
    if result.changes:
        cap = change_hours + grace_hours
        print(
            f"  {len(result.changes)} changed repositories (webhooks off): catalog current "
            f"{_spread([c.catalog for c in result.changes], cap)}; pull request current "
            f"{_spread([c.pulls for c in result.changes], cap)}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", default=os.environ.get("BBSYNC_BENCH_STEADY_SIZES", "200"))
    parser.add_argument("--quiet-hours", type=int, default=2)
    parser.add_argument("--change-hours", type=int, default=2)
    parser.add_argument("--grace-hours", type=int, default=1)
    args = parser.parse_args()
    run(args.sizes, args.quiet_hours, args.change_hours, args.grace_hours)


def run(sizes: str, quiet_hours: int, change_hours: int, grace_hours: int) -> None:
    print(
        f"steady state, 1 simulated hour = {HOUR:.0f} s; limits {API_LIMIT}/h repositories, "
        f"{RAW_LIMIT}/h raw; webhooks off; {quiet_hours} quiet simulated hours, then "
        f"{change_hours} with 1 % changing (+{grace_hours} h to catch up) (figures, not pass/fail)"
    )
    for size in (int(s) for s in sizes.split(",") if s.strip()):
        report(measure(size, quiet_hours, change_hours, grace_hours), change_hours, grace_hours)


if __name__ == "__main__":
    main()
