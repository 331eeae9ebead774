"""What one process needs to do bbsync's work, built once from settings and shared by the
web app, the Celery worker and the CLI: database engine and sessions, Redis, the shared rate
budget, and Bitbucket clients. Nothing here runs at import; connections open lazily."""

from __future__ import annotations

from functools import cached_property

import redis
from redis import Redis
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from app.bitbucket.accounting import CallLedger
from app.bitbucket.auth import TokenSource
from app.bitbucket.budget import Priority, RateBudget, Resource
from app.bitbucket.client import BitbucketClient
from app.bitbucket.datacenter import DataCenterClient
from app.bitbucket.quota import QuotaWatch
from app.bitbucket.token_bucket import TokenBucketBudget
from app.config import Settings
from app.datacenter_settings import DataCenterSettings
from app.db import make_engine, make_session_factory
from app.settings_fields import SettingsError


class Runtime:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    @cached_property
    def engine(self) -> Engine:
        return make_engine(self.settings.database_url)

    @cached_property
    def statement_engine(self) -> Engine:
        """For work that is single statements on the hot paths (the ingress's INSERT, the
        health lookup's SELECTs): autocommit, so no BEGIN or ROLLBACK round trips, and no
        ping at checkout; its users try once more when a pooled connection was dropped
        (`outbox.insert_delivery`, `retry_dropped`)."""
        return make_engine(self.settings.database_url, pre_ping=False, isolation_level="AUTOCOMMIT")

    @cached_property
    def statement_sessions(self) -> sessionmaker[Session]:
        """Sessions on `statement_engine`: for reads whose statements need no common
        snapshot (each one sees the latest commits, as under READ COMMITTED)."""
        return make_session_factory(self.statement_engine)

    @cached_property
    def sessions(self) -> sessionmaker[Session]:
        return make_session_factory(self.engine)

    @cached_property
    def redis(self) -> redis.Redis:
        return redis.Redis.from_url(
            self.settings.redis_url, socket_connect_timeout=5, socket_timeout=10
        )

    @cached_property
    def broker_redis(self) -> Redis:
        """The Celery broker, when it is Redis (queue depths for /metrics)."""
        return redis.Redis.from_url(
            self.settings.broker_url, socket_connect_timeout=5, socket_timeout=10
        )

    @cached_property
    def budget(self) -> RateBudget:
        """The window every API call counts in (`repositories`)."""
        s = self.settings
        return self._window(Resource.API, s.rate_limit_per_hour, s.rate_reserve)

    @cached_property
    def raw_budget(self) -> RateBudget:
        """The window raw file content (`/src/`) counts in, beside the API's."""
        s = self.settings
        return self._window(Resource.RAW, s.raw_rate_limit_per_hour, s.raw_rate_reserve)

    def _window(self, resource: Resource, limit: int, reserve: int) -> RateBudget:
        s = self.settings
        return RateBudget(
            s.redis_url,
            s.credential.fingerprint,
            limit=limit,
            window_seconds=s.rate_window_seconds,
            reserve=reserve,
            redis_client=self.redis,
            resource=resource,
            floor=s.rate_limit_floor,
            probe_seconds=s.rate_limit_probe_seconds,
        )

    @property
    def budgets(self) -> tuple[RateBudget, ...]:
        return (self.budget, self.raw_budget)

    @cached_property
    def tokens(self) -> TokenSource:
        return TokenSource(
            self.settings.credential, self.redis, timeout=self.settings.http_timeout_seconds
        )

    def bitbucket(
        self, priority: Priority = Priority.BACKFILL, timeout: float | None = None
    ) -> BitbucketClient:
        """A client with its own call ledger (one per task run or CLI command).

        `timeout` bounds each call below `BITBUCKET_HTTP_TIMEOUT`: a web request that calls
        Bitbucket must answer before the web server gives up on it.
        """
        return BitbucketClient(
            self.settings.bitbucket_api_url,
            self.tokens,
            self.budget,
            CallLedger(self.redis),
            raw_budget=self.raw_budget,
            learn_limits=self.settings.learn_rate_limit,
            priority=priority,
            timeout=min(timeout or float("inf"), self.settings.http_timeout_seconds),
            max_retries=self.settings.http_max_retries,
            quota=self.quota,
        )

    @property
    def datacenter_settings(self) -> DataCenterSettings:
        if self.settings.datacenter is None:
            raise SettingsError("BITBUCKET_DC_URL: not set, so there is no Data Center source")
        return self.settings.datacenter

    @cached_property
    def datacenter_budget(self) -> TokenBucketBudget:
        """The Data Center credential's token bucket, shared by every process."""
        s, dc = self.settings, self.datacenter_settings
        return TokenBucketBudget(
            s.redis_url,
            dc.fingerprint,
            rate_per_second=dc.rate_per_second,
            burst=dc.burst,
            reserve=dc.burst * s.rate_reserve_percent // 100,
            redis_client=self.redis,
            probe_seconds=s.rate_limit_probe_seconds,
        )

    def datacenter(
        self, priority: Priority = Priority.BACKFILL, timeout: float | None = None
    ) -> DataCenterClient:
        """A Data Center client with its own call ledger (one per task run or CLI command)."""
        return DataCenterClient.from_settings(
            self.datacenter_settings,
            self.datacenter_budget,
            CallLedger(self.redis),
            priority=priority,
            timeout=min(timeout or float("inf"), self.settings.http_timeout_seconds),
            max_retries=self.settings.http_max_retries,
        )

    @cached_property
    def quota(self) -> QuotaWatch:
        return QuotaWatch(
            self.budget, self.redis, self.settings.quota_warn_percent, others=(self.raw_budget,)
        )

    def dispose(self) -> None:
        """Drop pooled database connections after a fork (redis-py re-opens by itself)."""
        for name in ("engine", "statement_engine"):
            if name in self.__dict__:
                self.__dict__[name].dispose(close=False)
