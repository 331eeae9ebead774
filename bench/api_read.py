"""Read API: repository health lookups per second at 10,000 repositories, on PostgreSQL, and
the Bitbucket calls the same page views would cost a Backstage plugin calling Bitbucket live.

A fresh PostgreSQL database (a copy of the migrated template, `bench/databases.py`) is filled
directly with COPY: one workspace (`acme`), 50 projects, `--repos` repositories (default
10,000), each with `--prs` pull requests (default 50: 3 to 7 OPEN, the rest MERGED, DECLINED
or SUPERSEDED), `--pipelines` Pipelines runs (default 20: COMPLETED on `main`, ~85 %
SUCCESSFUL, the rest FAILED) and 3 commit statuses on its head commit; then ANALYZE. bbsync's
web process is served by gunicorn as the Procfile's `web` process (`--workers 2 --threads 4`;
`--web-threads 1` for sync workers), with `BITBUCKET_API_URL` pointing at the simulator
(`bitbucket_sim`), whose call counter is read before and after the load: bbsync must make no
Bitbucket call at read time.

Load: `GET /api/repositories/acme/<slug>/health` with a bearer service token, random slugs,
from `--threads` client threads (default 6, a `requests.Session` each). An unmeasured warm-up
(`--warmup`, default 500), then full speed for `--requests` (default 5,000) for throughput and
latency under saturation, then paced at `--rate` lookups/s (default: half the full-speed
rate) for `--seconds` (default 10) for latency without a queue (counted from each request's
intended send time).

The live-calling plugin baseline is computed, not measured: per page view of a repository's
health a plugin calling Bitbucket would need at least ceil(open PRs / 50) calls for the open
pull requests (at least 1), 1 for the recent pipelines, 1 for the default branch head and 1
for its commit statuses: 4 calls for every repository here (all have fewer than 50 open).

    python -m bench.api_read [--repos 10000] [--requests 5000] [--threads 6] [--rate 100]

Needs PostgreSQL on 127.0.0.1:5432 (user postgres, trust) and Redis on 127.0.0.1:6379
(database 11 by default, `BBSYNC_BENCH_API_REDIS`; it is flushed). Figures, not pass/fail.
"""

from __future__ import annotations

import argparse
import itertools
import math
import os
import random
import tempfile
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import requests

from bench.ingress import tree_cpu
from bench.processes import gunicorn
from bench.system import (
    WORKSPACE,
    Processes,
    answers,
    bbsync_env,
    flush_redis,
    free_port,
    migrated_database,
    percentile,
    wait_until,
)
from bitbucket_sim.testing import SimProcess

REDIS_URL = os.environ.get("BBSYNC_BENCH_API_REDIS", "redis://127.0.0.1:6379/11")
API_TOKEN = "bench-token"
TARGET_P99_MS = 20.0
PROJECTS = 50
STATUS_KEYS = ("ci/build", "ci/lint", "sonarqube")
PLUGIN_PAGE_LEN = 50  # open pull requests a page, as a plugin would ask for
PLUGIN_FIXED_CALLS = 3  # recent pipelines, default branch head, the head's statuses


# -- data ---------------------------------------------------------------------------------------


@dataclass
class Dataset:
    slugs: list[str]
    open_prs: list[int]  # per repository, in the order of `slugs`
    rows: dict[str, int]
    seconds: float


def _hex40(rng: random.Random) -> str:
    return f"{rng.getrandbits(160):040x}"


def _uuid(rng: random.Random) -> str:
    return "{" + str(uuid.UUID(int=rng.getrandbits(128), version=4)) + "}"


def fill(database_url: str, repos: int, prs: int, pipelines: int, seed: int) -> Dataset:
    """Bulk-load the mirror with COPY (explicit ids, sequences moved past them), then ANALYZE."""
    began = time.perf_counter()
    rng = random.Random(seed)
    now = datetime.now(UTC).replace(microsecond=0)
    slugs = [f"service-{i:05d}" for i in range(1, repos + 1)]
    open_prs: list[int] = []
    rows: Counter[str] = Counter()
    plain_url = database_url.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(plain_url) as conn, conn.cursor() as cur:
        with cur.copy(
            "COPY workspaces (id, uuid, slug, name, created_at, updated_at) FROM STDIN"
        ) as copy:
            copy.write_row((1, _uuid(rng), WORKSPACE, "Acme", now, now))
            rows["workspaces"] += 1
        with cur.copy(
            "COPY projects (id, uuid, workspace_id, key, name, updated_at) FROM STDIN"
        ) as copy:
            for p in range(1, PROJECTS + 1):
                copy.write_row((p, _uuid(rng), 1, f"P{p:02d}", f"Project {p}", now))
                rows["projects"] += 1
        heads: list[str] = []
        with cur.copy(
            "COPY repositories (id, uuid, workspace_id, project_id, slug, full_name, name, "
            "description, is_private, language, default_branch, head_commit, created_on, "
            "updated_on, synced_at, last_push_at) FROM STDIN"
        ) as copy:
            for i, slug in enumerate(slugs, start=1):
                head = _hex40(rng)
                heads.append(head)
                pushed = now - timedelta(minutes=rng.randint(1, 60 * 24 * 90))
                copy.write_row(
                    (
                        i,
                        _uuid(rng),
                        1,
                        (i - 1) % PROJECTS + 1,
                        slug,
                        f"{WORKSPACE}/{slug}",
                        slug,
                        f"The {slug} service",
                        True,
                        "python",
                        "main",
                        head,
                        pushed - timedelta(days=rng.randint(90, 2000)),
                        pushed,
                        now,
                        pushed,
                    )
                )
                rows["repositories"] += 1
        with cur.copy(
            "COPY pull_requests (repository_id, number, title, state, author_account_id, "
            "author_display_name, source_branch, destination_branch, source_commit, "
            "destination_commit, merge_commit, comment_count, task_count, created_on, "
            "updated_on, closed_on) FROM STDIN"
        ) as copy:
            for i in range(1, repos + 1):
                n_open = min(prs, rng.randint(3, 7))
                open_prs.append(n_open)
                for number in range(1, prs + 1):
                    created = now - timedelta(hours=(prs - number) * 30 + rng.randint(1, 29))
                    updated = created + timedelta(hours=rng.randint(0, 24))
                    if number > prs - n_open:
                        state, closed, merge = "OPEN", None, None
                    else:
                        state = rng.choices(("MERGED", "DECLINED", "SUPERSEDED"), (7, 2, 1))[0]
                        closed = updated
                        merge = _hex40(rng) if state == "MERGED" else None
                    author = rng.randint(1, 200)
                    copy.write_row(
                        (
                            i,
                            number,
                            f"Change {number} of service {i}",
                            state,
                            f"557058:{author:06d}",
                            f"Developer {author}",
                            f"feature/change-{number}",
                            "main",
                            _hex40(rng),
                            _hex40(rng),
                            merge,
                            rng.randint(0, 12),
                            rng.randint(0, 3),
                            created,
                            updated,
                            closed,
                        )
                    )
                    rows["pull_requests"] += 1
        with cur.copy(
            "COPY pipelines (uuid, repository_id, build_number, state, result, trigger, "
            "ref_type, ref_name, commit_hash, duration_seconds, created_on, completed_on) "
            "FROM STDIN"
        ) as copy:
            for i in range(1, repos + 1):
                for build in range(1, pipelines + 1):
                    created = now - timedelta(hours=(pipelines - build) * 6 + rng.randint(1, 5))
                    duration = rng.randint(60, 900)
                    copy.write_row(
                        (
                            _uuid(rng),
                            i,
                            build,
                            "COMPLETED",
                            "SUCCESSFUL" if rng.random() < 0.85 else "FAILED",
                            "PUSH",
                            "branch",
                            "main",
                            heads[i - 1] if build == pipelines else _hex40(rng),
                            duration,
                            created,
                            created + timedelta(seconds=duration),
                        )
                    )
                    rows["pipelines"] += 1
        with cur.copy(
            "COPY commit_statuses (repository_id, commit_hash, key, state, name, description, "
            "refname, url, created_on, updated_on) FROM STDIN"
        ) as copy:
            for i in range(1, repos + 1):
                for key in STATUS_KEYS:
                    created = now - timedelta(minutes=rng.randint(5, 600))
                    copy.write_row(
                        (
                            i,
                            heads[i - 1],
                            key,
                            rng.choices(("SUCCESSFUL", "FAILED", "INPROGRESS"), (8, 1, 1))[0],
                            key,
                            f"{key} on main",
                            "main",
                            f"https://ci.example.com/{slugs[i - 1]}/{key}",
                            created,
                            created + timedelta(minutes=rng.randint(1, 30)),
                        )
                    )
                    rows["commit_statuses"] += 1
        for table in ("workspaces", "projects", "repositories"):  # the explicit ids
            cur.execute(
                f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), "
                f"(SELECT max(id) FROM {table}))"
            )
        conn.commit()
        cur.execute("ANALYZE")
        conn.commit()
    return Dataset(slugs, open_prs, dict(rows), time.perf_counter() - began)


# -- load generator -----------------------------------------------------------------------------


@dataclass
class Run:
    elapsed: float = 0.0
    latencies: list[float] = field(default_factory=list)  # seconds, 200 answers only
    statuses: Counter[str] = field(default_factory=Counter)
    client_cpu: float = 0.0
    server_cpu: float | None = None
    max_lag: float = 0.0

    @property
    def ok(self) -> int:
        return self.statuses.get("200", 0)

    @property
    def not_ok(self) -> dict[str, int]:
        return {s: n for s, n in sorted(self.statuses.items()) if s != "200"}

    @property
    def rate(self) -> float:
        return self.ok / self.elapsed if self.elapsed else 0.0

    def ms(self, q: float) -> float:
        return percentile(self.latencies, q) * 1000 if self.latencies else float("nan")


def drive(base: str, slugs: list[str], threads: int, rate: float | None, server_pid: int) -> Run:
    """GET the health of each slug once from `threads` threads: as fast as answers come back,
    or open-loop at `rate` per second (request i is due at start + i / rate)."""
    run = Run()
    lock = threading.Lock()
    counter = itertools.count()
    start = threading.Barrier(threads + 1)
    origin = [0.0]

    def work() -> None:
        session = requests.Session()
        session.trust_env = False  # 127.0.0.1 only, never through a proxy
        session.headers["Authorization"] = f"Bearer {API_TOKEN}"
        latencies: list[float] = []
        statuses: Counter[str] = Counter()
        lag = 0.0
        start.wait()
        t0 = origin[0]
        while True:
            with lock:
                i = next(counter)
            if i >= len(slugs):
                break
            due: float | None = None
            if rate is not None:
                due = t0 + i / rate
                wait = due - time.perf_counter()
                if wait > 0:
                    time.sleep(wait)
                else:
                    lag = max(lag, -wait)
            sent = time.perf_counter()
            try:
                response = session.get(
                    f"{base}/api/repositories/{WORKSPACE}/{slugs[i]}/health", timeout=30
                )
                statuses[str(response.status_code)] += 1
                if response.status_code == 200:
                    latencies.append(time.perf_counter() - (sent if due is None else due))
            except requests.RequestException as exc:
                statuses[type(exc).__name__] += 1
        session.close()
        with lock:
            run.latencies.extend(latencies)
            run.statuses.update(statuses)
            run.max_lag = max(run.max_lag, lag)

    workers = [threading.Thread(target=work, daemon=True) for _ in range(threads)]
    for worker in workers:
        worker.start()
    server_before = tree_cpu(server_pid)
    cpu_before = time.process_time()
    origin[0] = time.perf_counter() + 0.05
    start.wait()
    for worker in workers:
        worker.join()
    run.elapsed = time.perf_counter() - origin[0]
    run.client_cpu = time.process_time() - cpu_before
    server_after = tree_cpu(server_pid)
    if server_before is not None and server_after is not None:
        run.server_cpu = server_after - server_before
    return run


def check_answer(base: str, data: Dataset) -> str:
    """One health answer read back against the rows loaded for it."""
    index = len(data.slugs) // 2
    response = requests.get(
        f"{base}/api/repositories/{WORKSPACE}/{data.slugs[index]}/health",
        headers={"Authorization": f"Bearer {API_TOKEN}"},
        timeout=10,
    )
    response.raise_for_status()
    body: dict[str, Any] = response.json()
    expected = data.open_prs[index]
    agrees = body.get("open_pull_requests") == expected
    return (
        f"{data.slugs[index]}: open_pull_requests {body.get('open_pull_requests')} "
        f"(loaded {expected}: {'agrees' if agrees else 'DISAGREES'}), pipeline_runs "
        f"{body.get('pipeline_runs')}, success rate {body.get('pipeline_success_rate')}, "
        f"builds on head {len(body.get('builds_on_head') or [])}, last build "
        f"{(body.get('last_build') or {}).get('source')}, {len(response.content)} bytes"
    )


def plugin_calls(data: Dataset, picks: list[int]) -> int:
    """What the same page views would cost a plugin calling Bitbucket live (a lower bound)."""
    return sum(
        max(1, math.ceil(data.open_prs[i] / PLUGIN_PAGE_LEN)) + PLUGIN_FIXED_CALLS for i in picks
    )


# -- report -------------------------------------------------------------------------------------


def _cpu_per_request(run: Run) -> str:
    if run.server_cpu is None or not run.ok:
        return "n/a"
    return f"{run.server_cpu / run.ok * 1000:.2f} ms"


def report(
    data: Dataset,
    runs: tuple[Run, Run, Run],
    args: argparse.Namespace,
    calls: int,
    viewed: list[int],
) -> None:
    """`viewed`: the repository index of every page view answered or attempted."""
    warm, full, paced = runs
    print()
    print(
        f"  loaded {sum(data.rows.values()):,} rows in {data.seconds:.1f} s (COPY + ANALYZE): "
        + ", ".join(f"{table} {n:,}" for table, n in data.rows.items())
    )
    rows = [
        ("requests (200 answers)", f"{full.ok:,}", f"{paced.ok:,}"),
        ("errors / non-200", str(full.not_ok or "none"), str(paced.not_ok or "none")),
        ("elapsed s", f"{full.elapsed:.1f}", f"{paced.elapsed:.1f}"),
        ("health lookups/s", f"{full.rate:.0f}", f"{paced.rate:.0f}"),
        ("p50 ms", f"{full.ms(50):.1f}", f"{paced.ms(50):.1f}"),
        ("p95 ms", f"{full.ms(95):.1f}", f"{paced.ms(95):.1f}"),
        ("p99 ms", f"{full.ms(99):.1f}", f"{paced.ms(99):.1f}"),
        ("max ms", f"{full.ms(100):.1f}", f"{paced.ms(100):.1f}"),
        ("gunicorn CPU per lookup", _cpu_per_request(full), _cpu_per_request(paced)),
        (
            "load generator CPU, % of wall",
            f"{full.client_cpu / full.elapsed:.0%}",
            f"{paced.client_cpu / paced.elapsed:.0%}",
        ),
    ]
    print()
    print(f"  {'':<34}{'full speed':>16}{f'paced {args.rate:g}/s':>16}")
    for label, a, b in rows:
        print(f"  {label:<34}{a:>16}{b:>16}")
    if paced.rate < 0.95 * args.rate:
        print(
            f"  the server did not keep up with {args.rate:g}/s (answered {paced.rate:.0f}/s): "
            "paced latencies are mostly time in line"
        )
    elif paced.max_lag > 0.05:
        print(f"  paced: the client started a request up to {paced.max_lag * 1000:.0f} ms late")
    if warm.not_ok:
        print(f"  warm-up non-200 answers: {warm.not_ok}")

    views = len(viewed)
    plugin = plugin_calls(data, viewed)
    print()
    print(f"  Bitbucket calls for {views:,} health page views (warm-up and check included):")
    print(f"    bbsync (simulator call counter, measured)     {calls:>10,}")
    print(f"    live-calling plugin (computed, lower bound)   {plugin:>10,}  (4 a page view)")
    if calls == 0:
        print("    ratio plugin/bbsync: unbounded (bbsync makes 0 calls at read time)")
    else:
        print(f"    ratio plugin/bbsync: {plugin / calls:.1f}")
    print()
    p99 = paced.ms(99)
    print(
        f"  target p99 <= {TARGET_P99_MS:g} ms for a health lookup: paced p99 {p99:.1f} ms "
        f"({'met' if p99 <= TARGET_P99_MS else 'NOT met'}); full-speed p99 "
        f"{full.ms(99):.1f} ms ({'met' if full.ms(99) <= TARGET_P99_MS else 'NOT met'}, "
        f"{args.threads} clients queued on {args.web_workers} workers)"
    )
    print(
        f"  target zero Bitbucket calls at read time: {calls} "
        f"({'met' if calls == 0 else 'NOT met'})"
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bench.api_read",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--repos", type=int, default=10_000, help="repositories loaded")
    parser.add_argument("--prs", type=int, default=50, help="pull requests a repository")
    parser.add_argument("--pipelines", type=int, default=20, help="pipelines a repository")
    parser.add_argument("--requests", type=int, default=5000, help="full-speed lookups")
    parser.add_argument("--warmup", type=int, default=500, help="unmeasured lookups first")
    parser.add_argument(
        "--rate", type=float, default=0.0, help="paced lookups/s (0: half the full-speed rate)"
    )
    parser.add_argument("--seconds", type=float, default=10.0, help="paced duration")
    parser.add_argument("--threads", type=int, default=6, help="load generator threads")
    parser.add_argument("--web-workers", type=int, default=2, help="gunicorn workers")
    parser.add_argument(
        "--web-threads",
        type=int,
        default=1,
        help="threads a worker (the Procfile's WEB_THREADS; 1: sync workers)",
    )
    parser.add_argument("--seed", type=int, default=7, help="data and slug choice")
    args = parser.parse_args(argv)

    began = time.perf_counter()
    logs = Path(tempfile.mkdtemp(prefix="bbsync-bench-api-read-"))
    print(
        f"api_read: GET /api/repositories/{WORKSPACE}/<slug>/health, {args.repos:,} repositories "
        f"x {args.prs} pull requests x {args.pipelines} pipelines on PostgreSQL; gunicorn "
        f"--workers {args.web_workers} "
        f"({f'--threads {args.web_threads}' if args.web_threads > 1 else 'sync'}), "
        f"{args.threads} client threads "
        f"(requests.Session each), {os.cpu_count()} CPUs; client, server, PostgreSQL share "
        "this machine",
        flush=True,
    )
    flush_redis(REDIS_URL)
    try:
        with (
            migrated_database() as database_url,
            SimProcess(workspace=WORKSPACE, repos=1, access_token="t") as sim,
            Processes(logs) as procs,
        ):
            data = fill(database_url, args.repos, args.prs, args.pipelines, args.seed)
            print(f"  loaded in {data.seconds:.1f} s", flush=True)
            port = free_port()
            procs.start(
                "web",
                gunicorn(port, args.web_workers, "app.web.wsgi:app", threads=args.web_threads),
                bbsync_env(
                    database_url,
                    sim.api_url,
                    REDIS_URL=REDIS_URL,
                    CELERY_BROKER_URL=REDIS_URL,
                    BITBUCKET_ACCESS_TOKEN="t",
                    BITBUCKET_WEBHOOK_SECRET="x",
                    BBSYNC_API_TOKENS=API_TOKEN,
                ),
            )
            base = f"http://127.0.0.1:{port}"
            wait_until(lambda: answers(f"{base}/healthz"), 30, "bbsync gunicorn answering")
            procs.check_alive("web")
            pid = procs.running["web"].pid

            rng = random.Random(args.seed + 1)
            picks = [rng.randrange(args.repos) for _ in range(args.warmup + args.requests)]
            slugs = [data.slugs[i] for i in picks]

            calls_before = int(sim.stats()["calls_total"])
            checked = check_answer(base, data)
            warm = drive(base, slugs[: args.warmup], args.threads, None, pid)
            time.sleep(0.5)
            full = drive(base, slugs[args.warmup :], args.threads, None, pid)
            if args.rate <= 0:
                args.rate = max(1.0, round(full.rate / 2))
            paced_picks = [rng.randrange(args.repos) for _ in range(int(args.rate * args.seconds))]
            picks += paced_picks
            print(
                f"  full speed: {full.rate:.0f} lookups/s; pacing at {args.rate:g}/s "
                f"for {args.seconds:g} s",
                flush=True,
            )
            time.sleep(1.0)
            paced = drive(base, [data.slugs[i] for i in paced_picks], args.threads, args.rate, pid)
            calls = int(sim.stats()["calls_total"]) - calls_before
            print(f"  answer checked: {checked}")
            viewed = [len(data.slugs) // 2, *picks]  # the checked answer first
            report(data, (warm, full, paced), args, calls, viewed)
    finally:
        flush_redis(REDIS_URL)
    print(f"  took {time.perf_counter() - began:.0f} s; server log in {logs}")


if __name__ == "__main__":
    main()
