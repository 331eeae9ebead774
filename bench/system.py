"""Shared pieces of the end-to-end benchmarks (`bench.ingress`, `bench.freshness`).

A throwaway PostgreSQL database (`bbsync_bench_<random>`, dropped WITH (FORCE) at the end),
a Redis database of the benchmarks' own (`BBSYNC_BENCH_E2E_REDIS`, default db 12, flushed),
migrations through `python -m alembic upgrade head`, and child processes (gunicorn, Celery)
that are always stopped, each by its own id. Everything talks to 127.0.0.1 only.
Not a benchmark itself; nothing here prints figures.
"""

from __future__ import annotations

import math
import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType

import psycopg
import redis
import requests

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
PG_ADMIN_URL = os.environ.get("BBSYNC_BENCH_PG", "postgresql://postgres@127.0.0.1:5432/postgres")
REDIS_URL = os.environ.get("BBSYNC_BENCH_E2E_REDIS", "redis://127.0.0.1:6379/12")
SECRET = "bench-secret"
TOKEN = "sim-token"
WORKSPACE = "acme"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (`q` in 0..100) of a non-empty sequence."""
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


def flush_redis(url: str = REDIS_URL) -> None:
    client = redis.Redis.from_url(url)
    try:
        client.flushdb()
    finally:
        client.close()


@contextmanager
def postgres_database() -> Iterator[str]:
    """A fresh, empty PostgreSQL database for one run; its SQLAlchemy URL."""
    name = f"bbsync_bench_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
    finally:
        with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def migrate(database_url: str) -> None:
    """`alembic upgrade head`, as the Procfile's release phase runs it."""
    done = subprocess.run(
        [sys.executable, "-m", "alembic", "upgrade", "head"],
        cwd=ROOT,
        env={**os.environ, "DATABASE_URL": database_url},
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"alembic upgrade head failed:\n{done.stderr[-3000:]}")


def bbsync_env(database_url: str, api_url: str, **extra: str) -> dict[str, str]:
    """The environment of bbsync's processes (`app/config.py` names)."""
    return {
        "DATABASE_URL": database_url,
        "REDIS_URL": REDIS_URL,
        "CELERY_BROKER_URL": REDIS_URL,
        "BITBUCKET_API_URL": api_url,
        "BITBUCKET_WORKSPACES": WORKSPACE,
        "BITBUCKET_ACCESS_TOKEN": TOKEN,
        "BITBUCKET_WEBHOOK_SECRET": SECRET,
        "LOG_FORMAT": "json",
        **extra,
    }


def gunicorn_args(port: int, workers: int, app: str, threads: int = 1) -> list[str]:
    """Sync workers, as the Procfile's `web` process (no access log: it would cost CPU);
    with `threads` above 1, gunicorn's threaded workers (`gthread`) with that many each."""
    return [
        str(BIN / "gunicorn"),
        "--bind",
        f"127.0.0.1:{port}",
        "--workers",
        str(workers),
        *(["--threads", str(threads)] if threads > 1 else []),
        "--timeout",
        "30",
        app,
    ]


def answers(url: str) -> bool:
    try:
        return requests.get(url, timeout=2).status_code == 200
    except requests.RequestException:
        return False


def wait_until(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.1)
    raise RuntimeError(f"{what}: not within {timeout:g} s")


class Processes:
    """Child processes started for one run, logging to `logs/<name>.log`; all stopped on exit
    (SIGTERM to each by its own pid, SIGKILL after 20 s)."""

    def __init__(self, logs: Path) -> None:
        self.logs = logs
        self.running: dict[str, subprocess.Popen[bytes]] = {}

    def start(self, name: str, args: Sequence[str], env: Mapping[str, str]) -> None:
        log = (self.logs / f"{name}.log").open("wb")
        try:
            self.running[name] = subprocess.Popen(
                list(args),
                cwd=ROOT,
                env={**os.environ, **env},
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        finally:
            log.close()  # the child keeps its own descriptor

    def log(self, name: str) -> str:
        path = self.logs / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def check_alive(self, name: str) -> None:
        process = self.running[name]
        if process.poll() is not None:
            raise RuntimeError(
                f"{name} exited with code {process.returncode}:\n{self.log(name)[-3000:]}"
            )

    def stop(self, name: str) -> None:
        process = self.running.pop(name, None)
        if process is None:
            return
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)

    def stop_all(self) -> None:
        for name in reversed(list(self.running)):
            self.stop(name)

    def __enter__(self) -> Processes:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop_all()
