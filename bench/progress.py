"""Progress under faults, with real workers, beat, Redis and the simulator (figures, no
pass/fail): `python -m bench.progress`.

1. A catalog sync of 80 changed repositories while Bitbucket allows 40 calls a minute (429,
   `Retry-After: 20`), finding catalog files by code search and by probing each repository
   (one call each): time to finish, attempts, calls and what each attempt read.
2. A worker killed (SIGKILL, with its pool) mid-sync, default heartbeat and staleness
   settings: time until beat notices and another worker resumes, and until the sync is done.
"""

from __future__ import annotations

import os
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import redis
from sqlalchemy import select

from app.db import make_engine, make_session_factory
from app.models import SyncRun
from app.task_names import SYNC_WORKSPACE, enqueue, producer
from bench.databases import migrate
from bench.processes import celery_beat, celery_worker
from bitbucket_sim.testing import SimProcess

ROOT = Path(__file__).resolve().parent.parent
REDIS_URL = os.environ.get("BBSYNC_BENCH_REDIS", "redis://127.0.0.1:6379/14")


def _runs(database_url: str, **where: Any) -> list[SyncRun]:
    engine = make_engine(database_url)
    try:
        with make_session_factory(engine)() as session:
            query = select(SyncRun).order_by(SyncRun.id)
            for name, value in where.items():
                query = query.where(getattr(SyncRun, name) == value)
            return list(session.scalars(query))
    finally:
        engine.dispose()


def _wait(condition: Callable[[], Any], timeout: float) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.5)
    raise SystemExit(f"not done within {timeout:.0f}s")


class Processes:
    def __init__(self, env: dict[str, str], logs: Path) -> None:
        self.env = {**os.environ, **env}
        self.logs = logs
        self.started: list[subprocess.Popen[bytes]] = []

    def start(self, role: str, args: list[str]) -> subprocess.Popen[bytes]:
        log = open(self.logs / f"{role}-{len(self.started)}.log", "wb")  # noqa: SIM115
        process = subprocess.Popen(
            args,
            cwd=ROOT,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.started.append(process)
        return process

    def worker(self) -> subprocess.Popen[bytes]:
        return self.start("worker", celery_worker(1))

    def stop(self) -> None:
        for process in self.started:
            if process.poll() is None:
                process.terminate()
                try:
                    process.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    os.killpg(process.pid, signal.SIGKILL)


def _env(sim: SimProcess, database_url: str) -> dict[str, str]:
    return {
        "DATABASE_URL": database_url,
        "REDIS_URL": REDIS_URL,
        "CELERY_BROKER_URL": REDIS_URL,
        "BITBUCKET_API_URL": sim.api_url,
        "BITBUCKET_WORKSPACES": "acme",
        "BITBUCKET_ACCESS_TOKEN": "t",
        "BITBUCKET_RATE_LIMIT_PER_HOUR": "1000000",
        "LOG_FORMAT": "json",
    }


def tight_window(tmp: Path, discovery: str) -> None:
    database_url = f"sqlite:///{tmp / f'tight-{discovery}.db'}"
    migrate(database_url)
    options = {"rate_limit": "40/m", "raw_rate_limit": "40/m", "retry_after": 20}
    with SimProcess(repos=80, seed=3, access_token="t", **options) as sim:
        env = {**_env(sim, database_url), "BBSYNC_DISCOVERY": discovery}
        processes = Processes(env, tmp)
        try:
            processes.worker()
            started = time.monotonic()
            enqueue(producer(REDIS_URL), SYNC_WORKSPACE, "acme")
            run = _wait(lambda: _runs(database_url, kind="catalog", status="succeeded"), 1800)[0]
            elapsed = time.monotonic() - started
            stats = sim.stats()
        finally:
            processes.stop()
    attempts = run.counts["checked_per_attempt"]
    print(
        f"80 changed repositories under 40 calls/min (429, Retry-After 20), discovery "
        f"{discovery}: done in "
        f"{elapsed:.0f}s, {len(attempts)} catalog attempts reading {attempts}, "
        f"{stats['calls_total']} calls answered, {stats['rate_limited']} 429s"
    )


def killed_worker(tmp: Path, repos: int = 3000) -> None:
    database_url = f"sqlite:///{tmp / 'killed.db'}"
    migrate(database_url)
    with SimProcess(repos=repos, seed=4, access_token="t") as sim:
        processes = Processes(_env(sim, database_url), tmp)
        try:
            worker = processes.worker()
            enqueue(producer(REDIS_URL), SYNC_WORKSPACE, "acme")
            lost = _wait(
                lambda: [
                    r for r in _runs(database_url, kind="catalog", status="running") if r.api_calls
                ],
                600,
            )[0]
            os.killpg(worker.pid, signal.SIGKILL)
            killed = time.monotonic()
            processes.worker()
            processes.start("beat", celery_beat(tmp / "beat-schedule"))
            _wait(lambda: len(_runs(database_url, kind="catalog")) > 1, 900)
            resumed = time.monotonic() - killed
            _wait(lambda: _runs(database_url, kind="catalog", status="succeeded"), 900)
            finished = time.monotonic() - killed
            lost = _runs(database_url, id=lost.id)[0]
        finally:
            processes.stop()
    print(
        f"worker SIGKILLed mid-catalog ({repos} repositories, default heartbeat 15s, stale "
        f"after 90s): resumed {resumed:.0f}s after the kill, done {finished:.0f}s after it; "
        f"the lost run kept {lost.api_calls} calls ({lost.error})"
    )


def main() -> None:
    redis.Redis.from_url(REDIS_URL).flushdb()
    with tempfile.TemporaryDirectory() as tmp:
        for discovery in ("search", "probe"):
            tight_window(Path(tmp), discovery)
            redis.Redis.from_url(REDIS_URL).flushdb()
        killed_worker(Path(tmp))


if __name__ == "__main__":
    main()
