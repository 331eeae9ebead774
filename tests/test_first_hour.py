"""What a new user meets first: `make run`'s script, gunicorn with a bad setting, the CLI's
one-line answers. Real processes throughout."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
import requests

from app.config import load_settings
from tests.conftest import PG_ADMIN_URL, ROOT, migrate, run_bbsync

GUNICORN = str(Path(sys.executable).with_name("gunicorn"))
BIN = str(Path(sys.executable).parent)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def listening() -> Iterator[int]:
    """A port something already listens on, as a leftover simulator would."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        yield int(s.getsockname()[1])


@pytest.mark.parametrize(
    ("env", "variable"),
    [
        ({"BITBUCKET_RATE_LIMIT_PER_HOUR": "-3", "BITBUCKET_WEBHOOK_SECRET": "s"}, "RATE_LIMIT"),
        ({"BITBUCKET_WEBHOOK_SECRET": ""}, "BITBUCKET_WEBHOOK_SECRET"),
    ],
)
def test_gunicorn_stops_at_once_on_a_bad_setting(
    env: dict[str, str], variable: str, tmp_path: Path
) -> None:
    """The master checks the settings before forking: one line, non-zero, no respawn loop."""
    bind = f"127.0.0.1:{free_port()}"
    proc = subprocess.run(
        [GUNICORN, "-c", "python:app.web.gunicorn_conf", "--bind", bind, "app.web.wsgi:app"],
        env={**os.environ, "DATABASE_URL": f"sqlite:///{tmp_path}/x.db", **env},
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode != 0
    errors = [x for x in proc.stderr.splitlines() if "configuration error" in x]
    assert len(errors) == 1 and variable in errors[0], proc.stderr
    assert "Booting worker" not in proc.stderr


def test_version_and_empty_deliveries(sqlite_url: str, redis_url: str, tmp_path: Path) -> None:
    version = run_bbsync("--version", env={}, cwd=tmp_path)
    assert version.returncode == 0 and version.stdout.startswith("bbsync, version ")
    migrate(sqlite_url)
    env = {"DATABASE_URL": sqlite_url, "REDIS_URL": redis_url}
    none = run_bbsync("deliveries", env=env, cwd=tmp_path)
    assert none.returncode == 0 and none.stdout.strip() == "no deliveries received yet"
    failed = run_bbsync("deliveries", "--failed", env=env, cwd=tmp_path)
    assert failed.stdout.strip() == "no failed deliveries"


def test_unreachable_database_is_one_line_not_migration_advice(
    redis_url: str, tmp_path: Path
) -> None:
    env = {
        "DATABASE_URL": f"postgresql://postgres@127.0.0.1:{free_port()}/x",
        "REDIS_URL": redis_url,
    }
    status = run_bbsync("status", env=env, cwd=tmp_path)
    assert status.returncode == 1
    assert "database: unreachable" in status.stderr and "alembic" not in status.stderr
    migrated = run_bbsync("migrate", env=env, cwd=tmp_path)
    assert migrated.returncode == 1
    assert migrated.stderr.strip().count("\n") == 0, migrated.stderr
    assert "FAIL database: unreachable" in migrated.stderr
    assert "Traceback" not in migrated.stderr


def test_unmigrated_database_says_so_and_migrate_fixes_it(
    postgres_url: str, redis_url: str, tmp_path: Path
) -> None:
    env = {"DATABASE_URL": postgres_url, "REDIS_URL": redis_url}
    status = run_bbsync("status", env=env, cwd=tmp_path)
    assert status.returncode == 1 and "not migrated" in status.stderr
    migrated = run_bbsync("migrate", env=env, cwd=tmp_path)
    assert migrated.returncode == 0, migrated.stderr
    assert "migrated to" in migrated.stdout
    assert run_bbsync("status", env=env, cwd=tmp_path).returncode == 0


def test_database_url_error_lists_the_accepted_schemes(tmp_path: Path) -> None:
    bad = run_bbsync("status", env={"DATABASE_URL": "mysql://h/db"}, cwd=tmp_path)
    assert bad.returncode == 2
    assert "postgres://" in bad.stderr and "postgresql://" in bad.stderr
    assert "sqlite://" in bad.stderr and bad.stderr.count("\n") == 1


def test_demo_settings_fill_in_only_without_a_credential(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("BITBUCKET_ACCESS_TOKEN", "BITBUCKET_API_TOKEN", "BITBUCKET_WORKSPACES"):
        monkeypatch.delenv(name, raising=False)
    env_file = tmp_path / ".env"
    (tmp_path / ".env.demo").write_text(
        "BITBUCKET_API_URL=http://127.0.0.1:7990/2.0\nBITBUCKET_WORKSPACES=demo\n"
        "BITBUCKET_ACCESS_TOKEN=demo-token\n"
    )
    demo = load_settings(env_file)
    assert demo.workspaces == ("demo",) and demo.bitbucket_api_url.startswith("http://127.0.0.1")
    env_file.write_text("BITBUCKET_ACCESS_TOKEN=real\nBITBUCKET_WORKSPACES=acme\n")
    real = load_settings(env_file)
    assert real.workspaces == ("acme",)
    assert real.bitbucket_api_url == "https://api.bitbucket.org/2.0"


def _run_script(env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        ["bash", "scripts/run.sh"],
        cwd=ROOT,
        env={**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}", **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )


@pytest.mark.parametrize("which", ["SIM_PORT", "PORT"])
def test_make_run_refuses_a_taken_port(which: str, listening: int, redis_url: str) -> None:
    ports = {"SIM_PORT": str(free_port()), "PORT": str(free_port()), which: str(listening)}
    proc = _run_script({**ports, "REDIS_URL": redis_url})
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 1
    assert f"port {listening}" in err and which in err, err


@pytest.mark.slow
def test_make_run_stops_everything_on_sigterm(redis_url: str, tmp_path: Path) -> None:
    """A plain SIGTERM (not a terminal's Ctrl-C) stops the simulator, web, worker and beat."""
    web_port, sim_port = free_port(), free_port()
    name = f"bbsync_run_{os.getpid()}"
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    env = {
        "PORT": str(web_port),
        "SIM_PORT": str(sim_port),
        "REDIS_URL": redis_url,
        "DATABASE_URL": f"postgresql://postgres@127.0.0.1:5432/{name}",
        "BBSYNC_DEMO_REPOS": "8",
        "BEAT_SCHEDULE_FILE": str(tmp_path / "beat"),
    }
    demo_env = ROOT / ".env.demo"
    proc = _run_script(env)
    try:
        deadline = time.monotonic() + 240
        ready = False
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                ready = requests.get(f"http://127.0.0.1:{web_port}/readyz", timeout=2).ok
            except requests.RequestException:
                ready = False
            if ready:
                break
            time.sleep(1)
        assert ready, proc.stderr.read() if proc.poll() is not None else "not ready in time"
        assert demo_env.is_file()
        status = run_bbsync("status", env={}, cwd=ROOT)
        assert "workspace demo: 8 repositories" in status.stdout, status.stdout + status.stderr
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
        for port in (web_port, sim_port):
            with socket.socket() as s:
                assert s.connect_ex(("127.0.0.1", port)) != 0, f"port {port} still answers"
        assert not demo_env.exists()
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
