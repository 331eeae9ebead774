"""Catalog freshness: time from a Bitbucket push that edits `catalog-info.yaml` to the new
entity being served at `GET /catalog/entities`, with the whole system running for real.

The system is started as `tests/test_webhook_flow.py` starts it: a fresh PostgreSQL database
(a copy of the migrated template, `bench/databases.py`), a Redis database of the benchmark's
own (flushed), the simulator (`bitbucket_sim`, 60 repositories, seed 21) with bbsync's hook
registered through its hooks API, an initial full sync (`WorkspaceSync`), gunicorn serving
`app.web.wsgi:app` (`--workers 2`, sync) and a real Celery worker (`--concurrency 2`,
queues events,sync,default). bbsync runs with its default settings (so the push coalescing
window `BBSYNC_PUSH_COALESCE_SECONDS` is 5 s and the budget is 1,000 calls an hour).

Then `--pushes` (default 200) simulator pushes, one after another, alternating over
`--repos` (default 20) repositories with a root `catalog-info.yaml` (`catalog_layout ==
"single"`): each push writes a descriptor with a new `metadata.name`, and the clock runs from
just before the push until a poll of `/catalog/entities?kind=Component&limit=5000` (every
`--poll-ms`, default 20 ms, with If-None-Match) returns that name. The next push starts only
after the previous one is served. Three unmeasured warm-up pushes go to other repositories
first. Printed: p50, p95 and max against the target p95 <= 2 s, a breakdown per stage
(push -> delivery answered by the web process, -> delivery processed by the worker,
-> entity served), the figures apart for pushes that found their repository's coalescing
window still open (its Redis key read just before the push: such a push waits for the
window's trailing read), the slowest pushes, and every non-2xx answer (webhook attempts,
catalog polls) and failed delivery. Bounded: a push not served within `--timeout` s
(default 30) counts as missed, and no new push starts after `--budget` s (default 150) of
measuring.

    python -m bench.freshness [--pushes 200] [--repos 20] [--poll-ms 20]

Needs PostgreSQL on 127.0.0.1:5432 (user postgres, trust) and Redis on 127.0.0.1:6379
(database 12 by default, `BBSYNC_BENCH_E2E_REDIS`; it is flushed). Figures, not pass/fail.
"""

from __future__ import annotations

import argparse
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import requests
from sqlalchemy import select

from app.bitbucket.webhooks import HANDLED_EVENTS
from app.config import settings_from_env
from app.models import Repository, WebhookDelivery
from app.runtime import Runtime
from app.sync.workspace import WorkspaceSync
from bench.processes import celery_worker, gunicorn
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
from workers.tasks.refresh import REFRESH_KEY_PREFIX

TARGET_P95_S = 2.0
WARMUP_PUSHES = 3
COALESCE_SECONDS = 5.0  # bbsync's default BBSYNC_PUSH_COALESCE_SECONDS, left unset here


def descriptor(name: str) -> str:
    return (
        "apiVersion: backstage.io/v1alpha1\nkind: Component\nmetadata:\n"
        f"  name: {name}\nspec:\n  type: service\n  lifecycle: production\n"
        "  owner: group:default/team\n"
    )


@dataclass
class Push:
    slug: str
    name: str
    commit: str = ""
    pushed_at: float = 0.0  # time.time(), just before the push request
    served_at: float | None = None  # time.time(), when a poll first showed the name
    window_left: float = 0.0  # seconds left of the repository's coalescing window at the push

    @property
    def latency(self) -> float | None:
        return None if self.served_at is None else self.served_at - self.pushed_at


class CatalogPoller:
    """Polls the served catalog with If-None-Match; parses only what changed."""

    def __init__(self, web_url: str) -> None:
        self.url = f"{web_url}/catalog/entities"
        self.session = requests.Session()
        self.session.trust_env = False
        self.etag: str | None = None
        self.names: set[str] = set()
        self.polls = 0
        self.statuses: Counter[str] = Counter()

    def poll(self) -> set[str]:
        headers = {"If-None-Match": self.etag} if self.etag else {}
        self.polls += 1
        try:
            response = self.session.get(
                self.url,
                params={"kind": "Component", "limit": "5000"},
                headers=headers,
                timeout=10,
            )
        except requests.RequestException as exc:
            self.statuses[type(exc).__name__] += 1
            return self.names
        self.statuses[str(response.status_code)] += 1
        if response.status_code == 200:
            items: list[dict[str, Any]] = response.json()["items"]
            self.names = {item["metadata"]["name"] for item in items}
            self.etag = response.headers.get("ETag")
        return self.names


def push(
    sim: SimProcess,
    poller: CatalogPoller,
    item: Push,
    poll_s: float,
    timeout: float,
    window: Callable[[str], float],
) -> None:
    item.window_left = window(item.slug)
    item.pushed_at = time.time()
    response = sim.admin(
        "POST",
        f"repos/{item.slug}/push",
        json={"files": {"catalog-info.yaml": descriptor(item.name)}},
    )
    response.raise_for_status()
    item.commit = response.json()["hash"]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if item.name in poller.poll():
            item.served_at = time.time()
            return
        time.sleep(poll_s)


def _epoch(value: str | datetime | None) -> float | None:
    if value is None:
        return None
    moment = datetime.fromisoformat(value) if isinstance(value, str) else value
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


def _summary(values: list[float]) -> str:
    if not values:
        return "n/a"
    return (
        f"p50 {percentile(values, 50) * 1000:7.0f} ms   p95 {percentile(values, 95) * 1000:7.0f}"
        f" ms   max {max(values) * 1000:7.0f} ms"
    )


def report(
    pushes: list[Push], sim: SimProcess, rt: Runtime, poller: CatalogPoller, web_url: str
) -> None:
    attempts = sim.deliveries(payload=True)
    by_commit: dict[str, dict[str, Any]] = {}
    webhook_statuses: Counter[str] = Counter()
    for attempt in attempts:
        status = attempt["status_code"]
        webhook_statuses[str(status) if status is not None else "no answer"] += 1
        if attempt["event_key"] != "repo:push" or not (status and 200 <= status < 300):
            continue
        for change in attempt["payload"]["push"]["changes"]:
            target = (change.get("new") or {}).get("target") or {}
            if target.get("hash"):
                by_commit[target["hash"]] = attempt
    with rt.sessions() as session:
        rows = session.execute(
            select(
                WebhookDelivery.request_uuid,
                WebhookDelivery.status,
                WebhookDelivery.processed_at,
                WebhookDelivery.error,
            )
        ).all()
    deliveries = {row.request_uuid: row for row in rows}
    statuses = Counter(row.status for row in rows)

    served = [p for p in pushes if p.latency is not None]
    latencies = [p.latency for p in served if p.latency is not None]
    answered: list[float] = []
    processed: list[float] = []
    visible: list[float] = []
    # A push that finds its repository's coalescing window open (more than the ~30 ms a
    # delivery takes to reach the worker left of it) is read at the window's end.
    read_now = [p.latency for p in served if p.latency is not None and p.window_left <= 0.03]
    coalesced = [p.latency for p in served if p.latency is not None and p.window_left > 0.03]
    for p in served:
        match = by_commit.get(p.commit)
        answered_at = _epoch(match["delivered_at"]) if match else None
        row = deliveries.get(match["request_uuid"].strip("{}").lower()) if match else None
        processed_at = _epoch(row.processed_at) if row is not None else None
        if answered_at is None or processed_at is None or p.served_at is None:
            continue
        answered.append(answered_at - p.pushed_at)
        processed.append(processed_at - answered_at)
        visible.append(p.served_at - processed_at)
    cycle = [
        p.pushed_at - q.pushed_at
        for q, p in zip(pushes, pushes[len({x.slug for x in pushes}) :], strict=False)
    ]

    print()
    print(
        f"  pushes measured: {len(pushes)}, served: {len(served)}, "
        f"missed: {len(pushes) - len(served)}"
    )
    if latencies:
        p95 = percentile(latencies, 95)
        print(f"  push -> served entity:        {_summary(latencies)}")
        print(
            f"  target p95 <= {TARGET_P95_S:g} s: {'met' if p95 <= TARGET_P95_S else 'NOT met'}"
            f" ({p95:.2f} s)"
        )
    print(f"  stages ({len(answered)} pushes matched to their delivery):")
    print(f"    push -> delivery answered:   {_summary(answered)}")
    print(f"    answered -> processed:       {_summary(processed)}")
    print(f"    processed -> served:         {_summary(visible)}")
    if cycle:
        print(
            f"  time between pushes to the same repository: median "
            f"{percentile(cycle, 50):.2f} s (coalescing window {COALESCE_SECONDS:g} s)"
        )
    print(f"  pushes finding no window open: {len(read_now):3d}   {_summary(read_now)}")
    print(f"  pushes finding the window open:{len(coalesced):3d}   {_summary(coalesced)}")
    slow = sorted(served, key=lambda p: p.latency or 0.0, reverse=True)[:3]
    print(
        f"  served after more than 1 s: {sum(1 for x in latencies if x > 1)}; slowest: "
        + ", ".join(
            f"{p.slug} {p.latency or 0:.2f} s (window had {p.window_left:.2f} s left)" for p in slow
        )
    )
    not_2xx = {s: n for s, n in webhook_statuses.items() if not s.startswith("2")}
    polls_not_ok = {s: n for s, n in poller.statuses.items() if s not in ("200", "304")}
    print(
        f"  webhook attempts: {sum(webhook_statuses.values())}, non-2xx: {not_2xx or 'none'}; "
        f"stored deliveries by status: {dict(sorted(statuses.items()))}"
    )
    failed = [row for row in rows if row.status == "failed"]
    for row in failed[:5]:
        print(f"    failed delivery {row.request_uuid}: {row.error}")
    print(
        f"  catalog polls: {poller.polls} ({dict(sorted(poller.statuses.items()))}), "
        f"non-200/304: {polls_not_ok or 'none'}"
    )
    stats = sim.stats()
    print(
        f"  simulator API calls: {stats['calls_total']} "
        f"({ {k: v for k, v in stats['calls'].items() if v} }), "
        f"rate limited: {stats['rate_limited']}"
    )
    print(f"  web process healthy at the end: {answers(f'{web_url}/healthz')}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bench.freshness",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--pushes", type=int, default=200)
    parser.add_argument("--repos", type=int, default=20)
    parser.add_argument("--poll-ms", type=float, default=20.0)
    parser.add_argument("--timeout", type=float, default=30.0, help="per push, seconds")
    parser.add_argument("--budget", type=float, default=150.0, help="measuring, seconds")
    args = parser.parse_args(argv)

    began = time.perf_counter()
    logs = Path(tempfile.mkdtemp(prefix="bbsync-bench-freshness-"))
    print(
        f"freshness: {args.pushes} pushes editing catalog-info.yaml over {args.repos} "
        f"repositories -> entity served; gunicorn --workers 2 (sync), Celery worker "
        f"--concurrency 2, polling every {args.poll_ms:g} ms",
        flush=True,
    )
    flush_redis()
    rt: Runtime | None = None
    try:
        with (
            migrated_database() as database_url,
            SimProcess(
                workspace=WORKSPACE,
                repos=60,
                seed=21,
                access_token=TOKEN,
                webhook_retry_delay=0.2,
            ) as sim,
            Processes(logs) as procs,
        ):
            port = free_port()
            web_url = f"http://127.0.0.1:{port}"
            env = bbsync_env(database_url, sim.api_url)
            rt = Runtime(settings_from_env(env))
            requests.post(
                f"{sim.api_url}/workspaces/{WORKSPACE}/hooks",
                headers={"Authorization": f"Bearer {TOKEN}"},
                json={
                    "url": f"{web_url}/webhooks/bitbucket",
                    "active": True,
                    "events": list(HANDLED_EVENTS),
                    "secret": SECRET,
                    "description": "bbsync bench",
                },
                timeout=10,
            ).raise_for_status()
            with rt.sessions() as session:
                WorkspaceSync(rt.bitbucket(), session, session.commit, rt.settings).run(WORKSPACE)
            procs.start("web", gunicorn(port, 2, "app.web.wsgi:app"), env)
            procs.start("worker", celery_worker(2), env)
            wait_until(lambda: answers(f"{web_url}/healthz"), 30, "gunicorn answering")
            wait_until(lambda: " ready." in procs.log("worker"), 60, "Celery worker ready")
            procs.check_alive("worker")

            singles = [r["slug"] for r in sim.repositories() if r["catalog_layout"] == "single"]
            if len(singles) < args.repos + WARMUP_PUSHES:
                raise RuntimeError(
                    f"only {len(singles)} repositories with a root catalog-info.yaml"
                )
            measured, spare = singles[: args.repos], singles[args.repos :]
            run = uuid.uuid4().hex[:6]
            poller = CatalogPoller(web_url)
            with rt.sessions() as session:
                ids = {
                    r.slug: r.id for r in session.execute(select(Repository.slug, Repository.id))
                }

            def window(slug: str) -> float:
                left: Any = rt.redis.pttl(f"{REFRESH_KEY_PREFIX}{ids[slug]}")
                return max(int(left), 0) / 1000

            poll_s = args.poll_ms / 1000
            for i in range(WARMUP_PUSHES):
                warm = Push(spare[i], f"warmup-{run}-{i}")
                push(sim, poller, warm, poll_s, args.timeout, window)
                if warm.latency is None:
                    raise RuntimeError(f"warm-up push to {warm.slug} never served:\n{logs}")
            print(
                f"  system up in {time.perf_counter() - began:.0f} s (database, sync of "
                f"{len(sim.repositories())} repositories, web, worker, {WARMUP_PUSHES} "
                "warm-up pushes)",
                flush=True,
            )
            pushes: list[Push] = []
            started = time.monotonic()
            for i in range(args.pushes):
                if time.monotonic() - started > args.budget:
                    print(f"  stopped after {i} pushes: the {args.budget:g} s budget is spent")
                    break
                item = Push(measured[i % len(measured)], f"fresh-{run}-{i:03d}")
                push(sim, poller, item, poll_s, args.timeout, window)
                pushes.append(item)
            measuring = time.monotonic() - started
            procs.check_alive("web")
            procs.check_alive("worker")
            report(pushes, sim, rt, poller, web_url)
            print(f"  measuring took {measuring:.0f} s")
    finally:
        if rt is not None:
            rt.engine.dispose()
        flush_redis(REDIS_URL)
    print(f"  took {time.perf_counter() - began:.0f} s; logs in {logs}")


if __name__ == "__main__":
    main()
