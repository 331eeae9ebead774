"""Operations: token rotation reminders, and metrics that move after a sync and a webhook."""

from __future__ import annotations

from collections.abc import Callable
from datetime import date, timedelta
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from app.config import settings_from_env
from app.ops.credentials_age import token_age_notice
from app.runtime import Runtime
from app.sync.workspace import WorkspaceSync
from app.web import create_app
from bitbucket_sim.testing import SimProcess
from tests.conftest import api_client, migrate, run_bbsync
from tests.webhook_support import delivery_headers, encode, repository

TODAY = date(2026, 11, 29)


def test_token_rotation_warns_from_day_80_and_alerts_from_day_90() -> None:
    def notice(days: int, **env: str) -> tuple[str, str] | None:
        created = (TODAY - timedelta(days=days)).isoformat()
        settings = settings_from_env(
            {"BITBUCKET_ACCESS_TOKEN": "t", "BITBUCKET_TOKEN_CREATED": created, **env}
        )
        return token_age_notice(settings, today=TODAY)

    assert notice(79) is None
    assert notice(80) == ("warning", "Bitbucket token is 80 days old: rotate it before day 90")
    level, message = notice(95) or ("", "")
    assert level == "alert" and "95 days old: rotate it now" in message
    oauth = {
        "BITBUCKET_ACCESS_TOKEN": "",
        "BITBUCKET_OAUTH_CLIENT_ID": "c",
        "BITBUCKET_OAUTH_CLIENT_SECRET": "s",
    }
    assert notice(200, **oauth) is None  # renewed every two hours by design


def test_status_shows_the_rotation_alert(sqlite_url: str, redis_url: str, tmp_path: Path) -> None:
    migrate(sqlite_url)
    old = (date.today() - timedelta(days=91)).isoformat()
    result = run_bbsync(
        "status",
        cwd=tmp_path,
        env={
            "DATABASE_URL": sqlite_url,
            "REDIS_URL": redis_url,
            "BITBUCKET_ACCESS_TOKEN": "t",
            "BITBUCKET_TOKEN_CREATED": old,
        },
    )
    assert "token: ALERT: Bitbucket token is 91 days old" in result.stdout


def test_metrics_move_after_a_sync_and_a_webhook(
    sim: SimProcess, runtime_for: Callable[..., Runtime], sqlite_url: str
) -> None:
    migrate(sqlite_url)
    rt = runtime_for(sim)
    client = api_client(create_app(runtime=rt))

    def samples() -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        text = client.get("/metrics").get_data(as_text=True)
        return {
            (s.name, tuple(sorted(s.labels.items()))): s.value
            for f in text_string_to_metric_families(text)
            for s in f.samples
        }

    before = samples()
    with rt.sessions() as session:
        WorkspaceSync(rt.bitbucket(), session, session.commit, rt.settings).run("acme")
    body = encode({"push": {"changes": []}, "repository": repository(api_url=sim.api_url)})
    assert (
        client.post(
            "/webhooks/bitbucket", data=body, headers=delivery_headers("repo:push", body)
        ).status_code
        == 202
    )
    after = samples()
    calls = ("bbsync_bitbucket_calls_total", (("family", "repositories"), ("status", "200")))
    assert after[calls] > before.get(calls, 0)
    assert after[("bbsync_sync_runs_total", (("kind", "catalog"), ("status", "succeeded")))] == 1
    assert after[("bbsync_catalog_entities", (("kind", "Component"),))] > 0
    delivered = ("bbsync_webhook_deliveries_total", (("event", "repo:push"), ("status", "queued")))
    assert after[delivered] == 1
    assert after[("bbsync_queue_depth", (("queue", "events"),))] >= 1
    used = ("bbsync_budget_used", (("resource", "repositories"),))
    assert after[used] > before.get(used, 0)


def test_task_and_ingress_figures_reach_metrics(
    runtime_for: Callable[..., Runtime], sqlite_url: str
) -> None:
    from app.ops.telemetry import record_ingress, record_task

    migrate(sqlite_url)
    rt = runtime_for()
    record_task(rt.redis, "bbsync.sync.workspace", 2.5, failed=False)
    record_task(rt.redis, "bbsync.sync.workspace", 1.0, failed=True)
    record_ingress(rt.redis, 0.004)
    record_ingress(rt.redis, 0.3)
    text = api_client(create_app(runtime=rt)).get("/metrics").get_data(as_text=True)
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for f in text_string_to_metric_families(text)
        for s in f.samples
    }
    task = (("task", "bbsync.sync.workspace"),)
    assert samples[("bbsync_task_runs_total", task)] == 2
    assert samples[("bbsync_task_failures_total", task)] == 1
    assert samples[("bbsync_task_seconds_total", task)] == 3.5
    assert samples[("bbsync_ingress_seconds_bucket", (("le", "0.005"),))] == 1
    assert samples[("bbsync_ingress_seconds_bucket", (("le", "+Inf"),))] == 2
    assert samples[("bbsync_ingress_seconds_count", ())] == 2
