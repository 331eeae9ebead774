"""Installing the webhook in the simulator, drift, the deliveries API and retrying failures."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import requests
from sqlalchemy import select

from app.bitbucket.webhooks import HANDLED_EVENTS
from app.db import session_scope
from app.models import WebhookDelivery
from app.runtime import Runtime
from app.web import create_app
from bitbucket_sim.testing import SimProcess
from tests.conftest import api_client, migrate, run_bbsync

HOOK_URL = "https://bbsync.example.com/webhooks/bitbucket"


bbsync = run_bbsync


def hooks(sim: SimProcess) -> list[dict]:
    response = requests.get(
        f"{sim.api_url}/workspaces/acme/hooks",
        headers={"Authorization": "Bearer sim-token"},
        timeout=10,
    )
    values: list[dict] = response.json()["values"]
    return values


def test_install_is_idempotent_and_status_flags_drift(
    sim: SimProcess, sqlite_url: str, redis_url: str, tmp_path: Path
) -> None:
    migrate(sqlite_url)
    env = {
        "DATABASE_URL": sqlite_url,
        "REDIS_URL": redis_url,
        "BITBUCKET_API_URL": sim.api_url,
        "BITBUCKET_WORKSPACES": "acme",
        "BITBUCKET_ACCESS_TOKEN": "sim-token",
        "BITBUCKET_WEBHOOK_SECRET": "hook-secret",
    }
    missing = bbsync("webhooks", "status", "--url", HOOK_URL, env=env, cwd=tmp_path)
    assert missing.returncode == 1 and "workspace acme: missing" in missing.stdout

    first = bbsync("webhooks", "install", "--url", HOOK_URL, env=env, cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    assert first.stdout.strip() == "workspace acme: created"
    (hook,) = hooks(sim)
    assert hook["url"] == HOOK_URL and hook["active"] is True
    assert sorted(hook["events"]) == sorted(HANDLED_EVENTS)
    assert hook["secret_set"] is True

    again = bbsync("webhooks", "install", "--url", HOOK_URL, env=env, cwd=tmp_path)
    assert again.stdout.strip() == "workspace acme: unchanged"
    assert len(hooks(sim)) == 1

    ok = bbsync("webhooks", "status", "--url", HOOK_URL, env=env, cwd=tmp_path)
    assert ok.returncode == 0 and "workspace acme: ok" in ok.stdout

    uid = hook["uuid"].strip("{}")
    requests.put(
        f"{sim.api_url}/workspaces/acme/hooks/{uid}",
        headers={"Authorization": "Bearer sim-token"},
        timeout=10,
        json={**hook, "active": False, "events": ["repo:push"]},
    )
    drifted = bbsync("webhooks", "status", "--url", HOOK_URL, env=env, cwd=tmp_path)
    assert drifted.returncode == 1
    assert "drifted" in drifted.stdout and "inactive" in drifted.stdout
    assert "missing events" in drifted.stdout

    fixed = bbsync("webhooks", "install", "--url", HOOK_URL, env=env, cwd=tmp_path)
    assert "workspace acme: updated (inactive, missing events" in fixed.stdout
    assert hooks(sim)[0]["active"] is True

    bad = bbsync("webhooks", "install", "--url", "https://x.example.com/", env=env, cwd=tmp_path)
    assert bad.returncode == 2 and "/webhooks/bitbucket" in bad.stderr


def test_deliveries_api_lists_newest_first_with_filters(
    runtime_for: Callable[..., Runtime], sqlite_url: str
) -> None:
    migrate(sqlite_url)
    rt = runtime_for()
    with session_scope(rt.sessions) as session:
        for i, status in enumerate(["processed", "failed", "ignored"]):
            session.add(
                WebhookDelivery(
                    request_uuid=f"00000000-0000-4000-8000-00000000000{i}",
                    event_key="repo:push",
                    body={},
                    status=status,
                    repository_full_name="acme/billing",
                    error="boom" if status == "failed" else None,
                )
            )
    client = api_client(create_app(runtime=rt))
    everything = client.get("/api/deliveries").json["items"]
    assert [d["status"] for d in everything] == ["ignored", "failed", "processed"]
    assert everything[1]["error"] == "boom" and everything[1]["event"] == "repo:push"
    failed = client.get("/api/deliveries?status=failed").json["items"]
    assert [d["status"] for d in failed] == ["failed"]
    assert client.get("/api/deliveries?status=nope").status_code == 400


def test_failed_deliveries_can_be_sent_again(
    runtime_for: Callable[..., Runtime], sqlite_url: str, redis_url: str, tmp_path: Path
) -> None:
    migrate(sqlite_url)
    rt = runtime_for()
    with session_scope(rt.sessions) as session:
        session.add(
            WebhookDelivery(
                request_uuid="11111111-0000-4000-8000-000000000000",
                event_key="repo:push",
                body={},
                status="failed",
                error="boom",
            )
        )
    env = {"DATABASE_URL": sqlite_url, "REDIS_URL": redis_url}
    listed = bbsync("deliveries", "--failed", env=env, cwd=tmp_path)
    assert "repo:push - failed: boom" in listed.stdout
    result = bbsync("deliveries", "retry", "--failed", env=env, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "1 deliveries set to pending; 1 queued now" in result.stdout
    with rt.sessions() as session:
        delivery = session.scalars(select(WebhookDelivery)).one()
        assert (delivery.status, delivery.error) == ("pending", None)
