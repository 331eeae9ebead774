"""Liveness (`/healthz`: the process answers) and readiness (`/readyz`: its database and
Redis answer too). A load balancer sends traffic only where `/readyz` says 200."""

from __future__ import annotations

from typing import Any

import redis
from flask import Blueprint, jsonify
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

from app.web import runtime

health = Blueprint("health", __name__)


@health.get("/healthz")
def healthz() -> Any:
    return jsonify(status="ok")


@health.get("/readyz")
def readyz() -> Any:
    rt = runtime()
    problems: dict[str, str] = {}
    try:
        with rt.engine.connect() as connection:
            connection.execute(text("SELECT 1"))
    except SQLAlchemyError as exc:
        problems["database"] = f"unreachable: {type(getattr(exc, 'orig', None) or exc).__name__}"
    try:
        rt.redis.ping()
    except redis.RedisError as exc:
        problems["redis"] = f"unreachable: {type(exc).__name__}"
    if problems:
        return jsonify(status="unavailable", checks=problems), 503
    return jsonify(status="ok", checks={"database": "ok", "redis": "ok"})
