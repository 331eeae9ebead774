"""Redis faults outside the budget's `acquire`: the OAuth token cache and its renewal lock,
quota alerts, call counters, and a real worker whose Redis is stopped. A Redis fault costs
time (a retry with a countdown), never a failed sync; telemetry never fails a call."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis
from sqlalchemy import select
from werkzeug.serving import BaseWSGIServer

from app.bitbucket.accounting import CallLedger
from app.bitbucket.auth import TokenSource
from app.bitbucket.budget import RateBudget
from app.bitbucket.client import BitbucketClient, api_path
from app.bitbucket.errors import BudgetUnavailable, RetryLater
from app.bitbucket.quota import QuotaWatch
from app.config import Settings, settings_from_env
from app.models import CatalogEntity, WebhookDelivery
from app.runtime import Runtime
from app.sync.workspace import WorkspaceSync
from app.task_names import SYNC_REPOSITORIES, enqueue, producer
from bitbucket_sim.testing import SimProcess
from tests.conftest import API_TOKEN
from tests.fault_support import PrivateRedis, wait_until
from tests.test_client import oauth_env
from tests.test_faults_refresh import ingress, install_hook  # noqa: F401  (fixture)
from tests.test_worker import WorkerFactory, start_worker, wait_for_run  # noqa: F401
from tests.webhook_support import SECRET


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
    migrated_postgres_url: str,
    redis_url: str,
    private_redis: PrivateRedis,
    start_worker: WorkerFactory,  # noqa: F811
    tmp_path: Path,
) -> None:
    sim = sim_factory(repos=20, oauth_client_id="client-1", oauth_client_secret="shh-1")
    # The broker stays up (the machine's Redis, this test's database); the shared state
    # (budget, OAuth token, counters, results) lives in the private Redis, stopped here.
    worker = start_worker(
        {
            "DATABASE_URL": migrated_postgres_url,
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
    run = wait_for_run(migrated_postgres_url, "succeeded", timeout=120)
    assert run.counts["seen"] == 20
    assert worker.poll() is None
    assert "raised unexpected" not in log()


def test_a_push_while_redis_is_down_still_refreshes_the_catalog_once_it_returns(
    sim_factory: Callable[..., SimProcess],
    migrated_postgres_url: str,
    redis_url: str,
    private_redis: PrivateRedis,
    start_worker: WorkerFactory,  # noqa: F811
    ingress: Callable[[Runtime], BaseWSGIServer],  # noqa: F811
) -> None:
    sim = sim_factory(repos=8, seed=5, access_token="sim-token", webhook_retry_delay=0.2)
    env = {
        "DATABASE_URL": migrated_postgres_url,
        "REDIS_URL": private_redis.url(),
        "CELERY_BROKER_URL": redis_url,
        "BITBUCKET_API_URL": sim.api_url,
        "BITBUCKET_WORKSPACES": "acme",
        "BITBUCKET_ACCESS_TOKEN": "sim-token",
        "BITBUCKET_WEBHOOK_SECRET": SECRET,
        "BBSYNC_API_TOKENS": API_TOKEN,
        "LOG_FORMAT": "json",
    }
    rt = Runtime(settings_from_env(env))
    with rt.sessions() as session:
        WorkspaceSync(rt.bitbucket(), session, session.commit, rt.settings).run("acme")
    install_hook(sim, ingress(rt))
    start_worker(env)
    slug = next(r["slug"] for r in sim.repositories() if r["catalog_layout"] == "single")
    private_redis.stop()
    descriptor = (
        "apiVersion: backstage.io/v1alpha1\nkind: Component\nmetadata:\n"
        "  name: pushed-while-redis-down\nspec:\n  type: service\n  lifecycle: production\n"
        "  owner: group:default/team\n"
    )
    sim.admin("POST", f"repos/{slug}/push", json={"files": {"catalog-info.yaml": descriptor}})

    def processed() -> bool:
        with rt.sessions() as session:
            return (
                session.scalars(
                    select(WebhookDelivery).where(
                        WebhookDelivery.event_key == "repo:push",
                        WebhookDelivery.status == "processed",
                    )
                ).first()
                is not None
            )

    # The push names no API call: it is applied without Redis, and its catalog read is sent
    # uncoalesced; that read waits (retries) for the budget, in Redis, to answer again.
    wait_until(processed, 90, "the push processed")
    private_redis.start()

    def served() -> bool:
        with rt.sessions() as session:
            return (
                session.scalars(
                    select(CatalogEntity).where(
                        CatalogEntity.name == "pushed-while-redis-down",
                        CatalogEntity.deleted_at.is_(None),
                    )
                ).first()
                is not None
            )

    wait_until(served, 120, "the pushed descriptor in the catalog")
    rt.engine.dispose()
