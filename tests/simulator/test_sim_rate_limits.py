"""Rolling-window rate limits: 429 shape, Retry-After, buckets, resources and 304s."""

from __future__ import annotations

import time

import pytest

from bitbucket_sim.testing import SimProcess

pytestmark = pytest.mark.slow

RATE_LIMITED_BODY = "Rate limit for this resource has been exceeded"


def repos_url(sim: SimProcess) -> str:
    return f"{sim.api_url}/repositories/{sim.workspace}"


@pytest.fixture(scope="module")
def limited():
    with SimProcess(repos=5, seed=1, rate_limit="5/m", raw_rate_limit="3/m") as process:
        yield process


@pytest.fixture(autouse=True)
def fresh_windows(limited: SimProcess):
    limited.reset_stats()
    limited.set_config(retry_after=None, not_modified_costs_call=True)


def test_sixth_call_in_the_window_is_a_plain_text_429(limited: SimProcess, http) -> None:
    for _ in range(5):
        assert http.get(repos_url(limited), timeout=10).status_code == 200
    response = http.get(repos_url(limited), timeout=10)
    assert response.status_code == 429
    assert response.headers["Content-Type"].startswith("text/plain")
    assert response.text == RATE_LIMITED_BODY
    assert "Retry-After" not in response.headers
    stats = limited.stats()
    assert stats["rate_limited"] == 1 and stats["calls"]["repositories"] == 5


def test_a_429_does_not_consume_budget_and_reset_reopens_the_window(limited, http) -> None:
    for _ in range(5):
        http.get(repos_url(limited), timeout=10)
    for _ in range(3):
        assert http.get(repos_url(limited), timeout=10).status_code == 429
    assert limited.stats()["calls_total"] == 5
    limited.reset_stats()
    assert http.get(repos_url(limited), timeout=10).status_code == 200


def test_buckets_are_per_credential(limited: SimProcess, http) -> None:
    for _ in range(5):
        http.get(repos_url(limited), headers={"Authorization": "Bearer one"}, timeout=10)
    blocked = http.get(repos_url(limited), headers={"Authorization": "Bearer one"}, timeout=10)
    other = http.get(repos_url(limited), headers={"Authorization": "Bearer two"}, timeout=10)
    assert blocked.status_code == 429 and other.status_code == 200


def test_raw_files_have_their_own_budget(limited: SimProcess, http) -> None:
    repo = limited.repositories()[0]
    raw = f"{repos_url(limited)}/{repo['slug']}/src/{repo['head']}/README.md"
    for _ in range(5):
        http.get(repos_url(limited), timeout=10)
    assert http.get(repos_url(limited), timeout=10).status_code == 429
    for _ in range(3):
        assert http.get(raw, timeout=10).status_code == 200
    assert http.get(raw, timeout=10).status_code == 429


def test_not_modified_costs_a_call_unless_configured_otherwise(limited: SimProcess, http) -> None:
    repo = limited.repositories()[0]
    raw = f"{repos_url(limited)}/{repo['slug']}/src/{repo['head']}/README.md"
    etag = http.get(raw, timeout=10).headers["ETag"]
    assert http.get(raw, headers={"If-None-Match": etag}, timeout=10).status_code == 304
    assert limited.stats()["calls"]["src"] == 2
    limited.set_config(not_modified_costs_call=False)
    for _ in range(4):
        assert http.get(raw, headers={"If-None-Match": etag}, timeout=10).status_code == 304
    assert limited.stats()["calls"]["src"] == 2
    assert http.get(raw, timeout=10).status_code == 200  # budget 3/m: the 304s were free


def test_retry_after_is_sent_when_configured_at_runtime(limited: SimProcess, http) -> None:
    limited.set_config(retry_after=7)
    for _ in range(5):
        http.get(repos_url(limited), timeout=10)
    response = http.get(repos_url(limited), timeout=10)
    assert response.status_code == 429 and response.headers["Retry-After"] == "7"


def test_retry_after_flag_sends_the_header(http) -> None:
    with SimProcess(repos=2, seed=1, rate_limit="1/m", retry_after=7) as sim:
        assert http.get(repos_url(sim), timeout=10).status_code == 200
        response = http.get(repos_url(sim), timeout=10)
        assert response.status_code == 429
        assert response.headers["Retry-After"] == "7"
        assert response.text == RATE_LIMITED_BODY


def test_window_rolls_over(http) -> None:
    with SimProcess(repos=2, seed=1, rate_limit="2/s") as sim:
        statuses = [http.get(repos_url(sim), timeout=10).status_code for _ in range(3)]
        assert statuses == [200, 200, 429]
        time.sleep(1.1)  # inherent: the 1 s window must really roll over
        assert http.get(repos_url(sim), timeout=10).status_code == 200
