"""A 429 without Retry-After pauses backfill for the rest of the window, but webhook work
probes after `BITBUCKET_429_PROBE_SECONDS` and resumes as soon as Bitbucket answers, in
every process (the pause, the probe and its success live in the shared Redis)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable

import pytest

from app.bitbucket.budget import Priority
from app.bitbucket.errors import BudgetPaused
from app.runtime import Runtime
from bitbucket_sim.testing import SimProcess
from tests.conftest import ROOT

# Another bbsync process doing backfill: it spends Bitbucket's window and meets the 429.
BACKFILL_UNTIL_429 = """
import json, sys
from app.bitbucket.errors import RateLimited
from app.config import load_settings
from app.runtime import Runtime

client = Runtime(load_settings(env_file=None)).bitbucket()
for calls in range(1, 100):
    try:
        client.get_json("repositories/acme/svc-0000")
    except RateLimited as exc:
        print(json.dumps({"calls": calls, "paused": exc.retry_after}))
        sys.exit(0)
sys.exit("no 429")
"""


def test_webhook_work_probes_through_a_blind_pause_and_resumes_when_bitbucket_answers(
    sim_factory: Callable[..., SimProcess], runtime_for: Callable[..., Runtime], redis_url: str
) -> None:
    sim = sim_factory(repos=5, access_token="sim-token", rate_limit="3/s", retry_after=None)
    env = {
        "REDIS_URL": redis_url,
        "BITBUCKET_API_URL": sim.api_url,
        "BITBUCKET_WORKSPACES": "acme",
        "BITBUCKET_ACCESS_TOKEN": "sim-token",
        "BITBUCKET_429_PROBE_SECONDS": "1",
    }
    other = subprocess.run(
        [sys.executable, "-c", BACKFILL_UNTIL_429],
        env={**os.environ, **env},
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert other.returncode == 0, other.stderr
    # No Retry-After: the pause lasts until our oldest call leaves the hour's window.
    assert json.loads(other.stdout)["paused"] > 3000

    rt = runtime_for(sim, BITBUCKET_429_PROBE_SECONDS="1")
    webhook = rt.bitbucket(Priority.WEBHOOK)
    with pytest.raises(BudgetPaused) as caught:
        webhook.get_json("repositories/acme/svc-0002")
    assert (caught.value.retry_after or 0) <= 1  # a webhook task retries within the second
    deadline = time.monotonic() + 30
    body = None
    while body is None:
        try:
            body = webhook.get_json("repositories/acme/svc-0002")
        except BudgetPaused as exc:
            assert time.monotonic() < deadline, "webhook work never resumed"
            time.sleep(min(exc.retry_after or 0.2, 0.5))
    assert body["slug"] == "svc-0002"
    # Resumed for webhooks in every process; backfill still waits for the window.
    webhook.get_json("repositories/acme/svc-0003")
    with pytest.raises(BudgetPaused):
        rt.bitbucket(Priority.BACKFILL).get_json("repositories/acme/svc-0003")
    assert rt.budget.paused_for() > 3000
