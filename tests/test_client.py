"""The Bitbucket client against the live simulator: pagination, credentials, errors, the
foreign-host refusal, call counting, and the budget pause a 429 causes in other processes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable

import pytest

from app.bitbucket.budget import Priority
from app.bitbucket.client import api_path, file_path
from app.bitbucket.errors import (
    BitbucketUnavailable,
    BudgetPaused,
    CredentialError,
    ForeignHostError,
    NoAnswer,
    NotFound,
    RateLimited,
)
from app.runtime import Runtime
from bitbucket_sim.testing import SimProcess

SimFactory = Callable[..., SimProcess]
RuntimeFactory = Callable[..., Runtime]


def oauth_env(sim: SimProcess, secret: str = "shh-1") -> dict[str, str]:
    """Settings for the OAuth consumer `client-1` the simulator is started with."""
    return {
        "BITBUCKET_ACCESS_TOKEN": "",
        "BITBUCKET_OAUTH_CLIENT_ID": "client-1",
        "BITBUCKET_OAUTH_CLIENT_SECRET": secret,
        "BITBUCKET_OAUTH_TOKEN_URL": sim.token_url,
    }


def test_pagination_follows_next_links_until_absent(
    sim_factory: SimFactory, runtime_for: RuntimeFactory
) -> None:
    sim = sim_factory(repos=250, access_token="sim-token")
    client = runtime_for(sim).bitbucket()
    pages = list(client.iter_pages(api_path("repositories", "acme")))
    assert [len(p.values) for p in pages] == [100, 100, 50]
    assert all(p.next_url for p in pages[:-1]) and pages[-1].next_url is None
    uuids = [r["uuid"] for p in pages for r in p.values]
    assert len(set(uuids)) == 250
    assert client.ledger.by_family == {"repositories": 3}
    assert sim.stats()["calls"]["repositories"] == 3


def test_pull_request_lists_are_asked_for_50_a_page(
    sim: SimProcess, runtime_for: RuntimeFactory
) -> None:
    client = runtime_for(sim).bitbucket()
    slug = next(client.paginate(api_path("repositories", "acme")))["slug"]
    body = client.get_json(api_path("repositories", "acme", slug, "pullrequests"), {"pagelen": 50})
    assert body["pagelen"] == 50
    page = next(
        client.iter_pages(
            api_path("repositories", "acme", slug, "pullrequests"),
            [("state", "OPEN"), ("state", "MERGED")],
            pagelen=100,
        )
    )
    # Asked for 100, sent 50: the simulator, like Bitbucket, rejects more on PR lists.
    assert len(page.values) <= 50
    assert client.ledger.by_family["pullrequests"] == 2


def test_fields_trim_the_payload(sim: SimProcess, runtime_for: RuntimeFactory) -> None:
    client = runtime_for(sim).bitbucket()
    repo = next(client.paginate(api_path("repositories", "acme"), {"fields": "-values.links"}))
    assert "links" not in repo and "uuid" in repo


def test_raw_files_come_with_etags_and_304s(sim: SimProcess, runtime_for: RuntimeFactory) -> None:
    client = runtime_for(sim).bitbucket()
    found = None
    for repo in client.paginate(api_path("repositories", "acme")):
        branch = repo["mainbranch"]["name"]
        raw = client.get_file(file_path("acme", repo["slug"], branch, "README.md"))
        if raw is not None:
            found = (repo["slug"], branch, raw)
            break
    assert found is not None
    slug, branch, raw = found
    assert raw.content and raw.etag
    again = client.get_file(file_path("acme", slug, branch, "README.md"), etag=raw.etag)
    assert again is not None and again.not_modified and again.content is None
    assert client.get_file(file_path("acme", slug, branch, "no/such/file.yaml")) is None
    assert sim.stats()["calls"]["src"] == client.ledger.by_family["src"]


@pytest.mark.parametrize("kind", ["access_token", "api_token", "oauth"])
def test_each_credential_kind_is_accepted_by_bitbucket(
    kind: str, sim_factory: SimFactory, runtime_for: RuntimeFactory
) -> None:
    if kind == "access_token":
        sim = sim_factory(access_token="at-1")
        env = {"BITBUCKET_ACCESS_TOKEN": "at-1"}
    elif kind == "api_token":
        sim = sim_factory(email="dev@example.com", api_token="apitok-1")
        env = {
            "BITBUCKET_ACCESS_TOKEN": "",
            "BITBUCKET_EMAIL": "dev@example.com",
            "BITBUCKET_API_TOKEN": "apitok-1",
        }
    else:
        sim = sim_factory(oauth_client_id="client-1", oauth_client_secret="shh-1")
        env = oauth_env(sim)
    workspace = runtime_for(sim, **env).bitbucket().get_json(api_path("workspaces", "acme"))
    assert workspace["slug"] == "acme"


def test_oauth_token_is_shared_through_redis_by_every_process(
    sim_factory: SimFactory, runtime_for: RuntimeFactory
) -> None:
    sim = sim_factory(oauth_client_id="client-1", oauth_client_secret="shh-1")
    env = oauth_env(sim)
    first, second = runtime_for(sim, **env), runtime_for(sim, **env)
    first.bitbucket().get_json(api_path("workspaces", "acme"))
    second.bitbucket().get_json(api_path("workspaces", "acme"))
    assert sim.stats()["calls"].get("oauth") == 1
    # Renewed before expiry: cached for expires_in minus the margin, never longer.
    ttl = first.redis.ttl(f"bbsync:oauth-token/{first.settings.credential.fingerprint}")
    assert 7200 - 300 - 5 <= ttl <= 7200 - 300


def test_a_revoked_oauth_token_is_renewed_once(
    sim_factory: SimFactory, runtime_for: RuntimeFactory
) -> None:
    sim = sim_factory(oauth_client_id="client-1", oauth_client_secret="shh-1")
    env = oauth_env(sim)
    rt = runtime_for(sim, **env)
    rt.redis.set(f"bbsync:oauth-token/{rt.settings.credential.fingerprint}", "stale", ex=600)
    assert rt.bitbucket().get_json(api_path("workspaces", "acme"))["slug"] == "acme"
    assert sim.stats()["calls"].get("oauth") == 1


def test_wrong_oauth_secret_is_a_credential_error(
    sim_factory: SimFactory, runtime_for: RuntimeFactory
) -> None:
    sim = sim_factory(oauth_client_id="client-1", oauth_client_secret="shh-1")
    rt = runtime_for(sim, **oauth_env(sim, secret="wrong"))
    with pytest.raises(CredentialError) as caught:
        rt.bitbucket().get_json(api_path("workspaces", "acme"))
    assert "BITBUCKET_OAUTH_CLIENT_ID" in str(caught.value)
    assert "wrong" not in str(caught.value)


def test_a_refused_credential_names_the_endpoint_and_status(
    sim: SimProcess, runtime_for: RuntimeFactory
) -> None:
    client = runtime_for(sim, BITBUCKET_ACCESS_TOKEN="not-the-token").bitbucket()
    with pytest.raises(CredentialError) as caught:
        client.get_json(api_path("repositories", "acme"))
    message = str(caught.value)
    assert message.startswith("GET repositories/acme: HTTP 401")
    assert "not-the-token" not in message
    assert caught.value.status == 401


def test_not_found_fails_fast_without_retrying(
    sim: SimProcess, runtime_for: RuntimeFactory
) -> None:
    client = runtime_for(sim).bitbucket()
    with pytest.raises(NotFound) as caught:
        client.get_json(api_path("repositories", "acme", "no-such-repo"))
    assert "HTTP 404" in str(caught.value)
    assert client.ledger.total == 1


def test_urls_off_the_configured_api_are_refused(
    sim: SimProcess, runtime_for: RuntimeFactory
) -> None:
    client = runtime_for(sim).bitbucket()
    host_port = sim.api_url.split("://", 1)[1].split("/", 1)[0]
    host, port = host_port.rsplit(":", 1)
    for url in (
        "https://evil.example.com/2.0/repositories/acme",
        f"http://{host}:{int(port) + 1}/2.0/repositories/acme",  # same host, other port
        f"http://{host_port}/site/oauth2/access_token",  # same origin, outside the API path
        f"http://user:pw@{host_port}/2.0/repositories/acme",
    ):
        with pytest.raises(ForeignHostError) as caught:
            client.get_json(url)
        assert "only" in str(caught.value) and "BITBUCKET_API_URL" in str(caught.value)
    assert client.ledger.total == 0
    assert sim.stats()["calls_total"] == 0


def test_a_429_pauses_every_process_sharing_the_credential(
    sim_factory: SimFactory, runtime_for: RuntimeFactory
) -> None:
    sim = sim_factory(access_token="sim-token", rate_limit="3/m", retry_after=7)
    rt = runtime_for(sim)
    client = rt.bitbucket()
    for _ in range(3):
        client.get_json(api_path("workspaces", "acme"))
    with pytest.raises(RateLimited) as caught:
        client.get_json(api_path("workspaces", "acme"))
    assert 6 <= (caught.value.retry_after or 0) <= 7
    stats_before = sim.stats()
    assert stats_before["rate_limited"] == 1

    # Another process, same credential: it must not call Bitbucket while the pause lasts.
    env = {
        **os.environ,
        "DATABASE_URL": rt.settings.database_url,
        "REDIS_URL": rt.settings.redis_url,
        "BITBUCKET_API_URL": sim.api_url,
        "BITBUCKET_ACCESS_TOKEN": "sim-token",
    }
    script = (
        "import json\n"
        "from app.config import load_settings\n"
        "from app.runtime import Runtime\n"
        "from app.bitbucket.errors import BudgetPaused\n"
        "client = Runtime(load_settings(None)).bitbucket(priority='webhook')\n"
        "try:\n"
        "    client.get_json('workspaces/acme')\n"
        "    print(json.dumps({'outcome': 'called'}))\n"
        "except BudgetPaused as exc:\n"
        "    print(json.dumps({'outcome': 'paused', 'retry_after': exc.retry_after}))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    outcome = json.loads(result.stdout.strip().splitlines()[-1])
    assert outcome["outcome"] == "paused"
    assert 0 < outcome["retry_after"] <= 7
    assert sim.stats()["calls_total"] == stats_before["calls_total"]


def test_without_retry_after_the_pause_lasts_until_the_window_frees(
    sim_factory: SimFactory, runtime_for: RuntimeFactory
) -> None:
    sim = sim_factory(access_token="sim-token", rate_limit="2/m")
    rt = runtime_for(sim, BITBUCKET_RATE_WINDOW_SECONDS="60")
    client = rt.bitbucket()
    client.get_json(api_path("workspaces", "acme"))
    client.get_json(api_path("workspaces", "acme"))
    with pytest.raises(RateLimited) as caught:
        client.get_json(api_path("workspaces", "acme"))
    assert 55 <= (caught.value.retry_after or 0) <= 60
    with pytest.raises(BudgetPaused):
        rt.bitbucket(priority=Priority.WEBHOOK).get_json(api_path("workspaces", "acme"))


def test_5xx_answers_are_retried_with_backoff_and_each_attempt_counts(
    sim: SimProcess, runtime_for: RuntimeFactory
) -> None:
    sim.admin("POST", "faults", json={"status": 503, "times": 2, "path_contains": "/workspaces/"})
    client = runtime_for(sim).bitbucket()
    client.backoff_base = 0.01
    assert client.get_json(api_path("workspaces", "acme"))["slug"] == "acme"
    assert client.ledger.by_family["workspaces"] == 3
    assert sim.stats()["calls"]["workspaces"] == 3
    assert client.budget.snapshot().used == 3


def test_a_persistent_outage_becomes_retry_later_after_the_retries(
    sim: SimProcess, runtime_for: RuntimeFactory
) -> None:
    sim.admin("POST", "faults", json={"status": 502, "times": 10, "path_contains": "/workspaces/"})
    client = runtime_for(sim, BITBUCKET_HTTP_RETRIES="2").bitbucket()
    client.backoff_base = 0.01
    with pytest.raises(BitbucketUnavailable) as caught:
        client.get_json(api_path("workspaces", "acme"))
    assert str(caught.value) == "GET workspaces/acme: HTTP 502 after 3 attempts"
    assert sim.stats()["calls"]["workspaces"] == 3


def test_an_unreachable_api_is_retried_then_reported(runtime_for: RuntimeFactory) -> None:
    client = runtime_for(
        BITBUCKET_API_URL="http://127.0.0.1:9/2.0", BITBUCKET_HTTP_RETRIES="1"
    ).bitbucket()
    client.backoff_base = 0.01
    with pytest.raises(BitbucketUnavailable) as caught:
        client.get_json(api_path("workspaces", "acme"))
    assert "no answer after 2 attempts (ConnectionError)" in str(caught.value)
    assert client.ledger.by_family["workspaces"] == 2


def test_a_next_link_to_another_host_is_refused_and_gets_no_credentials(
    sim_factory: SimFactory, runtime_for: RuntimeFactory
) -> None:
    sim = sim_factory(repos=150, access_token="sim-token")
    elsewhere = sim_factory(repos=150, access_token="sim-token")
    sim.admin(
        "POST", "faults", json={"next_origin": elsewhere.url, "path_contains": "/repositories/"}
    )
    client = runtime_for(sim).bitbucket()
    pages = client.iter_pages(api_path("repositories", "acme"))
    first = next(pages)
    assert first.next_url and first.next_url.startswith(elsewhere.url)
    with pytest.raises(ForeignHostError):
        next(pages)
    assert elsewhere.stats()["calls_total"] == 0


def test_calls_that_change_something_are_sent_once_unless_declared_harmless(
    sim: SimProcess, runtime_for: RuntimeFactory
) -> None:
    rt = runtime_for(sim)
    client = rt.bitbucket()
    client.backoff_base = 0.01
    hooks = api_path("workspaces", "acme", "hooks")
    body = {"url": "http://127.0.0.1:9/hook", "events": ["repo:push"], "description": "t"}

    def hook_calls() -> int:
        return int(sim.stats()["calls"]["hooks"])

    def hook_count() -> int:
        return len(list(client.paginate(hooks)))

    sim.admin(
        "POST",
        "faults",
        json={"status": 503, "times": 5, "path_contains": "/hooks", "method": "POST"},
    )
    before = hook_calls()
    with pytest.raises(BitbucketUnavailable) as caught:
        client.post_json(hooks, body)
    assert "HTTP 503 after 1 attempts (not retried" in str(caught.value)
    assert hook_calls() == before + 1
    sim.admin("DELETE", "faults")

    # A PUT of the whole subscription is harmless to repeat: its caller says so.
    uid = str(client.post_json(hooks, body)["uuid"]).strip("{}")
    sim.admin(
        "POST",
        "faults",
        json={"status": 502, "times": 1, "path_contains": "/hooks/", "method": "PUT"},
    )
    before = hook_calls()
    client.request("PUT", f"{hooks}/{uid}", json=body, retry=True)
    assert hook_calls() == before + 2

    # A slow answer: the POST was carried out, the client cannot know, and does not repeat it.
    existing = hook_count()
    sim.admin(
        "POST",
        "faults",
        json={"delay_seconds": 3, "times": 5, "path_contains": "/hooks", "method": "POST"},
    )
    before = hook_calls()
    with pytest.raises(NoAnswer) as unknown:
        rt.bitbucket(timeout=0.5).post_json(hooks, body)
    assert "it may have taken effect" in str(unknown.value)
    assert hook_calls() == before + 1
    assert hook_count() == existing + 1
