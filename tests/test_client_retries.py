"""Retries of the Bitbucket client (urllib3's `Retry` on the session) against the live
simulator's injected faults: reads are retried on 502/503/504 and lost answers, calls that
change something are sent once, a 429 is never retried, and every attempt is budgeted."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from app.bitbucket.client import api_path
from app.bitbucket.errors import (
    BitbucketUnavailable,
    BudgetExhausted,
    NoAnswer,
    RateLimited,
)
from app.runtime import Runtime
from bitbucket_sim.testing import SimProcess

RuntimeFactory = Callable[..., Runtime]
WORKSPACE = api_path("workspaces", "acme")
HOOKS = api_path("workspaces", "acme", "hooks")
HOOK = {"url": "http://127.0.0.1:9/hook", "events": ["repo:push"], "description": "t"}


def fault(sim: SimProcess, **what: object) -> None:
    sim.admin("POST", "faults", json=what)


def calls(sim: SimProcess, family: str) -> int:
    return int(sim.stats()["calls"].get(family, 0))


def test_the_retry_policy_is_urllib3s_and_leaves_429_to_the_budget(
    sim: SimProcess, runtime_for: RuntimeFactory
) -> None:
    policy = runtime_for(sim, BITBUCKET_HTTP_RETRIES="4").bitbucket().retry
    assert policy.total == 4
    assert set(policy.status_forcelist or ()) == {502, 503, 504}
    assert policy.allowed_methods == frozenset({"GET", "HEAD"})
    assert policy.respect_retry_after_header is False


@pytest.mark.parametrize("status", [503, 504])
def test_a_get_is_retried_after_a_5xx_and_every_attempt_is_budgeted(
    status: int, sim: SimProcess, runtime_for: RuntimeFactory
) -> None:
    fault(sim, status=status, times=1, path_contains="/workspaces/", method="GET")
    client = runtime_for(sim).bitbucket()
    client.backoff_base = 0.01
    assert client.get_json(WORKSPACE)["slug"] == "acme"
    assert calls(sim, "workspaces") == 2
    assert client.ledger.by_family["workspaces"] == 2
    assert client.budget.snapshot().used == 2


def test_a_post_is_not_retried_after_a_503(sim: SimProcess, runtime_for: RuntimeFactory) -> None:
    fault(sim, status=503, times=1, path_contains="/hooks", method="POST")
    client = runtime_for(sim).bitbucket()
    client.backoff_base = 0.01
    before = calls(sim, "hooks")
    with pytest.raises(BitbucketUnavailable) as caught:
        client.post_json(HOOKS, HOOK)
    assert str(caught.value) == (
        "POST workspaces/acme/hooks: HTTP 503 after 1 attempts "
        "(not retried: it may have taken effect)"
    )
    assert calls(sim, "hooks") == before + 1
    assert client.ledger.total == 1 and client.budget.snapshot().used == 1
    # The fault was used up by the one attempt: the next POST goes through once.
    assert client.post_json(HOOKS, HOOK)["uuid"]
    assert calls(sim, "hooks") == before + 2


def test_a_get_whose_answer_is_late_is_sent_again(
    sim: SimProcess, runtime_for: RuntimeFactory
) -> None:
    fault(sim, delay_seconds=2, times=1, path_contains="/workspaces/", method="GET")
    client = runtime_for(sim).bitbucket(timeout=0.5)
    client.backoff_base = 0.01
    assert client.get_json(WORKSPACE)["slug"] == "acme"
    assert client.ledger.by_family["workspaces"] == 2
    assert client.budget.snapshot().used == 2


def test_a_post_to_an_unreachable_api_is_tried_once(runtime_for: RuntimeFactory) -> None:
    client = runtime_for(BITBUCKET_API_URL="http://127.0.0.1:9/2.0").bitbucket()
    client.backoff_base = 0.01
    with pytest.raises(NoAnswer):
        client.post_json(HOOKS, HOOK)
    assert client.ledger.total == 1 and client.budget.snapshot().used == 1


def test_a_429_is_never_retried_and_pauses_the_budget(
    sim: SimProcess, runtime_for: RuntimeFactory
) -> None:
    fault(sim, status=429, times=3, path_contains="/workspaces/")
    client = runtime_for(sim).bitbucket()
    client.backoff_base = 0.01
    with pytest.raises(RateLimited):
        client.get_json(WORKSPACE)
    assert calls(sim, "workspaces") == 1
    assert client.ledger.rate_limited == 1
    assert client.budget.snapshot().paused_until is not None


def test_other_5xx_answers_are_not_retried(sim: SimProcess, runtime_for: RuntimeFactory) -> None:
    fault(sim, status=500, times=3, path_contains="/workspaces/")
    client = runtime_for(sim).bitbucket()
    client.backoff_base = 0.01
    with pytest.raises(BitbucketUnavailable) as caught:
        client.get_json(WORKSPACE)
    assert str(caught.value) == "GET workspaces/acme: HTTP 500 after 1 attempts"
    assert calls(sim, "workspaces") == 1


def test_a_retry_the_budget_has_no_slot_for_is_not_sent(
    sim: SimProcess, runtime_for: RuntimeFactory
) -> None:
    fault(sim, status=503, times=5, path_contains="/workspaces/")
    client = runtime_for(
        sim,
        BITBUCKET_RATE_LIMIT_PER_HOUR="2",
        BITBUCKET_RATE_RESERVE_PERCENT="0",
        BITBUCKET_LEARN_RATE_LIMIT="false",  # the simulator announces 1000/h
    ).bitbucket()
    client.backoff_base = 0.01
    with pytest.raises(BudgetExhausted):
        client.get_json(WORKSPACE)
    assert calls(sim, "workspaces") == 2  # the first attempt and one retry, then no slot
    assert client.ledger.by_family["workspaces"] == 2
    assert client.budget.snapshot().used == 2
