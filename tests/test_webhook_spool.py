"""Deliveries during a database outage, through real gunicorn, a private PostgreSQL cluster that
is really stopped and started, Redis, and (for processing) a real Celery worker with beat.

While the database is down and Redis answers, every delivery is answered 202 from the Redis
spool; once the database is back the spool is drained into the outbox in order (by the next
delivery's web process, or by beat within seconds), each exactly once, and processed.
`BBSYNC_FAULT_DELIVERIES` / `BBSYNC_FAULT_OUTAGE_SECONDS` make the burst longer (the README's
figures: 300 deliveries, a 15 s outage). Hostile headers through gunicorn are here too."""

from __future__ import annotations

import http.client
import json
import os
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import redis
import requests
from sqlalchemy import func, select

from app.config import settings_from_env
from app.models import WebhookDelivery
from app.outbox import SPOOL_KEY
from app.runtime import Runtime
from app.sync.workspace import WorkspaceSync
from bench.processes import celery_worker, gunicorn
from bitbucket_sim.testing import SimProcess
from tests.conftest import ROOT, migrate
from tests.fault_support import wait_until
from tests.private_services import PrivatePostgres, PrivateRedis, free_port
from tests.webhook_support import SECRET, delivery_headers, encode, repository


@pytest.fixture(scope="module")
def pg() -> Iterator[PrivatePostgres]:
    cluster = PrivatePostgres()
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.remove()


@pytest.fixture
def database(pg: PrivatePostgres) -> str:
    url = pg.create_database(f"bbsync_{uuid.uuid4().hex[:10]}")
    migrate(url)
    return url


def answers(url: str) -> bool:
    try:
        return requests.get(url, timeout=2).status_code < 500
    except requests.RequestException:
        return False


class Processes:
    def __init__(self, logs: Path) -> None:
        self.logs = logs
        self.started: list[subprocess.Popen[bytes]] = []

    def start(self, name: str, args: list[str], env: dict[str, str]) -> None:
        log = (self.logs / f"{name}.log").open("w")
        self.started.append(
            subprocess.Popen(
                args, cwd=ROOT, env={**os.environ, **env}, stdout=log, stderr=subprocess.STDOUT
            )
        )

    def web(self, env: dict[str, str]) -> str:
        port = free_port()
        self.start("web", gunicorn(port), env)
        url = f"http://127.0.0.1:{port}"
        wait_until(lambda: answers(f"{url}/healthz"), 60, "gunicorn answers")
        return url

    def worker_with_beat(self, env: dict[str, str]) -> None:
        self.start("worker", celery_worker(2, beat_schedule=self.logs / "beat-schedule"), env)

    def stop(self) -> None:
        for process in self.started:
            process.terminate()
        for process in self.started:
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()


@pytest.fixture
def processes(tmp_path: Path) -> Iterator[Processes]:
    started = Processes(tmp_path)
    yield started
    started.stop()


def environment(database: str, redis_url: str, **extra: str) -> dict[str, str]:
    return {
        "DATABASE_URL": database,
        "REDIS_URL": redis_url,
        "CELERY_BROKER_URL": redis_url,
        "BITBUCKET_WORKSPACES": "acme",
        "BITBUCKET_ACCESS_TOKEN": "sim-token",
        "BITBUCKET_WEBHOOK_SECRET": SECRET,
        "LOG_FORMAT": "json",
        **extra,
    }


def push(n: int, repo: dict[str, Any]) -> bytes:
    """A push to a feature branch: processed without a Bitbucket call, distinct per `n`."""
    change = {
        "new": {"type": "branch", "name": f"feature/{n}", "target": {"hash": f"{n:040x}"}},
        "old": None,
        "created": True,
    }
    return encode({"push": {"changes": [change]}, "repository": repo})


@dataclass
class Sender:
    """Posts deliveries as Bitbucket does: 10 s timeout, two more attempts after a 5xx."""

    url: str
    answers: dict[str, list[int]] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def send(self, raw: bytes, request_uuid: str | None = None, retries: int = 2) -> int:
        headers = delivery_headers("repo:push", raw, request_uuid=request_uuid)
        statuses: list[int] = []
        for attempt in range(1, retries + 2):
            headers["X-Attempt-Number"] = str(attempt)
            try:
                status = requests.post(
                    f"{self.url}/webhooks/bitbucket", data=raw, headers=headers, timeout=10
                ).status_code
            except requests.RequestException:
                status = 0
            statuses.append(status)
            if 200 <= status < 300:
                break
            time.sleep(0.5)  # inherent: a sender's pause before its retry, as Bitbucket's
        with self.lock:
            self.answers[headers["X-Request-UUID"]] = statuses
        return statuses[-1]

    def lost(self) -> int:
        return sum(1 for s in self.answers.values() if not 200 <= s[-1] < 300)

    def non_2xx_answers(self) -> int:
        return sum(1 for s in self.answers.values() for code in s if not 200 <= code < 300)


def outbox(rt: Runtime) -> list[WebhookDelivery]:
    with rt.sessions() as session:
        return list(session.scalars(select(WebhookDelivery).order_by(WebhookDelivery.id)))


def test_deliveries_during_an_outage_are_spooled_then_drained_in_order_by_the_next_one(
    pg: PrivatePostgres, database: str, redis_url: str, processes: Processes
) -> None:
    env = environment(database, redis_url)
    web = processes.web(env)
    rt = Runtime(settings_from_env(env))
    sender = Sender(web)
    repo = repository()
    sent: list[str] = []

    def deliver(n: int) -> int:
        request_uuid = str(uuid.uuid4())
        sent.append(request_uuid)
        return sender.send(push(n, repo), request_uuid, retries=0)

    assert [deliver(n) for n in range(3)] == [202] * 3
    pg.stop()
    try:
        during = [deliver(n) for n in range(3, 23)]
        # Bitbucket's own retry of one, and a replay of another under a new UUID: spooled too,
        # and found to be duplicates when drained.
        assert sender.send(push(5, repo), sent[5], retries=0) == 202
        assert sender.send(push(6, repo), str(uuid.uuid4()), retries=0) == 202
        ready = requests.get(f"{web}/readyz", timeout=10)
        assert ready.status_code == 200 and ready.json()["deliveries"] == "spooled"
        assert redis.Redis.from_url(redis_url).xlen(SPOOL_KEY) == 22
    finally:
        pg.start()
    assert during == [202] * 20
    # The first delivery after the outage queues behind the spooled ones and drains them all.
    assert deliver(23) == 202
    wait_until(lambda: len(outbox(rt)) == 24, 60, "the spool drained into the outbox")
    stored = outbox(rt)
    assert [d.request_uuid for d in stored] == sent  # in order, each once
    assert all(d.status == "queued" for d in stored)
    assert redis.Redis.from_url(redis_url).xlen(SPOOL_KEY) == 0
    rt.engine.dispose()


def test_with_neither_database_nor_redis_bitbucket_is_told_to_retry(
    pg: PrivatePostgres, database: str, processes: Processes
) -> None:
    private = PrivateRedis()
    private.start()
    web = processes.web(environment(database, private.url))
    sender = Sender(web)
    try:
        assert sender.send(push(1, repository()), retries=0) == 202
        private.stop()
        # Redis down, database up: still stored (the broker is down too: left for the requeue).
        assert sender.send(push(2, repository()), retries=0) == 202
        ready = requests.get(f"{web}/readyz", timeout=10)
        assert ready.status_code == 200
        assert ready.json()["checks"]["redis"].startswith("degraded")
        pg.stop()
        try:
            assert sender.send(push(3, repository()), retries=0) == 503
            assert requests.get(f"{web}/readyz", timeout=10).status_code == 503
        finally:
            pg.start()
    finally:
        private.stop()


def test_a_burst_through_a_database_outage_is_processed_exactly_once(
    pg: PrivatePostgres, database: str, redis_url: str, processes: Processes
) -> None:
    total = int(os.environ.get("BBSYNC_FAULT_DELIVERIES", "60"))
    outage = float(os.environ.get("BBSYNC_FAULT_OUTAGE_SECONDS", "3"))
    with SimProcess(workspace="acme", repos=5, seed=3, access_token="sim-token") as sim:
        env = environment(database, redis_url, BITBUCKET_API_URL=sim.api_url)
        rt = Runtime(settings_from_env(env))
        with rt.sessions() as session:
            WorkspaceSync(rt.bitbucket(), session, session.commit, rt.settings).run("acme")
        repos = [repository(r["slug"], r["uuid"], sim.api_url) for r in sim.repositories()]
        web = processes.web(env)
        processes.worker_with_beat(env)
        sender = Sender(web)
        # Paced over twice the outage: half before it, half during it, none after, so that
        # only beat can drain the spool once the database is back.
        span = 2 * outage
        started = time.monotonic()

        def outage_window() -> None:
            time.sleep(span / 2)
            pg.stop()
            time.sleep(outage)
            pg.start()

        breaker = threading.Thread(target=outage_window)
        breaker.start()
        with ThreadPoolExecutor(max_workers=8) as pool:
            for n in range(total):
                time.sleep(max(0.0, started + n * span / total - time.monotonic()))
                pool.submit(sender.send, push(n, repos[n % len(repos)]))
        breaker.join()
        print(
            f"\n{total} deliveries, database down {outage:.0f} s: "
            f"{total - sender.lost()} got a 2xx, {sender.non_2xx_answers()} non-2xx answers, "
            f"{sender.lost()} lost (no 2xx within Bitbucket's two retries)"
        )

        def all_processed() -> bool:
            with rt.sessions() as session:
                done = session.scalar(
                    select(func.count())
                    .select_from(WebhookDelivery)
                    .where(WebhookDelivery.status == "processed")
                )
            return done == total

        wait_until(all_processed, 120 + total / 5, "every delivery processed")
        stored = outbox(rt)
        spooled = redis.Redis.from_url(redis_url).xlen(SPOOL_KEY)
        print(
            f"outbox {len(stored)} rows, {len({d.request_uuid for d in stored})} distinct; "
            f"spool left {spooled}; all processed {time.monotonic() - started:.1f} s after "
            "the first delivery"
        )
        assert sender.lost() == 0
        assert len(stored) == total == len({d.body_sha256 for d in stored})
        assert set(sender.answers) == {d.request_uuid for d in stored}
        assert spooled == 0
        rt.engine.dispose()


def test_hostile_headers_through_gunicorn_get_a_4xx_never_a_5xx(
    database: str, redis_url: str, processes: Processes
) -> None:
    web = processes.web(environment(database, redis_url))
    raw = push(1, repository())
    port = int(web.rsplit(":", 1)[1])

    def post(extra: list[tuple[str, bytes]], drop: tuple[str, ...] = ()) -> tuple[int, Any]:
        headers = [
            (k, v.encode()) for k, v in delivery_headers("repo:push", raw).items() if k not in drop
        ]
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        connection.putrequest("POST", "/webhooks/bitbucket")
        for name, value in [*headers, *extra, ("Content-Length", str(len(raw)).encode())]:
            connection.putheader(name, value)
        connection.endheaders(raw)
        response = connection.getresponse()
        body = response.read()
        connection.close()
        is_json = response.getheader("Content-Type") == "application/json"
        return response.status, json.loads(body) if is_json else body

    status, body = post(
        [("X-Hub-Signature", "sha256=€".encode() + b"0" * 62)], ("X-Hub-Signature",)
    )
    assert (status, body["error"]) == (401, "invalid_signature")
    status, body = post([("X-Event-Key", b"repo:push" * 600)], ("X-Event-Key",))
    assert (status, list(body["fields"])) == (400, ["X-Event-Key"])
    status, body = post([("X-Request-UUID", str(uuid.uuid4()).encode())])  # sent twice
    assert (status, list(body["fields"])) == (400, ["X-Request-UUID"])
    # Past gunicorn's own limit (8,190 bytes a header line) gunicorn answers 431 itself.
    status, _ = post([("User-Agent", b"x" * 20_000)], ("User-Agent",))
    assert status == 431
    status, body = post([])
    assert status == 202, body
