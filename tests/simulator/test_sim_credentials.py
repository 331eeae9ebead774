"""Credentials: access tokens, API tokens (Basic) and OAuth client credentials."""

from __future__ import annotations

import time

import pytest
import requests

from bitbucket_sim.testing import SimProcess

pytestmark = pytest.mark.slow

TOKEN = "workspace-access-token"
EMAIL, API_TOKEN = "bot@example.com", "api-token-123"
CLIENT_ID, CLIENT_SECRET = "consumer-key", "consumer-secret"


@pytest.fixture(scope="module")
def guarded():
    with SimProcess(
        repos=5,
        seed=1,
        access_token=TOKEN,
        email=EMAIL,
        api_token=API_TOKEN,
        oauth_client_id=CLIENT_ID,
        oauth_client_secret=CLIENT_SECRET,
        oauth_expires_in=2,
    ) as process:
        yield process


def repos_url(sim: SimProcess) -> str:
    return f"{sim.api_url}/repositories/{sim.workspace}"


def test_missing_or_wrong_bearer_is_a_401(guarded: SimProcess, http) -> None:
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "Token x"}):
        response = http.get(repos_url(guarded), headers=headers, timeout=10)
        assert response.status_code == 401
        assert response.json()["type"] == "error"


def test_access_token_is_accepted_and_gets_rate_limit_headers(guarded: SimProcess, http) -> None:
    response = http.get(
        repos_url(guarded), headers={"Authorization": f"Bearer {TOKEN}"}, timeout=10
    )
    assert response.status_code == 200
    assert response.headers["X-RateLimit-Limit"] == "1000"
    assert response.headers["X-RateLimit-Resource"] == "repositories"


def test_basic_email_and_api_token_is_accepted(guarded: SimProcess, http) -> None:
    assert http.get(repos_url(guarded), auth=(EMAIL, API_TOKEN), timeout=10).status_code == 200
    assert http.get(repos_url(guarded), auth=(EMAIL, "nope"), timeout=10).status_code == 401


def test_oauth_token_is_issued_then_accepted_until_it_expires(guarded: SimProcess, http) -> None:
    issued = http.post(
        guarded.token_url,
        auth=(CLIENT_ID, CLIENT_SECRET),
        data={"grant_type": "client_credentials"},
        timeout=10,
    )
    assert issued.status_code == 200
    body = issued.json()
    assert body["token_type"] == "bearer" and body["expires_in"] == 2
    assert body["state"] == "client_credentials" and "refresh_token" not in body
    headers = {"Authorization": f"Bearer {body['access_token']}"}
    assert http.get(repos_url(guarded), headers=headers, timeout=10).status_code == 200
    time.sleep(2.2)  # inherent: the token's 2 s lifetime must really pass
    assert http.get(repos_url(guarded), headers=headers, timeout=10).status_code == 401


def test_oauth_rejects_a_wrong_client_or_grant(guarded: SimProcess, http) -> None:
    wrong = http.post(
        guarded.token_url,
        auth=(CLIENT_ID, "bad"),
        data={"grant_type": "client_credentials"},
        timeout=10,
    )
    assert wrong.status_code in (400, 401) and wrong.json()["error"] == "invalid_client"
    grant = http.post(
        guarded.token_url,
        auth=(CLIENT_ID, CLIENT_SECRET),
        data={"grant_type": "password"},
        timeout=10,
    )
    assert grant.status_code == 400


def test_without_configured_credentials_anything_is_accepted(sim: SimProcess) -> None:
    url = repos_url(sim)
    assert requests.get(url, timeout=10).status_code == 200
    assert requests.get(url, headers={"Authorization": "Bearer x"}, timeout=10).status_code == 200
