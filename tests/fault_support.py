"""Brokers a test can really stop and start: a private `redis-server` on its own port (the
machine's Redis is never touched) and a private vhost on the machine's RabbitMQ."""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import redis

T = TypeVar("T")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_until(condition: Callable[[], T], timeout: float, what: str, interval: float = 0.2) -> T:
    """Poll `condition` every `interval` s until it returns something truthy, and return that.
    Fails naming `what`. The tests wait on conditions this way rather than sleeping for a
    fixed time."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"{what}: not within {timeout:g}s")
        time.sleep(interval)


class PrivateRedis:
    """A throwaway redis-server without persistence: a restart loses everything, as a
    crashed cache-only broker does."""

    def __init__(self, workdir: Path) -> None:
        self.port = free_port()
        self.workdir = workdir
        self.process: subprocess.Popen[bytes] | None = None

    def url(self, db: int = 0) -> str:
        return f"redis://127.0.0.1:{self.port}/{db}"

    def answers(self) -> bool:
        client = redis.Redis(port=self.port, socket_connect_timeout=0.5, socket_timeout=0.5)
        try:
            return bool(client.ping())
        except redis.RedisError:
            return False
        finally:
            client.close()

    def start(self) -> None:
        self.process = subprocess.Popen(
            [
                "redis-server",
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.workdir),
            ],
            stdout=(self.workdir / "redis.log").open("a"),
            stderr=subprocess.STDOUT,
        )
        wait_until(self.answers, 20, "private redis-server answering")

    def stop(self) -> None:
        if self.process is None:
            return
        # SHUTDOWN closes the connection under us: that error is the answer.
        with contextlib.suppress(redis.RedisError):
            redis.Redis(port=self.port, socket_timeout=2).shutdown(nosave=True)
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)
        self.process = None


class PrivateRabbit:
    """A private vhost on the machine's RabbitMQ (started when down). `stop` and `start`
    stop and start the RabbitMQ application: only bbsync's tests use this RabbitMQ."""

    def __init__(self) -> None:
        self.vhost = f"bbsync-test-{uuid.uuid4().hex[:8]}"

    @staticmethod
    def ctl(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["rabbitmqctl", *args], capture_output=True, text=True, timeout=timeout
        )

    @staticmethod
    def answers() -> bool:
        try:
            with socket.create_connection(("127.0.0.1", 5672), timeout=1):
                return True
        except OSError:
            return False

    @classmethod
    def ensure_running(cls) -> str | None:
        """None when RabbitMQ answers (started here if it was down), else why not."""
        if cls.answers():
            return None
        if shutil.which("rabbitmq-server") is None:
            return "RabbitMQ is not installed (Debian: apt-get install rabbitmq-server)"
        subprocess.run(["rabbitmq-server", "-detached"], capture_output=True, timeout=60)
        try:
            wait_until(cls.answers, 90, "RabbitMQ answering on 5672")
        except AssertionError:
            return "RabbitMQ could not be started (rabbitmq-server -detached)"
        return None

    def url(self) -> str:
        return f"amqp://guest:guest@127.0.0.1:5672/{self.vhost}"

    def create(self) -> None:
        self.ctl("add_vhost", self.vhost).check_returncode()
        self.ctl("set_permissions", "-p", self.vhost, "guest", ".*", ".*", ".*").check_returncode()

    def delete(self) -> None:
        self.ctl("delete_vhost", self.vhost)

    def stop(self) -> None:
        self.ctl("stop_app").check_returncode()

    def start(self) -> None:
        self.ctl("start_app").check_returncode()
        wait_until(self.answers, 60, "RabbitMQ answering again")
