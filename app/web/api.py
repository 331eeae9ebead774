"""JSON API: the shared rate budget and the catalog files bbsync reads."""

from __future__ import annotations

from typing import Any

import redis
from flask import Blueprint, jsonify, request
from marshmallow import Schema, ValidationError, fields, validate
from sqlalchemy import or_, select

from app.models import CatalogFile, Repository, Workspace
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


class CatalogFileSchema(Schema):
    repository = fields.String()
    path = fields.String()
    commit = fields.String(allow_none=True)
    fetched_at = fields.DateTime()
    parse_error = fields.String(allow_none=True)
    entity_conflicts = fields.List(fields.String(), allow_none=True)


class CatalogFileQuerySchema(Schema):
    workspace = fields.String(load_default=None)
    errors = fields.Boolean(load_default=False)
    limit = fields.Integer(load_default=100, validate=validate.Range(min=1, max=1000))
    offset = fields.Integer(load_default=0, validate=validate.Range(min=0))


_file_schema = CatalogFileSchema(many=True)
_file_query_schema = CatalogFileQuerySchema()


@api.get("/catalog-files")
def catalog_files() -> Any:
    """Descriptor files bbsync reads, with parse errors and entity conflicts."""
    try:
        query = _file_query_schema.load(request.args)
    except ValidationError as exc:
        return jsonify(error="invalid_query", fields=exc.messages), 400
    stmt = (
        select(CatalogFile, Repository.full_name)
        .join(Repository, CatalogFile.repository_id == Repository.id)
        .where(CatalogFile.deleted_at.is_(None), Repository.deleted_at.is_(None))
        .order_by(Repository.full_name, CatalogFile.path)
    )
    if query["workspace"]:
        stmt = stmt.join(Workspace, Repository.workspace_id == Workspace.id).where(
            Workspace.slug == query["workspace"]
        )
    if query["errors"]:
        stmt = stmt.where(
            or_(CatalogFile.parse_error.is_not(None), CatalogFile.entity_conflicts.is_not(None))
        )
    with runtime().sessions() as session:
        rows = session.execute(stmt.offset(query["offset"]).limit(query["limit"] + 1)).all()
    items = [
        {
            "repository": full_name,
            "path": f.path,
            "commit": f.commit,
            "fetched_at": f.fetched_at,
            "parse_error": f.parse_error,
            "entity_conflicts": f.entity_conflicts,
        }
        for f, full_name in rows[: query["limit"]]
    ]
    more = len(rows) > query["limit"]
    return jsonify(
        items=_file_schema.dump(items),
        next_offset=query["offset"] + query["limit"] if more else None,
    )


@api.get("/budget")
def budget() -> Any:
    rt = runtime()
    try:
        snapshot = rt.budget.snapshot().as_dict()
    except redis.RedisError as exc:
        return jsonify(error="redis_unavailable", message=type(exc).__name__), 503
    snapshot["credential"] = rt.settings.credential.kind.value
    return jsonify(_budget_schema.dump(snapshot))
