"""Quota alerts from a simulator with a small rate limit: the warning mark, the 429 alert,
and what reaches Sentry (through a test transport, secrets scrubbed)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import sentry_sdk
from prometheus_client.parser import text_string_to_metric_families
from sentry_sdk.transport import Transport

from app.bitbucket.client import api_path
from app.bitbucket.errors import BudgetExhausted, RateLimited
from app.bitbucket.quota import alert_counts
from app.ops.observability import init_sentry
from app.runtime import Runtime
from app.web import create_app
from bitbucket_sim.testing import SimProcess
from tests.conftest import api_client


class CapturingTransport(Transport):
    def __init__(self, options: Any = None) -> None:
        super().__init__(options)
        self.events: list[dict[str, Any]] = []

    def capture_envelope(self, envelope: Any) -> None:
        for item in envelope.items:
            if item.type == "event":
                self.events.append(item.payload.json)


@pytest.fixture
def sentry_events(runtime_for: Callable[..., Runtime]) -> Any:
    transport = CapturingTransport()
    settings = runtime_for(SENTRY_DSN="https://public@sentry.example.com/1").settings
    init_sentry(settings, component="test", transport=transport)
    yield transport.events
    sentry_sdk.get_client().close()
    sentry_sdk.init()  # back to no Sentry for the other tests


def test_past_the_mark_every_process_is_warned_once(
    sim_factory: Callable[..., SimProcess],
    runtime_for: Callable[..., Runtime],
    sentry_events: list[dict[str, Any]],
) -> None:
    sim = sim_factory(access_token="sim-token")
    rt = runtime_for(
        sim,
        BITBUCKET_RATE_LIMIT_PER_HOUR="25",
        BITBUCKET_RATE_RESERVE_PERCENT="0",
        BITBUCKET_LEARN_RATE_LIMIT="false",
    )
    client = rt.bitbucket()
    with pytest.raises(BudgetExhausted):
        for _ in range(30):
            client.get_json(api_path("workspaces", "acme"))
    assert alert_counts(rt.redis) == {"near_limit": 1}
    messages = [e.get("message") or e.get("logentry", {}).get("message") for e in sentry_events]
    assert any("repositories budget" in (m or "") and "% used" in (m or "") for m in messages)
    text = api_client(create_app(runtime=rt)).get("/metrics").get_data(as_text=True)
    samples = {
        (s.name, tuple(s.labels.items())): s.value
        for f in text_string_to_metric_families(text)
        for s in f.samples
    }
    assert samples[("bbsync_quota_alerts_total", (("kind", "near_limit"),))] == 1


def test_a_429_alerts_and_secrets_stay_out_of_sentry(
    sim_factory: Callable[..., SimProcess],
    runtime_for: Callable[..., Runtime],
    sentry_events: list[dict[str, Any]],
) -> None:
    sim = sim_factory(access_token="sim-token", rate_limit="2/m", retry_after=30)
    rt = runtime_for(sim)
    client = rt.bitbucket()
    client.get_json(api_path("workspaces", "acme"))
    client.get_json(api_path("workspaces", "acme"))
    with pytest.raises(RateLimited):
        client.get_json(api_path("workspaces", "acme"))
    assert alert_counts(rt.redis)["rate_limited"] == 1
    sentry_sdk.capture_message("token sim-token leaked into a message")
    sentry_sdk.flush()
    blob = repr(sentry_events)
    assert "429" in blob
    assert "sim-token" not in blob and "***" in blob
