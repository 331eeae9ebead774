"""A webhook-driven catalog refresh that keeps failing (5xx, 401) through the real parts: the
simulator delivers a signed push to the ingress, a real worker processes it, the refresh is
retried with backoff, then the delivery is failed and the repository shown stale in
`bbsync status`, `bbsync deliveries --failed`, the status page and `/metrics`; a retry once
Bitbucket is healthy again mends it."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import requests
from sqlalchemy import select
from werkzeug.serving import BaseWSGIServer, make_server

from app.bitbucket.webhooks import HANDLED_EVENTS
from app.config import settings_from_env
from app.models import Repository, WebhookDelivery
from app.runtime import Runtime
from app.sync.workspace import WorkspaceSync
from app.web import create_app
from bitbucket_sim.testing import SimProcess
from tests.conftest import API_TOKEN, run_bbsync
from tests.fault_support import wait_until
from tests.test_worker import WorkerFactory, start_worker  # noqa: F401  (fixture)
from tests.webhook_support import SECRET


@pytest.fixture
def ingress() -> Iterator[Callable[[Runtime], BaseWSGIServer]]:
    servers: list[BaseWSGIServer] = []

    def serve(rt: Runtime) -> BaseWSGIServer:
        server = make_server("127.0.0.1", 0, create_app(runtime=rt), threaded=True)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return server

    yield serve
    for server in servers:
        server.shutdown()


def install_hook(sim: SimProcess, server: BaseWSGIServer) -> None:
    """The simulator's webhook for every handled event, to this ingress, as an operator does."""
    requests.post(
        f"{sim.api_url}/workspaces/acme/hooks",
        headers={"Authorization": "Bearer sim-token"},
        json={
            "url": f"http://127.0.0.1:{server.server_port}/webhooks/bitbucket",
            "active": True,
            "events": list(HANDLED_EVENTS),
            "secret": SECRET,
        },
        timeout=10,
    ).raise_for_status()


def delivery_for(rt: Runtime, slug: str) -> WebhookDelivery | None:
    with rt.sessions() as session:
        return session.scalars(
            select(WebhookDelivery).where(
                WebhookDelivery.repository_full_name == f"acme/{slug}",
                WebhookDelivery.event_key == "repo:push",
            )
        ).first()


def repository(rt: Runtime, slug: str) -> Repository:
    with rt.sessions() as session:
        return session.scalars(select(Repository).where(Repository.slug == slug)).one()


@pytest.mark.parametrize("status", [502, 401])
def test_a_failing_catalog_refresh_is_retried_then_shown_stale_and_mended(
    status: int,
    sim_factory: Callable[..., SimProcess],
    migrated_postgres_url: str,
    redis_url: str,
    start_worker: WorkerFactory,  # noqa: F811
    ingress: Callable[[Runtime], BaseWSGIServer],
    tmp_path: Path,
) -> None:
    sim = sim_factory(repos=8, seed=5, access_token="sim-token", webhook_retry_delay=0.2)
    env = {
        "DATABASE_URL": migrated_postgres_url,
        "REDIS_URL": redis_url,
        "CELERY_BROKER_URL": redis_url,
        "BITBUCKET_API_URL": sim.api_url,
        "BITBUCKET_WORKSPACES": "acme",
        "BITBUCKET_ACCESS_TOKEN": "sim-token",
        "BITBUCKET_WEBHOOK_SECRET": SECRET,
        "BBSYNC_API_TOKENS": API_TOKEN,
        "BITBUCKET_HTTP_RETRIES": "0",
        "BBSYNC_REFRESH_ATTEMPTS": "3",
        "LOG_FORMAT": "json",
    }
    rt = Runtime(settings_from_env(env))
    with rt.sessions() as session:
        WorkspaceSync(rt.bitbucket(), session, session.commit, rt.settings).run("acme")
    install_hook(sim, ingress(rt))
    start_worker(env)
    slug = next(r["slug"] for r in sim.repositories() if r["catalog_layout"] == "single")
    # Every read of this repository's files fails until the fault is lifted.
    sim.admin(
        "POST", "faults", json={"status": status, "times": 500, "path_contains": f"{slug}/src"}
    )
    sim.admin("POST", f"repos/{slug}/push", json={"files": {"notes.txt": "x"}})

    def failed() -> bool:
        delivery = delivery_for(rt, slug)
        return delivery is not None and delivery.status == "failed"

    wait_until(failed, 120, "the delivery marked failed after the last attempt")
    delivery = delivery_for(rt, slug)
    assert delivery is not None and delivery.error
    assert delivery.error.startswith("catalog refresh failed:")
    stale = repository(rt, slug)
    assert stale.catalog_refresh_error and stale.catalog_refresh_failed_at
    # Three attempts, each reading the repository's files at least once.
    assert sim.stats()["calls"]["src"] >= 3

    cli_env = {k: v for k, v in env.items() if k != "LOG_FORMAT"}
    status_out = run_bbsync("status", env=cli_env, cwd=tmp_path).stdout
    assert f"STALE acme/{slug}: catalog refresh failed" in status_out
    failed_out = run_bbsync("deliveries", "--failed", env=cli_env, cwd=tmp_path).stdout
    assert f"#{delivery.id} " in failed_out and "catalog refresh failed" in failed_out
    client = create_app(runtime=rt).test_client()
    page = client.get("/", headers={"Authorization": f"Bearer {API_TOKEN}"})
    assert f"acme/{slug}" in page.get_data(as_text=True).split('id="stale-repositories"', 1)[1]
    metrics = client.get("/metrics", headers={"Authorization": f"Bearer {API_TOKEN}"})
    assert "bbsync_catalog_stale_repositories 1.0" in metrics.get_data(as_text=True)

    # Bitbucket is healthy again: the operator's retry mends the repository.
    sim.admin("DELETE", "faults")
    retried = run_bbsync("deliveries", "retry", "--failed", env=cli_env, cwd=tmp_path)
    assert retried.returncode == 0, retried.stderr
    wait_until(
        lambda: repository(rt, slug).catalog_refresh_failed_at is None,
        120,
        "the repository no longer stale",
    )
    mended = delivery_for(rt, slug)
    assert mended is not None and mended.status == "processed"
    rt.engine.dispose()
