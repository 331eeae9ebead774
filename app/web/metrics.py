"""`GET /metrics` in Prometheus text format. The figures come from Redis and the database,
which every process shares, so one scrape of the web process sees the whole system."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from datetime import timedelta
from typing import cast

import redis
from flask import Blueprint, Response
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector
from sqlalchemy import func, select
from sqlalchemy.exc import SQLAlchemyError

from app.bitbucket.accounting import shared_call_totals
from app.bitbucket.quota import alert_counts
from app.models import CatalogEntity, ParkedTask, SyncRun, WebhookDelivery, utcnow
from app.ops.telemetry import ingress_histogram, task_figures, unauthenticated_counts
from app.runtime import Runtime
from app.sync.refresh_failures import stale_count
from app.task_names import QUEUES
from app.web import runtime
from app.web.auth import require_metrics_token

metrics = Blueprint("metrics", __name__)
metrics.before_request(require_metrics_token)


class SharedStateCollector(Collector):
    """Reads the shared budget, call counters and catalog figures at scrape time."""

    def __init__(self, rt: Runtime) -> None:
        self.rt = rt

    def collect(self) -> Iterator[Metric]:
        # /readyz reports an unreachable store; a scrape still returns what it can.
        with contextlib.suppress(redis.RedisError):
            yield from self._from_redis()
        with contextlib.suppress(SQLAlchemyError):
            yield from self._from_database()

    def _from_redis(self) -> Iterator[Metric]:
        calls = CounterMetricFamily(
            "bbsync_bitbucket_calls",
            "Bitbucket API calls by endpoint family and HTTP status",
            labels=["family", "status"],
        )
        for (family, status), value in sorted(shared_call_totals(self.rt.redis).items()):
            calls.add_metric([family, status], value)
        yield calls
        snapshots = [budget.snapshot() for budget in self.rt.budgets]
        if self.rt.settings.datacenter is not None:
            snapshots.append(self.rt.datacenter_budget.snapshot())  # resource "datacenter"
        for name, doc in (
            ("limit", "Calls allowed per window (announced by Bitbucket when it does)"),
            ("reserve", "Calls held back for webhook-driven work"),
            ("used", "Calls spent in the current window"),
            ("remaining", "Calls left in the current window"),
        ):
            gauge = GaugeMetricFamily(f"bbsync_budget_{name}", doc, labels=["resource"])
            for snapshot in snapshots:
                gauge.add_metric([snapshot.resource], getattr(snapshot, name))
            yield gauge
        tasks = task_figures(self.rt.redis)
        for name, doc, what in (
            ("bbsync_task_runs", "Celery task runs by task", "runs"),
            ("bbsync_task_failures", "Celery task failures by task", "failures"),
            ("bbsync_task_seconds", "Time spent in Celery tasks by task", "seconds"),
        ):
            counter = CounterMetricFamily(name, doc, labels=["task"])
            for task, figures in sorted(tasks.items()):
                counter.add_metric([task], figures.get(what, 0))
            yield counter
        buckets, total = ingress_histogram(self.rt.redis)
        yield HistogramMetricFamily(
            "bbsync_ingress_seconds",
            "Webhook ingress answer time",
            buckets=buckets,
            sum_value=total,
        )
        alerts = CounterMetricFamily(
            "bbsync_quota_alerts", "Budget past the warning mark, and 429s", labels=["kind"]
        )
        for kind, value in sorted(alert_counts(self.rt.redis).items()):
            alerts.add_metric([kind], value)
        yield alerts
        refused = CounterMetricFamily(
            "bbsync_unauthenticated_requests",
            "Requests refused without a valid credential (never stored), by endpoint and reason",
            labels=["endpoint", "reason"],
        )
        for (endpoint, reason), value in sorted(unauthenticated_counts(self.rt.redis).items()):
            refused.add_metric([endpoint, reason], value)
        yield refused
        if self.rt.settings.broker_url.startswith(("redis://", "rediss://")):
            depth = GaugeMetricFamily(
                "bbsync_queue_depth", "Tasks waiting in each Celery queue", labels=["queue"]
            )
            broker = self.rt.broker_redis
            for queue in QUEUES:
                depth.add_metric([queue], int(cast(int, broker.llen(queue))))
            yield depth
        paused = GaugeMetricFamily(
            "bbsync_budget_paused", "1 while a 429 pauses every process", labels=["resource"]
        )
        for snapshot in snapshots:
            paused.add_metric([snapshot.resource], 1 if snapshot.paused_until else 0)
        yield paused

    def _from_database(self) -> Iterator[Metric]:
        with self.rt.sessions() as session:
            entities = GaugeMetricFamily(
                "bbsync_catalog_entities", "Live catalog entities by kind", labels=["kind"]
            )
            for kind, count in session.execute(
                select(CatalogEntity.kind, func.count())
                .where(CatalogEntity.deleted_at.is_(None))
                .group_by(CatalogEntity.kind)
            ):
                entities.add_metric([kind], count)
            yield entities
            runs = CounterMetricFamily(
                "bbsync_sync_runs", "Sync runs by kind and outcome", labels=["kind", "status"]
            )
            for kind, status, count in session.execute(
                select(SyncRun.kind, SyncRun.status, func.count()).group_by(
                    SyncRun.kind, SyncRun.status
                )
            ):
                runs.add_metric([kind, status], count)
            yield runs
            parked = GaugeMetricFamily(
                "bbsync_parked_tasks",
                "Tasks parked after their worker died on them twice, by task",
                labels=["task"],
            )
            for name, count in session.execute(
                select(ParkedTask.task_name, func.count()).group_by(ParkedTask.task_name)
            ):
                parked.add_metric([name], count)
            yield parked
            deliveries = CounterMetricFamily(
                "bbsync_webhook_deliveries",
                "Webhook deliveries stored, by event and outcome",
                labels=["event", "status"],
            )
            for event, status, count in session.execute(
                select(WebhookDelivery.event_key, WebhookDelivery.status, func.count()).group_by(
                    WebhookDelivery.event_key, WebhookDelivery.status
                )
            ):
                deliveries.add_metric([event, status], count)
            yield deliveries
            hour_ago = utcnow() - timedelta(hours=1)
            lag = session.execute(
                select(WebhookDelivery.received_at, WebhookDelivery.processed_at).where(
                    WebhookDelivery.status == "processed",
                    WebhookDelivery.processed_at >= hour_ago,
                )
            ).all()
            seconds = [(done - got).total_seconds() for got, done in lag if got and done]
            yield GaugeMetricFamily(
                "bbsync_webhook_lag_seconds_max",
                "Longest time from delivery to processed over the last hour",
                value=max(seconds, default=0.0),
            )
            yield GaugeMetricFamily(
                "bbsync_webhook_lag_seconds_avg",
                "Mean time from delivery to processed over the last hour",
                value=sum(seconds) / len(seconds) if seconds else 0.0,
            )
            yield GaugeMetricFamily(
                "bbsync_catalog_stale_repositories",
                "Repositories whose webhook-driven catalog refresh failed its last attempt",
                value=stale_count(session),
            )


@metrics.get("/metrics")
def scrape() -> Response:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(SharedStateCollector(runtime()))
    return Response(generate_latest(registry), mimetype="text/plain; version=0.0.4")
