"""Redis faults outside the budget's `acquire`: the OAuth token cache and its renewal lock,
quota alerts, call counters, and a real worker whose Redis is stopped. A Redis fault costs
time (a retry with a countdown), never a failed sync; telemetry never fails a call."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis

from app.bitbucket.accounting import CallLedger
from app.bitbucket.auth import TokenSource
from app.bitbucket.budget import RateBudget
from app.bitbucket.client import BitbucketClient, api_path
from app.bitbucket.errors import BudgetUnavailable, RetryLater
from app.bitbucket.quota import QuotaWatch
from app.config import Settings
from app.tasks import SYNC_REPOSITORIES, enqueue, producer
from bitbucket_sim.testing import SimProcess
from tests.conftest import migrate
from tests.fault_support import PrivateRedis, wait_until
from tests.test_client import oauth_env
from tests.test_worker import WorkerFactory, start_worker, wait_for_run  # noqa: F401


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[PrivateRedis]:
    server = PrivateRedis(tmp_path)
    server.start()
    yield server
    server.stop()


@pytest.fixture
def oauth_sim(sim_factory: Callable[..., SimProcess]) -> SimProcess:
    return sim_factory(repos=5, oauth_client_id="client-1", oauth_client_secret="shh-1")


def test_the_oauth_token_cache_down_means_retry_later(
    oauth_sim: SimProcess,
    settings_for: Callable[..., Settings],
    private_redis: PrivateRedis,
) -> None:
    settings = settings_for(oauth_sim, **oauth_env(oauth_sim))
    tokens = TokenSource(settings.credential, redis.Redis.from_url(private_redis.url()))
    assert tokens.authorization()  # obtained and cached while Redis answers
    private_redis.stop()
    with pytest.raises(BudgetUnavailable, match="OAuth token cache unavailable"):
        tokens.authorization()
    with pytest.raises(BudgetUnavailable):
        tokens.invalidate()


def test_a_renewal_held_by_another_process_retries_later_instead_of_blocking(
    oauth_sim: SimProcess,
    settings_for: Callable[..., Settings],
    redis_client: redis.Redis,
) -> None:
    settings = settings_for(oauth_sim, **oauth_env(oauth_sim))
    tokens = TokenSource(settings.credential, redis_client)
    other = redis_client.lock(f"{tokens._cache_key}:lock", timeout=60)
    assert other.acquire(blocking=False)
    started = time.monotonic()
    with pytest.raises(RetryLater, match="being renewed") as raised:
        tokens.authorization()
    waited = time.monotonic() - started
    assert raised.value.retry_after is not None
    other.release()
    assert tokens.authorization()  # the renewal is free again
    print(f"\nworker held by another process's renewal: {waited:.1f}s (was up to 60 s)")


def test_quota_alerts_and_call_counters_never_fail_a_call(
    sim_factory: Callable[..., SimProcess],
    settings_for: Callable[..., Settings],
    redis_client: redis.Redis,
    private_redis: PrivateRedis,
) -> None:
    sim = sim_factory(repos=3, access_token="sim-token")
    settings = settings_for(sim)
    # The budget answers; the Redis holding alerts and counters is gone.
    budget = RateBudget(settings.redis_url, "fp", limit=1000, redis_client=redis_client)
    telemetry = redis.Redis.from_url(private_redis.url(), socket_connect_timeout=1)
    client = BitbucketClient(
        settings.bitbucket_api_url,
        TokenSource(settings.credential),
        budget,
        CallLedger(telemetry),
        quota=QuotaWatch(budget, telemetry, warn_percent=1),
    )
    for _ in range(9):
        client.get_json(api_path("workspaces", "acme"))
    private_redis.stop()
    for _ in range(3):  # the 10th call checks the quota and writes its alert marker
        assert client.get_json(api_path("workspaces", "acme"))["slug"] == "acme"
    assert client.ledger.total == 12


def test_a_worker_whose_redis_stops_retries_the_sync_and_finishes_it(
    sim_factory: Callable[..., SimProcess],
    postgres_url: str,
    redis_url: str,
    private_redis: PrivateRedis,
    start_worker: WorkerFactory,  # noqa: F811
    tmp_path: Path,
) -> None:
    migrate(postgres_url)
    sim = sim_factory(repos=20, oauth_client_id="client-1", oauth_client_secret="shh-1")
    # The broker stays up (the machine's Redis, this test's database); the shared state
    # (budget, OAuth token, counters, results) lives in the private Redis, stopped here.
    worker = start_worker(
        {
            "DATABASE_URL": postgres_url,
            "REDIS_URL": private_redis.url(),
            "CELERY_BROKER_URL": redis_url,
            "BITBUCKET_API_URL": sim.api_url,
            "BITBUCKET_WORKSPACES": "acme",
            "LOG_FORMAT": "json",
            **oauth_env(sim),
        }
    )
    private_redis.stop()
    enqueue(producer(redis_url), SYNC_REPOSITORIES, "acme")

    def log() -> str:
        return "\n".join(p.read_text() for p in tmp_path.glob("worker-*.log"))

    wait_until(lambda: "task will retry" in log(), 90, "the sync retrying")
    assert "Redis did not answer" in log()
    private_redis.start()
    run = wait_for_run(postgres_url, "succeeded", timeout=120)
    assert run.counts["seen"] == 20
    assert worker.poll() is None
    assert "raised unexpected" not in log()
