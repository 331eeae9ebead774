"""Data Center webhooks end to end, in real time: the Data Center simulator sends signed
deliveries to bbsync's web process (gunicorn) through the hooks `bbsync webhooks install`
created, a real Celery worker processes them, and the served catalog follows."""

from __future__ import annotations

import contextlib
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
import redis
import requests
from sqlalchemy import select

from app.config import settings_from_env
from app.models import PullRequest, Repository, WebhookDelivery
from app.runtime import Runtime
from app.sync.datacenter import DataCenterSync
from bitbucket_sim.testing import SimProcess
from tests.conftest import PG_ADMIN_URL, REDIS_TEST_URL, ROOT, migrate, run_bbsync
from tests.test_webhook_flow import System, _answers, free_port, start
from tests.webhook_support import SECRET

COMPONENT = """apiVersion: backstage.io/v1alpha1
kind: Component
metadata:
  name: {name}
  description: pushed to Data Center
spec:
  type: service
  lifecycle: production
  owner: group:team-platform
"""
WORKER_FLAGS = ["--queues", "events,sync,default", "--concurrency", "2", "--without-gossip"]
WORKER_FLAGS += ["--without-mingle", "--loglevel", "INFO"]


@contextlib.contextmanager
def running_dc_system(logs: Path) -> Iterator[System]:
    """bbsync (gunicorn web + Celery worker) on a fresh PostgreSQL database, a Data Center
    simulator synced once, and bbsync's hooks installed with `bbsync webhooks install`."""
    name = f"bbsync_dcflow_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    database_url = f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
    migrate(database_url)
    redis.Redis.from_url(REDIS_TEST_URL).flushdb()
    port = free_port()
    web_url = f"http://127.0.0.1:{port}"
    processes = []
    with SimProcess(
        flavor="datacenter", repos=12, seed=5, access_token="dc-token", webhook_retry_delay=0.2
    ) as sim:
        env = {
            "DATABASE_URL": database_url,
            "REDIS_URL": REDIS_TEST_URL,
            "CELERY_BROKER_URL": REDIS_TEST_URL,
            "BITBUCKET_WORKSPACES": "",
            "BITBUCKET_ACCESS_TOKEN": "",
            "BITBUCKET_DC_URL": sim.url,
            "BITBUCKET_DC_TOKEN": "dc-token",
            "BITBUCKET_WEBHOOK_SECRET": SECRET,
            "BBSYNC_PUSH_COALESCE_SECONDS": "5",
            "BBSYNC_REQUEUE_AFTER_SECONDS": "1",
            "LOG_FORMAT": "json",
        }
        rt = Runtime(settings_from_env({k: v for k, v in env.items() if v}))
        with rt.sessions() as session:
            DataCenterSync(
                rt.datacenter(), session, session.commit, rt.settings, rt.datacenter_settings
            ).run()
        installed = run_bbsync(
            "webhooks", "install", "--url", f"{web_url}/webhooks/bitbucket", env=env, cwd=ROOT
        )
        assert installed.returncode == 0, installed.stderr
        bin_dir = Path(sys.executable).parent
        processes.append(
            start(
                [str(bin_dir / "gunicorn"), "--bind", f"127.0.0.1:{port}", "app.web.wsgi:app"],
                env,
                logs / "web.log",
            )
        )
        processes.append(
            start(
                [sys.executable, "-m", "celery", "-A", "workers.main", "worker", *WORKER_FLAGS],
                env,
                logs / "worker.log",
            )
        )
        system = System(sim, web_url, rt, env, logs)
        system.wait_for(lambda: _answers(f"{web_url}/healthz"), 30)
        try:
            yield system
        finally:
            for process in processes:
                process.terminate()
            for process in processes:
                try:
                    process.wait(timeout=20)
                except Exception:
                    process.kill()
            rt.engine.dispose()
            with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="module")
def dc_system(tmp_path_factory: pytest.TempPathFactory) -> Iterator[System]:
    with running_dc_system(tmp_path_factory.mktemp("dcflow")) as running:
        yield running


def _deliveries(system: System, event_key: str) -> list[dict[str, Any]]:
    return [d for d in system.sim.deliveries() if d["event_key"] == event_key]


def _row(system: System, uuid_: str | None = None, slug: str | None = None) -> Repository | None:
    with system.rt.sessions() as session:
        query = select(Repository).where(Repository.deleted_at.is_(None))
        query = query.where(Repository.slug == slug) if slug else query
        row = session.scalars(query).first()
        if row is not None:
            session.expunge(row)
        return row


def test_project_hooks_were_installed_once_and_install_is_idempotent(dc_system: System) -> None:
    again = run_bbsync(
        "webhooks", "install", "--url", f"{dc_system.web_url}/webhooks/bitbucket",
        env=dc_system.env, cwd=ROOT,
    )  # fmt: skip
    assert again.returncode == 0, again.stderr
    lines = again.stdout.strip().splitlines()
    projects = {r["project_key"] for r in dc_system.sim.repositories()}
    assert sorted(lines) == sorted(f"project {k}: unchanged (secret sent again)" for k in projects)
    headers = {"Authorization": "Bearer dc-token"}
    for key in projects:
        hooks = requests.get(
            f"{dc_system.sim.rest_url}/projects/{key}/webhooks", headers=headers, timeout=10
        ).json()["values"]
        assert [h["url"] for h in hooks] == [f"{dc_system.web_url}/webhooks/bitbucket-dc"]
        assert "repo:refs_changed" in hooks[0]["events"]
    status = run_bbsync("webhooks", "status", env=dc_system.env, cwd=ROOT)
    assert status.returncode == 0, status.stdout + status.stderr


def test_a_push_to_catalog_info_on_data_center_is_served(dc_system: System) -> None:
    repo = next(r for r in dc_system.sim.repositories() if r["catalog_layout"] == "single")
    dc_system.sim.admin(
        "POST",
        f"/repos/{repo['slug']}/push",
        json={"files": {"catalog-info.yaml": COMPONENT.format(name="dc-hook-proof")}},
    ).raise_for_status()
    dc_system.wait_for(lambda: "dc-hook-proof" in dc_system.names(), 60)
    dc_system.settled()
    pushes = _deliveries(dc_system, "repo:refs_changed")
    assert pushes and all(d["status_code"] == 202 for d in pushes), pushes
    with dc_system.rt.sessions() as session:
        row = session.scalars(
            select(WebhookDelivery).where(WebhookDelivery.event_key == "repo:refs_changed")
        ).first()
        assert row is not None and row.status == "processed", row and row.error
        host = dc_system.sim.url.split("://", 1)[1]
        assert row.repository_full_name == f"{host}/{repo['project_key']}/{repo['slug']}"


def test_a_ping_is_answered_200(dc_system: System) -> None:
    key = dc_system.sim.repositories()[0]["project_key"]
    hooks = requests.get(
        f"{dc_system.sim.rest_url}/projects/{key}/webhooks",
        headers={"Authorization": "Bearer dc-token"},
        timeout=10,
    ).json()["values"]
    dc_system.sim.admin("POST", f"/hooks/{hooks[0]['id']}/ping").raise_for_status()
    dc_system.wait_for(lambda: bool(_deliveries(dc_system, "diagnostics:ping")), 20)
    assert [d["status_code"] for d in _deliveries(dc_system, "diagnostics:ping")] == [200]


def test_a_rename_is_applied_and_refreshed(dc_system: System) -> None:
    repo = next(r for r in dc_system.sim.repositories() if r["catalog_layout"] == "single")
    before = _row(dc_system, slug=repo["slug"])
    assert before is not None
    new_slug = f"{repo['slug']}-renamed"
    dc_system.sim.admin(
        "POST", f"/repos/{repo['slug']}/rename", json={"name": new_slug, "slug": new_slug}
    ).raise_for_status()
    dc_system.wait_for(lambda: _row(dc_system, slug=new_slug) is not None, 30)
    after = _row(dc_system, slug=new_slug)
    assert after is not None and after.id == before.id
    assert after.full_name.endswith(f"/{repo['project_key']}/{new_slug}")
    dc_system.settled()


def test_a_push_to_an_unknown_repository_walks_its_project(dc_system: System) -> None:
    key = dc_system.sim.repositories()[0]["project_key"]
    # Data Center sends no webhook for a new repository: the first push names it.
    dc_system.sim.admin(
        "POST", "/repos", json={"slug": "dc-brand-new", "project_key": key}
    ).raise_for_status()
    dc_system.sim.admin(
        "POST",
        "/repos/dc-brand-new/push",
        json={"files": {"catalog-info.yaml": COMPONENT.format(name="dc-brand-new-service")}},
    ).raise_for_status()
    dc_system.wait_for(lambda: "dc-brand-new-service" in dc_system.names(), 90)
    assert _row(dc_system, slug="dc-brand-new") is not None


def test_pull_request_events_are_stored(dc_system: System) -> None:
    repo = next(r for r in dc_system.sim.repositories() if len(r["branches"]) > 1)
    source = next(b for b in repo["branches"] if b != repo["mainbranch"])
    created = dc_system.sim.admin(
        "POST",
        f"/repos/{repo['slug']}/pullrequests",
        json={"source": source, "title": "from a Data Center webhook"},
    )
    created.raise_for_status()
    number = created.json()["id"]
    row = _row(dc_system, slug=repo["slug"])
    assert row is not None

    def stored(state: str) -> bool:
        with dc_system.rt.sessions() as session:
            pr = session.scalars(
                select(PullRequest).where(
                    PullRequest.repository_id == row.id, PullRequest.number == number
                )
            ).first()
            return pr is not None and pr.state == state and pr.source_branch == source

    dc_system.wait_for(lambda: stored("OPEN"), 30)
    dc_system.sim.admin("POST", f"/repos/{repo['slug']}/pullrequests/{number}/decline", json={})
    dc_system.wait_for(lambda: stored("DECLINED"), 30)


def test_without_project_hooks_install_falls_back_to_repository_hooks(dc_system: System) -> None:
    dc_system.sim.set_config(project_webhooks=False)
    key = dc_system.sim.repositories()[0]["project_key"]
    slugs = {r["slug"] for r in dc_system.sim.repositories() if r["project_key"] == key}
    host = dc_system.sim.url.split("://", 1)[1]
    url = f"{dc_system.web_url}/webhooks/bitbucket-dc"
    for expected in ("created", "unchanged (secret sent again)"):
        result = run_bbsync(
            "webhooks", "install", "--url", url, "-w", f"{host}/{key}",
            env=dc_system.env, cwd=ROOT,
        )  # fmt: skip
        assert result.returncode == 0, result.stderr
        scopes = {line.split(": ", 1)[0] for line in result.stdout.strip().splitlines()}
        actions = {line.split(": ", 1)[1] for line in result.stdout.strip().splitlines()}
        # The database knows the renamed and the new repositories by their current slugs.
        assert scopes == {f"repository {key}/{s}" for s in slugs}, result.stdout
        assert actions == {expected}


def test_a_burst_of_pushes_is_coalesced_and_the_last_one_served(dc_system: System) -> None:
    """Prints the reads a burst costs (a figure: timing on a loaded machine moves it); the
    assertion is that the last push's content is what the catalog serves."""
    repos = [r for r in dc_system.sim.repositories() if r["catalog_layout"] == "single"][1:4]
    dc_system.settled()
    dc_system.sim.reset_stats()
    before = len(dc_system.sim.deliveries())
    rounds = 10
    for round_ in range(rounds):
        for repo in repos:
            name = f"{repo['slug']}-burst-{round_}"
            dc_system.sim.admin(
                "POST",
                f"/repos/{repo['slug']}/push",
                json={"files": {"catalog-info.yaml": COMPONENT.format(name=name)}},
            ).raise_for_status()
    dc_system.sim.wait_for_deliveries(before + rounds * len(repos), timeout=60)
    last = {f"{r['slug']}-burst-{rounds - 1}" for r in repos}
    dc_system.wait_for(lambda: last <= dc_system.names(), 60)
    dc_system.settled()
    reads = dc_system.sim.stats()["calls"]["raw"]
    sent = dc_system.sim.deliveries()[before:]
    duplicates = sum(1 for d in sent if d["status_code"] == 200)
    print(
        f"\n{rounds * len(repos)} Data Center pushes to {len(repos)} repositories: {reads} "
        f"catalog reads; {len(sent)} deliveries, {duplicates} answered duplicate"
    )
    assert not {f"{r['slug']}-burst-{rounds - 2}" for r in repos} & dc_system.names()
