"""Counters every process writes to Redis and `/metrics` reads: task runs, failures and
durations, ingress latency, and requests refused for want of a valid credential. Shared
through Redis, so gunicorn and Celery workers need no multiprocess mode; a Redis hiccup never
fails the work being measured."""

from __future__ import annotations

import logging
from typing import cast

import redis
from redis.client import Pipeline

from app.bitbucket.budget import KEY_PREFIX

log = logging.getLogger(__name__)

TASKS_KEY = f"{KEY_PREFIX}:tasks"
INGRESS_KEY = f"{KEY_PREFIX}:ingress-latency"
UNAUTHENTICATED_KEY = f"{KEY_PREFIX}:unauthenticated"
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


def record_task(client: redis.Redis, task: str, seconds: float, failed: bool) -> None:
    try:
        pipe = client.pipeline(transaction=False)
        pipe.hincrby(TASKS_KEY, f"{task}|runs", 1)
        if failed:
            pipe.hincrby(TASKS_KEY, f"{task}|failures", 1)
        pipe.hincrbyfloat(TASKS_KEY, f"{task}|seconds", seconds)
        pipe.execute()
    except redis.RedisError:
        log.warning("task metrics not recorded", extra={"task": task})


def task_figures(client: redis.Redis) -> dict[str, dict[str, float]]:
    figures: dict[str, dict[str, float]] = {}
    for field, value in cast(dict[bytes, bytes], client.hgetall(TASKS_KEY)).items():
        task, _, what = field.decode().rpartition("|")
        figures.setdefault(task, {"runs": 0, "failures": 0, "seconds": 0.0})[what] = float(value)
    return figures


def record_ingress(client: redis.Redis, seconds: float) -> None:
    try:
        pipe = client.pipeline(transaction=False)
        queue_ingress(pipe, seconds)
        pipe.execute()
    except redis.RedisError:
        log.warning("ingress latency not recorded")


def queue_ingress(pipe: Pipeline, seconds: float) -> None:
    """The commands that record one delivery's latency, added to `pipe` (the ingress sends
    them with its own read of the spool, in one round trip)."""
    for bound in LATENCY_BUCKETS:
        if seconds <= bound:
            pipe.hincrby(INGRESS_KEY, str(bound), 1)
    pipe.hincrby(INGRESS_KEY, "count", 1)
    pipe.hincrbyfloat(INGRESS_KEY, "sum", seconds)


def ingress_histogram(client: redis.Redis) -> tuple[list[tuple[str, float]], float]:
    """Cumulative `(le, count)` buckets with `+Inf`, and the sum of seconds."""
    raw = {
        k.decode(): float(v)
        for k, v in cast(dict[bytes, bytes], client.hgetall(INGRESS_KEY)).items()
    }
    buckets = [(str(b), raw.get(str(b), 0.0)) for b in LATENCY_BUCKETS]
    buckets.append(("+Inf", raw.get("count", 0.0)))
    return buckets, raw.get("sum", 0.0)


def record_unauthenticated(client: redis.Redis, endpoint: str, reason: str) -> None:
    """Count a request refused before anyone was proven; `endpoint` and `reason` are fixed
    labels of ours (never caller text), so the counter cannot grow with what callers send."""
    try:
        client.hincrby(UNAUTHENTICATED_KEY, f"{endpoint}|{reason}", 1)
    except redis.RedisError:
        log.warning("unauthenticated request not counted", extra={"endpoint": endpoint})


def unauthenticated_counts(client: redis.Redis) -> dict[tuple[str, str], int]:
    """`{(endpoint, reason): count}`."""
    counts = {}
    for field, value in cast(dict[bytes, bytes], client.hgetall(UNAUTHENTICATED_KEY)).items():
        endpoint, _, reason = field.decode().partition("|")
        counts[(endpoint, reason)] = int(value)
    return counts
