"""End to end with a REAL Backstage backend: `@backstage/backend-defaults` `createBackend()`
with `@backstage/plugin-catalog-backend` and bbsync's provider module
(`backstage/packages/backend`), on PostgreSQL, started as a process against a running bbsync
(gunicorn web + Celery worker) and the simulator. Backstage's own catalog API must hold every
entity bbsync serves, and follow a pushed edit, a new repository and a deleted one.

Needs `make backstage-install` (part of `make test`) and bbsync's change feed
(`GET /catalog/changes`); without either the module is skipped and says why.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest
import requests

from tests.conftest import API_TOKEN, PG_ADMIN_URL, ROOT
from tests.test_webhook_flow import (  # noqa: F401  (the `system` fixture is used below)
    System,
    descriptor,
    free_port,
    layout,
    system,
)

BACKEND_DIR = ROOT / "backstage" / "packages" / "backend"
CLI = ROOT / "backstage" / "node_modules" / ".bin" / "backstage-cli"
STATIC_TOKEN = f"e2e-{uuid.uuid4().hex}"
REACH_SECONDS = 30


@dataclass
class Backstage:
    url: str
    process: subprocess.Popen[bytes]
    log: Path

    def refs(self) -> set[str]:
        response = requests.get(
            f"{self.url}/api/catalog/entities",
            params={"fields": "kind,metadata.namespace,metadata.name"},
            headers={"Authorization": f"Bearer {STATIC_TOKEN}"},
            timeout=10,
        )
        response.raise_for_status()
        return {_ref(e) for e in response.json()}


def _ref(entity: dict[str, Any]) -> str:
    meta = entity["metadata"]
    return f"{entity['kind']}:{meta.get('namespace') or 'default'}/{meta['name']}".lower()


def _config(path: Path, port: int, prefix: str, bbsync_url: str, provider: bool = True) -> None:
    """Backstage's config against bbsync; without `provider`, no `catalog.providers.bbsync`."""
    catalog = (
        f"""
catalog:
  providers:
    bbsync:
      baseUrl: {bbsync_url}
      token: {API_TOKEN}
      schedule: {{frequency: {{seconds: 1}}, timeout: {{minutes: 1}}}}"""
        if provider
        else ""
    )
    path.write_text(
        f"""
app:
  baseUrl: http://127.0.0.1:3000
backend:
  baseUrl: http://127.0.0.1:{port}
  listen: {{host: 127.0.0.1, port: {port}}}
  database:
    client: pg
    prefix: {prefix}
    connection: {{host: 127.0.0.1, port: 5432, user: postgres, password: ''}}
  auth:
    externalAccess:
      - type: static
        options: {{token: {STATIC_TOKEN}, subject: bbsync-e2e}}{catalog}
bbsync:
  baseUrl: {bbsync_url}
  token: {API_TOKEN}
"""
    )


def require_backstage(bbsync_url: str) -> None:
    """Skip, saying why, without the installed packages or bbsync's change feed."""
    if not CLI.exists():
        pytest.skip("Backstage packages are not installed: run `make backstage-install`")
    feed = requests.get(
        f"{bbsync_url}/catalog/changes",
        params={"since": "0", "limit": "1"},
        headers={"Authorization": f"Bearer {API_TOKEN}"},
        timeout=10,
    )
    if feed.status_code == 404:
        pytest.skip("this bbsync has no change feed (GET /catalog/changes) yet")
    feed.raise_for_status()


@contextlib.contextmanager
def running_backstage(
    configs: list[Path], port: int, prefix: str, log: Path
) -> Iterator[Backstage]:
    """The backend package started with `configs`, stopped and its databases dropped after."""
    # Started in the backend package's directory, as `yarn start` would in an app.
    # Its own process group: the CLI runs the backend in a child process, stopped together.
    process = subprocess.Popen(
        [str(CLI), "package", "start", *config_args(configs)],
        cwd=BACKEND_DIR,
        env={**os.environ, "NODE_ENV": "development", "CI": "true"},
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    backstage = Backstage(f"http://127.0.0.1:{port}", process, log)
    try:
        _wait(backstage, lambda: _answers(f"{backstage.url}/.backstage/health/v1/readiness"), 180)
        yield backstage
    finally:
        stop_group(process)
        with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
            rows = conn.execute(
                "SELECT datname FROM pg_database WHERE datname LIKE %s", (f"{prefix}%",)
            ).fetchall()
            for (name,) in rows:
                conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def config_args(configs: list[Path]) -> list[str]:
    return [arg for config in configs for arg in ("--config", str(config))]


def stop_group(process: subprocess.Popen[bytes]) -> None:
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)


@pytest.fixture(scope="module")
def backstage(system: System, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Backstage]:  # noqa: F811
    require_backstage(system.web_url)
    work = tmp_path_factory.mktemp("backstage")
    port = free_port()
    prefix = f"bbsync_e2e_{uuid.uuid4().hex[:8]}_"
    config = work / "app-config.yaml"
    _config(config, port, prefix, system.web_url)
    with running_backstage([config], port, prefix, work / "backstage.log") as running:
        yield running


def _answers(url: str) -> bool:
    try:
        return requests.get(url, timeout=2).status_code == 200
    except requests.RequestException:
        return False


def _wait(backstage: Backstage, condition: Any, timeout: float) -> float:
    started = time.monotonic()
    deadline = started + timeout
    while time.monotonic() < deadline:
        if backstage.process.poll() is not None:
            break
        try:
            if condition():
                return time.monotonic() - started
        except requests.RequestException:
            pass
        time.sleep(0.25)
    raise AssertionError(
        f"condition not met within {timeout}s\n{backstage.log.read_text()[-4000:]}"
    )


def _served(bbsync: System) -> set[str]:
    return {_ref(e) for e in bbsync.entities()}


def test_backstage_catalog_holds_every_entity_bbsync_serves(
    system: System,  # noqa: F811
    backstage: Backstage,
) -> None:
    served = _served(system)
    assert served, "bbsync serves no entities"
    took = _wait(backstage, lambda: served <= backstage.refs(), 120)
    print(f"\nfull mutation: {len(served)} entities in Backstage after {took:.1f}s")
    assert served <= backstage.refs()


def test_a_push_a_new_and_a_deleted_repository_reach_backstage(
    system: System,  # noqa: F811
    backstage: Backstage,
) -> None:
    _wait(backstage, lambda: _served(system) <= backstage.refs(), 120)
    repo = layout(system.sim, "single")[0]
    system.sim.admin(
        "POST",
        f"repos/{repo['slug']}/push",
        json={"files": {"catalog-info.yaml": descriptor("edited-for-backstage")}},
    )
    took = _wait(
        backstage,
        lambda: "component:default/edited-for-backstage" in backstage.refs(),
        REACH_SECONDS,
    )
    print(f"\npush to Backstage's catalog API: {took:.2f}s")

    created = system.sim.admin("POST", "repos", json={"slug": "backstage-new", "name": "New"})
    assert created.status_code < 300, created.text
    took = _wait(
        backstage, lambda: "component:default/backstage-new" in backstage.refs(), REACH_SECONDS
    )
    print(f"new repository to Backstage: {took:.2f}s")

    gone = layout(system.sim, "none")[-1]
    ref = f"component:default/{gone['slug']}".lower()
    assert ref in backstage.refs()
    system.sim.admin("DELETE", f"repos/{gone['slug']}")
    took = _wait(backstage, lambda: ref not in backstage.refs(), REACH_SECONDS)
    print(f"deleted repository gone from Backstage: {took:.2f}s")
