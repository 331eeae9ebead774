"""JSON API: the shared rate budget (more resources come with their issues)."""

from __future__ import annotations

from typing import Any

import redis
from flask import Blueprint, jsonify
from marshmallow import Schema, fields

from app.web import runtime

api = Blueprint("api", __name__, url_prefix="/api")


class BudgetSchema(Schema):
    credential = fields.String()
    limit = fields.Integer()
    reserve = fields.Integer()
    used = fields.Integer()
    remaining = fields.Integer()
    backfill_remaining = fields.Integer()
    window_seconds = fields.Integer()
    frees_at = fields.String(allow_none=True)
    paused_until = fields.String(allow_none=True)


_budget_schema = BudgetSchema()


@api.get("/budget")
def budget() -> Any:
    rt = runtime()
    try:
        snapshot = rt.budget.snapshot().as_dict()
    except redis.RedisError as exc:
        return jsonify(error="redis_unavailable", message=type(exc).__name__), 503
    snapshot["credential"] = rt.settings.credential.kind.value
    return jsonify(_budget_schema.dump(snapshot))
