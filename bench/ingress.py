"""Webhook ingress: sustained signed `repo:push` deliveries per second, and latency at 200/s.

bbsync's `POST /webhooks/bitbucket` (verify the HMAC, validate headers and body, store the
delivery in PostgreSQL, enqueue it on the Redis broker, mark it queued, answer 202) is served
by gunicorn exactly as the Procfile's `web` process (`--workers 2 --threads 4` unless
`--web-workers` or `--web-threads` say otherwise; `--web-threads 1` is sync workers).
Beside it, in the same run and driven by the same load generator, a bare baseline: a
minimal Flask app defined here (`baseline_app`), served by gunicorn the same way (same
workers and threads), whose one route only `LPUSH`es the raw body to Redis and answers 202.

Each server is measured alone (the other is stopped): a warm-up, then full speed for a fixed
count (`--deliveries`, default 3,000) from `--threads` client threads (default 8), each with
its own `requests.Session`, for throughput; then paced at `--rate` deliveries/s (default 200)
for `--seconds` (default 10) for p50/p99. Paced latency is counted from each delivery's
intended send time, so a client that falls behind shows up in the figures. Every delivery is
a real simulator push payload (~8 KB, captured from `bitbucket_sim`) for a repository that
exists there, with a new head hash and a fresh `X-Request-UUID`, signed with the secret.
No Celery worker runs: the deliveries only queue (the worker is not part of ingress).
Non-2xx answers and transport errors are counted and printed, and the stored rows and
broker messages are counted against the 2xx answers to show nothing was dropped.

    python -m bench.ingress [--deliveries 3000] [--rate 200] [--seconds 10] [--threads 8]
                            [--web-workers 2] [--web-threads 4]

Needs PostgreSQL on 127.0.0.1:5432 (user postgres, trust) and Redis on 127.0.0.1:6379
(database 12 by default, `BBSYNC_BENCH_E2E_REDIS`; it is flushed). Figures, not pass/fail.
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import hmac
import itertools
import json
import os
import tempfile
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
import redis
import requests
from flask import Flask, request

from bench.processes import gunicorn
from bench.system import (
    REDIS_URL,
    SECRET,
    TOKEN,
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

BASELINE_KEY = "bench:baseline:deliveries"
TARGET_RATIO = 0.5
TARGET_P99_MS = 50.0
TEMPLATE_REPOSITORIES = 5

Delivery = tuple[bytes, dict[str, str]]


def baseline_app() -> Flask:
    """The bare baseline (a gunicorn app factory): push the raw body to Redis, answer 202."""
    client = redis.Redis.from_url(os.environ.get("BENCH_BASELINE_REDIS_URL", REDIS_URL))
    app = Flask("bench-baseline")

    @app.post("/webhooks/bitbucket")
    def receive() -> tuple[str, int]:
        client.lpush(BASELINE_KEY, request.get_data())
        return "", 202

    @app.get("/healthz")
    def healthz() -> tuple[str, int]:
        return "ok", 200

    return app


# -- deliveries ------------------------------------------------------------------------------


def capture_templates(sim: SimProcess, count: int) -> list[dict[str, Any]]:
    """Real `repo:push` payloads: push to `count` repositories of a simulator whose webhook
    points at a closed port, and keep the payloads of its (failed) first attempts."""
    repos = sim.repositories()[:count]
    for repo in repos:
        sim.admin(
            "POST", f"repos/{repo['slug']}/push", json={"files": {"README.md": "bench\n"}}
        ).raise_for_status()
    templates: dict[str, dict[str, Any]] = {}
    deadline = time.monotonic() + 30
    while len(templates) < len(repos) and time.monotonic() < deadline:
        for attempt in sim.deliveries(payload=True):
            payload: dict[str, Any] = attempt["payload"]
            if attempt["event_key"] == "repo:push":
                templates.setdefault(payload["repository"]["full_name"], payload)
        time.sleep(0.1)
    if len(templates) < len(repos):
        raise RuntimeError(f"captured {len(templates)} push payloads of {len(repos)}")
    return list(templates.values())


def make_deliveries(templates: list[dict[str, Any]], count: int) -> list[Delivery]:
    """`count` signed deliveries cycling over the templates: new head hash, fresh UUIDs."""
    hook_uuid = str(uuid.uuid4())
    deliveries: list[Delivery] = []
    for i in range(count):
        payload = copy.deepcopy(templates[i % len(templates)])
        new_hash = hashlib.sha1(uuid.uuid4().bytes).hexdigest()
        for change in payload["push"]["changes"]:
            if change.get("new"):
                change["new"]["target"]["hash"] = new_hash
        body = json.dumps(payload, separators=(",", ":")).encode()
        signature = hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
        headers = {
            "Content-Type": "application/json",
            "User-Agent": "Bitbucket-Webhooks/2.0",
            "X-Event-Key": "repo:push",
            "X-Request-UUID": str(uuid.uuid4()),
            "X-Hook-UUID": hook_uuid,
            "X-Attempt-Number": "1",
            "X-Hub-Signature": f"sha256={signature}",
        }
        deliveries.append((body, headers))
    return deliveries


# -- load generator ----------------------------------------------------------------------------


@dataclass
class Run:
    elapsed: float = 0.0
    latencies: list[float] = field(default_factory=list)  # seconds, answered requests only
    statuses: Counter[str] = field(default_factory=Counter)
    client_cpu: float = 0.0
    server_cpu: float | None = None
    max_lag: float = 0.0  # paced runs: how late the latest send started

    @property
    def ok(self) -> int:
        return sum(n for status, n in self.statuses.items() if status.startswith("2"))

    @property
    def not_ok(self) -> dict[str, int]:
        return {s: n for s, n in sorted(self.statuses.items()) if not s.startswith("2")}

    @property
    def rate(self) -> float:
        return self.ok / self.elapsed if self.elapsed else 0.0

    def ms(self, q: float) -> float:
        return percentile(self.latencies, q) * 1000 if self.latencies else float("nan")


def _proc_cpu(pid: int) -> float:
    """CPU seconds (user + system) of one process, from /proc."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def tree_cpu(pid: int) -> float | None:
    """CPU seconds of a gunicorn master and its workers; None where /proc does not tell."""
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            children = [int(c) for c in f.read().split()]
        return _proc_cpu(pid) + sum(_proc_cpu(child) for child in children)
    except (OSError, ValueError):
        return None


def drive(
    url: str, deliveries: list[Delivery], threads: int, rate: float | None, server_pid: int
) -> Run:
    """Send every delivery once from `threads` threads: as fast as answers come back, or
    open-loop at `rate` per second (delivery i is due at start + i / rate)."""
    run = Run()
    lock = threading.Lock()
    counter = itertools.count()
    start = threading.Barrier(threads + 1)
    origin = [0.0]

    def work() -> None:
        session = requests.Session()
        session.trust_env = False  # 127.0.0.1 only, never through a proxy
        latencies: list[float] = []
        statuses: Counter[str] = Counter()
        lag = 0.0
        start.wait()
        t0 = origin[0]
        while True:
            with lock:
                i = next(counter)
            if i >= len(deliveries):
                break
            body, headers = deliveries[i]
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
                response = session.post(url, data=body, headers=headers, timeout=30)
                statuses[str(response.status_code)] += 1
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


@dataclass
class Measured:
    name: str
    full: Run
    paced: Run
    answered_2xx: int  # warm-up included
    stored: str = ""


def measure(
    name: str,
    url: str,
    templates: list[dict[str, Any]],
    args: argparse.Namespace,
    server_pid: int,
) -> Measured:
    paced_count = int(args.rate * args.seconds)
    deliveries = make_deliveries(templates, args.warmup + args.deliveries + paced_count)
    warm = deliveries[: args.warmup]
    full = deliveries[args.warmup : args.warmup + args.deliveries]
    paced = deliveries[args.warmup + args.deliveries :]
    warmup = drive(url, warm, args.threads, None, server_pid)
    time.sleep(0.5)
    full_run = drive(url, full, args.threads, None, server_pid)
    time.sleep(1.0)
    paced_run = drive(url, paced, args.threads, args.rate, server_pid)
    total_ok = warmup.ok + full_run.ok + paced_run.ok
    if warmup.not_ok:
        print(f"  {name}: warm-up non-2xx answers: {warmup.not_ok}")
    return Measured(name, full_run, paced_run, total_ok)


# -- the two servers ---------------------------------------------------------------------------


def run_baseline(
    procs: Processes, templates: list[dict[str, Any]], args: argparse.Namespace
) -> Measured:
    port = free_port()
    procs.start(
        "baseline",
        gunicorn(port, args.web_workers, "bench.ingress:baseline_app()", threads=args.web_threads),
        {"BENCH_BASELINE_REDIS_URL": REDIS_URL},
    )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: answers(f"{base}/healthz"), 30, "baseline gunicorn answering")
        result = measure(
            "baseline", f"{base}/webhooks/bitbucket", templates, args, procs.running["baseline"].pid
        )
        client = redis.Redis.from_url(REDIS_URL)
        pushed = client.llen(BASELINE_KEY)
        client.close()
        result.stored = f"{pushed} bodies in the Redis list for {result.answered_2xx} 2xx answers"
        return result
    finally:
        procs.stop("baseline")


def run_bbsync(
    procs: Processes,
    templates: list[dict[str, Any]],
    args: argparse.Namespace,
    database_url: str,
    api_url: str,
) -> Measured:
    port = free_port()
    procs.start(
        "web",
        gunicorn(port, args.web_workers, "app.web.wsgi:app", threads=args.web_threads),
        bbsync_env(database_url, api_url),
    )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: answers(f"{base}/healthz"), 30, "bbsync gunicorn answering")
        result = measure(
            "bbsync", f"{base}/webhooks/bitbucket", templates, args, procs.running["web"].pid
        )
        plain_url = database_url.replace("postgresql+psycopg://", "postgresql://")
        with psycopg.connect(plain_url) as conn:
            rows = conn.execute(
                "SELECT status, count(*) FROM webhook_deliveries GROUP BY status ORDER BY status"
            ).fetchall()
        client = redis.Redis.from_url(REDIS_URL)
        queued = client.llen("events")
        client.close()
        by_status = ", ".join(f"{status} {n}" for status, n in rows)
        result.stored = (
            f"{sum(n for _, n in rows)} rows ({by_status}) and {queued} messages on the "
            f"'events' queue for {result.answered_2xx} 2xx answers"
        )
        return result
    finally:
        procs.stop("web")


# -- report -----------------------------------------------------------------------------------


def _cpu_per_delivery(run: Run) -> str:
    if run.server_cpu is None or not run.ok:
        return "n/a"
    return f"{run.server_cpu / run.ok * 1000:.2f} ms"


def report(bbsync: Measured, baseline: Measured, args: argparse.Namespace) -> None:
    ratio = bbsync.full.rate / baseline.full.rate if baseline.full.rate else float("nan")
    p99 = bbsync.paced.ms(99)
    rows = [
        ("full speed: deliveries/s (2xx)", f"{bbsync.full.rate:.0f}", f"{baseline.full.rate:.0f}"),
        (
            "full speed: p50 / p99 ms",
            f"{bbsync.full.ms(50):.1f} / {bbsync.full.ms(99):.1f}",
            f"{baseline.full.ms(50):.1f} / {baseline.full.ms(99):.1f}",
        ),
        (
            "gunicorn CPU per delivery",
            _cpu_per_delivery(bbsync.full),
            _cpu_per_delivery(baseline.full),
        ),
        (
            "load generator CPU, % of wall",
            f"{bbsync.full.client_cpu / bbsync.full.elapsed:.0%}",
            f"{baseline.full.client_cpu / baseline.full.elapsed:.0%}",
        ),
        (
            f"at {args.rate:g}/s: achieved/s",
            f"{bbsync.paced.rate:.0f}",
            f"{baseline.paced.rate:.0f}",
        ),
        (
            f"at {args.rate:g}/s: p50 ms",
            f"{bbsync.paced.ms(50):.1f}",
            f"{baseline.paced.ms(50):.1f}",
        ),
        (f"at {args.rate:g}/s: p99 ms", f"{p99:.1f}", f"{baseline.paced.ms(99):.1f}"),
        (
            f"at {args.rate:g}/s: max ms / worst send lag ms",
            f"{bbsync.paced.ms(100):.1f} / {bbsync.paced.max_lag * 1000:.1f}",
            f"{baseline.paced.ms(100):.1f} / {baseline.paced.max_lag * 1000:.1f}",
        ),
    ]
    print()
    print(f"  {'':<44}{'bbsync':>16}{'baseline':>16}")
    for label, ours, theirs in rows:
        print(f"  {label:<44}{ours:>16}{theirs:>16}")
    print()
    print(
        f"  throughput ratio bbsync/baseline: {ratio:.2f}  (target >= {TARGET_RATIO}: "
        f"{'met' if ratio >= TARGET_RATIO else 'NOT met'})"
    )
    print(
        f"  bbsync p99 at {args.rate:g}/s: {p99:.1f} ms  (target <= {TARGET_P99_MS:g} ms: "
        f"{'met' if p99 <= TARGET_P99_MS else 'NOT met'})"
    )
    for measured in (bbsync, baseline):
        if measured.paced.rate < 0.95 * args.rate:
            print(
                f"  {measured.name} did not keep up with {args.rate:g}/s (answered "
                f"{measured.paced.rate:.0f}/s): its paced latencies are mostly time in line"
            )
    for measured in (bbsync, baseline):
        not_ok = {**measured.full.not_ok}
        for status, n in measured.paced.not_ok.items():
            not_ok[status] = not_ok.get(status, 0) + n
        print(
            f"  {measured.name}: non-2xx answers / errors: {not_ok or 'none'}; "
            f"stored: {measured.stored}"
        )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bench.ingress",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--deliveries", type=int, default=3000, help="full-speed count")
    parser.add_argument("--rate", type=float, default=200.0, help="paced deliveries per second")
    parser.add_argument("--seconds", type=float, default=10.0, help="paced duration")
    parser.add_argument("--threads", type=int, default=8, help="load generator threads")
    parser.add_argument("--web-workers", type=int, default=2, help="gunicorn workers")
    parser.add_argument(
        "--web-threads",
        type=int,
        default=1,
        help="threads a worker, both servers (the Procfile's WEB_THREADS; 1: sync workers)",
    )
    parser.add_argument("--warmup", type=int, default=200, help="unmeasured deliveries first")
    args = parser.parse_args(argv)

    began = time.perf_counter()
    logs = Path(tempfile.mkdtemp(prefix="bbsync-bench-ingress-"))
    print(
        f"ingress: signed repo:push deliveries, gunicorn --workers {args.web_workers} "
        f"({f'--threads {args.web_threads}' if args.web_threads > 1 else 'sync'}) "
        f"for both servers, {args.threads} client threads (requests.Session each), "
        f"{os.cpu_count()} CPUs; client, servers, PostgreSQL and Redis share this machine"
    )
    print(
        "  bbsync: verify + validate + INSERT into PostgreSQL + enqueue on the Redis broker; "
        "no Celery worker runs (deliveries only queue)"
    )
    print("  baseline: minimal Flask app, LPUSH of the raw body to Redis, 202", flush=True)
    flush_redis()
    try:
        with (
            migrated_database() as database_url,
            SimProcess(
                workspace=WORKSPACE,
                repos=20,
                seed=21,
                access_token=TOKEN,
                webhook_url=f"http://127.0.0.1:{free_port()}/closed",
                webhook_retry_delay=0.05,
            ) as sim,
            Processes(logs) as procs,
        ):
            templates = capture_templates(sim, TEMPLATE_REPOSITORIES)
            size = sum(len(json.dumps(t, separators=(",", ":"))) for t in templates)
            print(
                f"  payloads: real simulator push bodies for {len(templates)} repositories, "
                f"~{size / len(templates) / 1024:.1f} KB each"
            )
            baseline = run_baseline(procs, templates, args)
            bbsync = run_bbsync(procs, templates, args, database_url, sim.api_url)
            report(bbsync, baseline, args)
    finally:
        flush_redis()
    print(f"  took {time.perf_counter() - began:.0f} s; server logs in {logs}")


if __name__ == "__main__":
    main()
