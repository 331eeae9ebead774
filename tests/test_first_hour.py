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
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import psycopg
import pytest
import requests
import yaml

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


def test_data_center_demo_settings_reach_other_shells(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`BBSYNC_DEMO_FLAVOR=datacenter make run` writes a Data Center source to `.env.demo`:
    another shell (no credential of its own) reads it; a real credential still wins."""
    for name in ("BITBUCKET_ACCESS_TOKEN", "BITBUCKET_WORKSPACES", "BITBUCKET_DC_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.delenv("BITBUCKET_DC_TOKEN", raising=False)
    env_file = tmp_path / ".env"
    (tmp_path / ".env.demo").write_text(
        "BITBUCKET_DC_URL=http://127.0.0.1:7990\nBITBUCKET_DC_TOKEN=demo-token\n"
    )
    demo = load_settings(env_file)
    assert demo.datacenter is not None and demo.datacenter.host == "127.0.0.1:7990"
    assert demo.workspaces == ()
    env_file.write_text("BITBUCKET_ACCESS_TOKEN=real\nBITBUCKET_WORKSPACES=acme\n")
    real = load_settings(env_file)
    assert real.datacenter is None and real.workspaces == ("acme",)


def _run_script(env: dict[str, str], stdout: IO[str] | None = None) -> subprocess.Popen[str]:
    return subprocess.Popen(
        ["bash", "scripts/run.sh"],
        cwd=ROOT,
        env={**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}", **env},
        stdout=stdout or subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )


def test_make_run_refuses_an_unknown_demo_flavor(redis_url: str, listening: int) -> None:
    """Checked first: one line naming the variable and its values, nothing started."""
    env = {"BBSYNC_DEMO_FLAVOR": "server", "PORT": str(listening), "REDIS_URL": redis_url}
    proc = _run_script(env)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 2
    assert err.splitlines() == [
        "make run: BBSYNC_DEMO_FLAVOR must be cloud or datacenter, not 'server'"
    ], err
    assert out == "" and not (ROOT / ".env.demo").exists()


@pytest.mark.parametrize("which", ["SIM_PORT", "PORT"])
def test_make_run_refuses_a_taken_port(which: str, listening: int, redis_url: str) -> None:
    ports = {"SIM_PORT": str(free_port()), "PORT": str(free_port()), which: str(listening)}
    proc = _run_script({**ports, "REDIS_URL": redis_url})
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 1
    assert f"port {listening}" in err and which in err, err


@dataclass
class Demo:
    proc: subprocess.Popen[str]
    web_port: int
    sim_port: int
    banner: Path

    @property
    def web_url(self) -> str:
        return f"http://127.0.0.1:{self.web_port}"

    @property
    def sim_url(self) -> str:
        return f"http://127.0.0.1:{self.sim_port}"

    def stop(self) -> None:
        """A plain SIGTERM (not a terminal's Ctrl-C) stops the simulator, web, worker and
        beat, and removes `.env.demo`."""
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(timeout=60)
        for port in (self.web_port, self.sim_port):
            with socket.socket() as s:
                assert s.connect_ex(("127.0.0.1", port)) != 0, f"port {port} still answers"
        assert not (ROOT / ".env.demo").exists()


@contextmanager
def running_demo(tmp_path: Path, redis_url: str, **env: str) -> Iterator[Demo]:
    """`make run`'s script on its own PostgreSQL database, until web answers /readyz."""
    web_port, sim_port = free_port(), free_port()
    name = f"bbsync_run_{os.getpid()}"
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')
    env = {
        "PORT": str(web_port),
        "SIM_PORT": str(sim_port),
        "REDIS_URL": redis_url,
        "DATABASE_URL": f"postgresql://postgres@127.0.0.1:5432/{name}",
        "BBSYNC_DEMO_REPOS": "8",
        "BEAT_SCHEDULE_FILE": str(tmp_path / "beat"),
        **env,
    }
    banner = tmp_path / "stdout"
    with banner.open("w") as out:
        proc = _run_script(env, stdout=out)
    demo = Demo(proc, web_port, sim_port, banner)
    try:
        deadline = time.monotonic() + 240
        ready = False
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                ready = requests.get(f"{demo.web_url}/readyz", timeout=2).ok
            except requests.RequestException:
                ready = False
            if ready:
                break
            time.sleep(1)
        assert ready, proc.stderr.read() if proc.poll() is not None else "not ready in time"
        assert (ROOT / ".env.demo").is_file()
        yield demo
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _entities(demo: Demo) -> list[dict[str, Any]]:
    response = requests.get(f"{demo.web_url}/catalog/entities.yaml", timeout=30)
    response.raise_for_status()
    return [e for e in yaml.safe_load_all(response.text) if e]


@pytest.mark.slow
def test_make_run_stops_everything_on_sigterm(redis_url: str, tmp_path: Path) -> None:
    """The Cloud demo (the default): workspace demo, then a SIGTERM stops everything."""
    with running_demo(tmp_path, redis_url) as demo:
        status = run_bbsync("status", env={}, cwd=ROOT)
        assert "workspace demo: 8 repositories" in status.stdout, status.stdout + status.stderr
        assert "Data Center" not in demo.banner.read_text()
        demo.stop()


COMPONENT = """apiVersion: backstage.io/v1alpha1
kind: Component
metadata:
  name: {name}
spec:
  type: service
  lifecycle: production
  owner: group:team-platform
"""


@pytest.mark.slow
def test_make_run_data_center_demo(redis_url: str, tmp_path: Path) -> None:
    """`BBSYNC_DEMO_FLAVOR=datacenter make run`: the Data Center simulator's projects are
    synced and served, its push reaches the catalog through the Data Center webhook, and
    another shell's `bbsync status` sees the demo through `.env.demo`."""
    with running_demo(tmp_path, redis_url, BBSYNC_DEMO_FLAVOR="datacenter") as demo:
        host = f"127.0.0.1:{demo.sim_port}"
        banner = demo.banner.read_text()
        assert "source        Bitbucket Data Center" in banner, banner
        assert f"http://localhost:{demo.web_port}/catalog/entities.yaml" in banner, banner
        entities = _entities(demo)
        servers = {e["metadata"]["annotations"].get("bbsync.io/bitbucket-server") for e in entities}
        assert servers == {host}, servers
        repos = requests.get(f"{demo.sim_url}/_sim/repos", timeout=10).json()
        key = repos[0]["project_key"]
        status = run_bbsync("status", env={}, cwd=ROOT)
        assert f"workspace {host}/{key}: " in status.stdout, status.stdout + status.stderr
        assert "budget Data Center" in status.stdout
        repo = next(r for r in repos if r["catalog_layout"] == "single")
        pushed = requests.post(
            f"{demo.sim_url}/_sim/repos/{repo['slug']}/push",
            json={"files": {"catalog-info.yaml": COMPONENT.format(name="demo-dc-push")}},
            timeout=30,
        )
        pushed.raise_for_status()
        deadline = time.monotonic() + 90
        served: list[dict[str, Any]] = []
        while time.monotonic() < deadline and not served:
            served = [e for e in _entities(demo) if e["metadata"]["name"] == "demo-dc-push"]
            time.sleep(1)
        assert served, "the push did not reach the catalog"
        annotations = served[0]["metadata"]["annotations"]
        assert annotations["bitbucket.com/project-slug"] == f"{repo['project_key']}/{repo['slug']}"
        deliveries = requests.get(f"{demo.sim_url}/_sim/deliveries", timeout=10).json()
        pushes = [d for d in deliveries if d["event_key"] == "repo:refs_changed"]
        assert pushes and all(
            d["url"] == f"http://127.0.0.1:{demo.web_port}/webhooks/bitbucket-dc"
            and d["status_code"] == 202
            for d in pushes
        ), pushes
        demo.stop()
