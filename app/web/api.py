"""JSON API: the shared rate budget, the catalog files bbsync reads, webhook deliveries."""

from __future__ import annotations

from typing import Any

import redis
from flask import Blueprint, jsonify
from marshmallow import Schema, fields, validate
from sqlalchemy import or_, select
from sqlalchemy.exc import SQLAlchemyError

from app.models import CatalogFile, DeliveryStatus, Repository, WebhookDelivery, Workspace
from app.sync.coverage import workspace_sweeps
from app.web import runtime
from app.web.auth import require_api_token
from app.web.paging import PageQuerySchema, fetch_page, load_query

api = Blueprint("api", __name__, url_prefix="/api")
api.before_request(require_api_token)


class ResourceBudgetSchema(Schema):
    resource = fields.String()
    limit = fields.Integer()
    configured_limit = fields.Integer(allow_none=True)
    announced_limit = fields.Integer(allow_none=True)
    reserve = fields.Integer()
    used = fields.Integer()
    remaining = fields.Integer()
    backfill_remaining = fields.Integer()
    window_seconds = fields.Integer()
    frees_at = fields.String(allow_none=True)
    paused_until = fields.String(allow_none=True)


class SweepSchema(Schema):
    """A scheduled sweep within its share: how far behind it is, how long a full pass takes."""

    share = fields.Float()
    repositories = fields.Integer()
    never = fields.Integer()
    oldest = fields.String(allow_none=True)
    oldest_age_hours = fields.Float(allow_none=True)
    sweep_hours = fields.Float(allow_none=True)


class BudgetSchema(ResourceBudgetSchema):
    """The API window at the top level (as before), and every resource's window; per workspace
    the sweeps that spend shares of it (`activity`, `people`; null when the database is down)."""

    credential = fields.String()
    resources = fields.Dict(keys=fields.String(), values=fields.Nested(ResourceBudgetSchema))
    sweeps = fields.Dict(
        keys=fields.String(),
        values=fields.Dict(keys=fields.String(), values=fields.Nested(SweepSchema)),
        allow_none=True,
    )


_budget_schema = BudgetSchema()


class CatalogFileSchema(Schema):
    repository = fields.String()
    path = fields.String()
    commit = fields.String(allow_none=True)
    fetched_at = fields.DateTime()
    parse_error = fields.String(allow_none=True)
    entity_conflicts = fields.List(fields.String(), allow_none=True)


class CatalogFileQuerySchema(PageQuerySchema):
    workspace = fields.String(load_default=None)
    errors = fields.Boolean(load_default=False)


_file_schema = CatalogFileSchema(many=True)
_file_query_schema = CatalogFileQuerySchema()


@api.get("/catalog-files")
def catalog_files() -> Any:
    """Descriptor files bbsync reads, with parse errors and entity conflicts."""
    query = load_query(_file_query_schema)
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
        rows, next_offset = fetch_page(lambda s: session.execute(s).all(), stmt, query)
    items = [
        {
            "repository": full_name,
            "path": f.path,
            "commit": f.commit,
            "fetched_at": f.fetched_at,
            "parse_error": f.parse_error,
            "entity_conflicts": f.entity_conflicts,
        }
        for f, full_name in rows
    ]
    return jsonify(items=_file_schema.dump(items), next_offset=next_offset)


@api.get("/budget")
def budget() -> Any:
    rt = runtime()
    try:
        resources = {b.resource.value: b.snapshot().as_dict() for b in rt.budgets}
    except redis.RedisError as exc:
        return jsonify(error="redis_unavailable", message=type(exc).__name__), 503
    snapshot = {**resources["repositories"], "resources": resources}
    snapshot["credential"] = rt.settings.credential.kind.value
    try:
        with rt.sessions() as session:
            snapshot["sweeps"] = {
                slug: {sweep.job: sweep.as_dict() for sweep in found}
                for slug, found in workspace_sweeps(session, rt.settings).items()
            }
    except SQLAlchemyError:
        snapshot["sweeps"] = None  # the windows are Redis's: still worth answering
    return jsonify(_budget_schema.dump(snapshot))


class DeliverySchema(Schema):
    id = fields.Integer()
    request_uuid = fields.String()
    event_key = fields.String(data_key="event")
    repository_full_name = fields.String(data_key="repository", allow_none=True)
    status = fields.String()
    attempt = fields.Integer()
    tries = fields.Integer()
    received_at = fields.DateTime()
    processed_at = fields.DateTime(allow_none=True)
    processing_ms = fields.Integer(allow_none=True)
    error = fields.String(allow_none=True)


class DeliveryQuerySchema(PageQuerySchema):
    status = fields.String(
        load_default=None, validate=validate.OneOf([s.value for s in DeliveryStatus])
    )
    event = fields.String(load_default=None)
    repository = fields.String(load_default=None)


_delivery_schema = DeliverySchema(many=True)
_delivery_query_schema = DeliveryQuerySchema()


@api.get("/deliveries")
def deliveries() -> Any:
    """Recent webhook deliveries, newest first: what arrived and what failed."""
    query = load_query(_delivery_query_schema)
    stmt = select(WebhookDelivery).order_by(
        WebhookDelivery.received_at.desc(), WebhookDelivery.id.desc()
    )
    if query["status"]:
        stmt = stmt.where(WebhookDelivery.status == query["status"])
    if query["event"]:
        stmt = stmt.where(WebhookDelivery.event_key == query["event"])
    if query["repository"]:
        stmt = stmt.where(WebhookDelivery.repository_full_name == query["repository"])
    with runtime().sessions() as session:
        rows, next_offset = fetch_page(lambda s: session.scalars(s).all(), stmt, query)
    return jsonify(items=_delivery_schema.dump(rows), next_offset=next_offset)
