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
from app.web.openapi import Reply, documented
from app.web.paging import PageQuerySchema, fetch_page, load_query, page_schema
from app.web.responses import ErrorSchema

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


class DataCenterBudgetSchema(ResourceBudgetSchema):
    """The Data Center token bucket: `limit` is its size, refilled at `rate_per_second`."""

    host = fields.String()
    rate_per_second = fields.Float()


class SourcesBudgetSchema(BudgetSchema):
    """Cloud's windows (as `BudgetSchema`), and the Data Center bucket (null without one)."""

    datacenter = fields.Nested(DataCenterBudgetSchema, allow_none=True)


_budget_schema = SourcesBudgetSchema()


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


CatalogFilePageSchema = page_schema(CatalogFileSchema, "CatalogFilePage")
_file_schema = CatalogFileSchema(many=True)
_file_query_schema = CatalogFileQuerySchema()


@api.get("/catalog-files")
@documented(
    summary="Catalog descriptor files",
    auth="api",
    query=CatalogFileQuerySchema,
    responses={200: CatalogFilePageSchema},
)
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
@documented(
    summary="The shared Bitbucket rate budget",
    auth="api",
    responses={200: SourcesBudgetSchema, 503: Reply(ErrorSchema, "Redis did not answer")},
)
def budget() -> Any:
    """The API window of the credential's budget at the top level, and every resource's."""
    rt = runtime()
    try:
        resources = {b.resource.value: b.snapshot().as_dict() for b in rt.budgets}
        server = rt.settings.datacenter
        datacenter = (
            {
                **rt.datacenter_budget.snapshot().as_dict(),
                "host": server.host,
                "rate_per_second": server.rate_per_second,
            }
            if server is not None
            else None
        )
    except redis.RedisError as exc:
        return jsonify(error="redis_unavailable", message=type(exc).__name__), 503
    snapshot = {**resources["repositories"], "resources": resources, "datacenter": datacenter}
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


DeliveryPageSchema = page_schema(DeliverySchema, "DeliveryPage")
_delivery_schema = DeliverySchema(many=True)
_delivery_query_schema = DeliveryQuerySchema()


@api.get("/deliveries")
@documented(
    summary="Webhook deliveries",
    auth="api",
    query=DeliveryQuerySchema,
    responses={200: DeliveryPageSchema},
)
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
