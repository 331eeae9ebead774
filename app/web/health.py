"""Liveness (`/healthz`: the process answers) and readiness (`/readyz`: the process can take
a webhook delivery). A load balancer sends traffic only where `/readyz` says 200.

A delivery is taken when the database stores it, or, while the database is down, when the
Redis spool holds it: readiness is lost only when neither can. Redis down with the database
up is `degraded` (the budget, the broker and the metrics suffer; deliveries do not).
"""

from __future__ import annotations

from typing import Any

import redis
from flask import Blueprint, jsonify
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

from app.outbox import DeliverySpool
from app.web import runtime

health = Blueprint("health", __name__)


@health.get("/healthz")
def healthz() -> Any:
    return jsonify(status="ok")


@health.get("/readyz")
def readyz() -> Any:
    rt = runtime()
    checks: dict[str, Any] = {"database": "ok", "redis": "ok"}
    database_up = True
    try:
        with rt.engine.connect() as connection:
            connection.execute(text("SELECT 1"))
    except SQLAlchemyError as exc:
        database_up = False
        checks["database"] = f"unreachable: {type(getattr(exc, 'orig', None) or exc).__name__}"
    spool = DeliverySpool(rt.redis, rt.settings.spool_max_entries)
    try:
        rt.redis.ping()
        checks["spool"] = spool.depth()
    except redis.RedisError as exc:
        checks["redis"] = f"degraded: unreachable: {type(exc).__name__}"
    if database_up:
        status = "ok" if checks["redis"] == "ok" else "degraded"
        return jsonify(status=status, deliveries="stored", checks=checks)
    if "spool" in checks and spool.can_take():
        return jsonify(status="degraded", deliveries="spooled", checks=checks)
    return jsonify(status="unavailable", deliveries="refused", checks=checks), 503
