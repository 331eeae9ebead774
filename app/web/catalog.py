"""Serving the catalog to Backstage from rows: `GET /catalog/entities.yaml` for a Backstage
`url` location, and `GET /catalog/entities` (JSON). Both carry an ETag over the content, so
Backstage's refresh loop costs a 304 here and nothing at Bitbucket. `GET /catalog/changes`
is the delta feed a Backstage entity provider polls (`app.catalog.feed`). The entities include
people's account ids and emails: `BBSYNC_CATALOG_TOKENS` closes every route here."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import yaml
from flask import Blueprint, Response, jsonify, request
from marshmallow import Schema, fields, validate
from sqlalchemy import Select, select

from app.catalog.entities import served_body
from app.catalog.feed import CURSOR_PATTERN, CursorGone, read_changes
from app.models import CatalogEntity
from app.web import runtime
from app.web.auth import require_catalog_token
from app.web.openapi import Reply, documented
from app.web.paging import PageQuerySchema, fetch_page, load_query
from app.web.responses import ErrorSchema, conditional

catalog = Blueprint("catalog", __name__, url_prefix="/catalog")
# On the blueprint, so every route under /catalog (present and future) is behind the lock.
catalog.before_request(require_catalog_token)


class EntityQuerySchema(PageQuerySchema):
    kind = fields.String(load_default=None)
    workspace = fields.String(load_default=None)
    limit = fields.Integer(load_default=500, validate=validate.Range(min=1, max=5000))


class EntityPageSchema(Schema):
    items = fields.List(
        fields.Dict(), required=True, metadata={"description": "Backstage entities"}
    )
    offset = fields.Integer(required=True)
    limit = fields.Integer(required=True)
    next_offset = fields.Integer(
        required=True,
        allow_none=True,
        metadata={"description": "The offset of the next page; null on the last one"},
    )


_query_schema = EntityQuerySchema()


def _live_entities(kind: str | None = None, workspace: str | None = None) -> Select[Any]:
    stmt = select(CatalogEntity).where(CatalogEntity.deleted_at.is_(None))
    if kind:
        stmt = stmt.where(CatalogEntity.kind.ilike(kind))
    if workspace:
        stmt = stmt.where(CatalogEntity.workspace == workspace)
    return stmt.order_by(CatalogEntity.entity_ref)


def _served(entity: CatalogEntity) -> dict[str, Any]:
    return served_body(entity.body, entity.source, entity.workspace)


def _etag(entities: list[CatalogEntity], extra: str = "") -> str:
    digest = hashlib.sha256(extra.encode())
    for entity in entities:
        digest.update(f"{entity.entity_ref}={entity.content_hash};".encode())
    return digest.hexdigest()[:32]


@catalog.get("/entities.yaml")
@documented(
    summary="Every entity, as a Backstage url location",
    auth="catalog",
    responses={
        200: Reply(
            {"type": "array", "items": {"type": "object"}},
            "A YAML stream of the entities, one document per entity",
            content_type="application/yaml",
        )
    },
    etag=True,
)
def entities_yaml() -> Response:
    """Every live entity as multi-document YAML, for a Backstage `url` location."""
    with runtime().sessions() as session:
        entities = list(session.scalars(_live_entities()))
        etag = _etag(entities)
        if request.if_none_match.contains(etag):
            return conditional(b"", etag, "application/yaml")
        body = yaml.safe_dump_all(
            (_served(e) for e in entities), sort_keys=False, allow_unicode=True
        )
    return conditional(body, etag, "application/yaml")


@catalog.get("/entities")
@documented(
    summary="Entities as JSON, a page at a time",
    auth="catalog",
    query=EntityQuerySchema,
    responses={200: EntityPageSchema},
    etag=True,
)
def entities_json() -> Any:
    """Live entities ordered by entity ref, filtered by kind or workspace."""
    query = load_query(_query_schema)
    with runtime().sessions() as session:
        stmt = _live_entities(query["kind"], query["workspace"])
        entities, next_offset = fetch_page(lambda s: session.scalars(s).all(), stmt, query)
        etag = _etag(entities, extra=request.query_string.decode())
        body = {
            "items": [_served(e) for e in entities],
            "offset": query["offset"],
            "limit": query["limit"],
            "next_offset": next_offset,
        }
    return conditional(json.dumps(EntityPageSchema().dump(body)), etag, "application/json")


class ChangeQuerySchema(Schema):
    since = fields.String(
        required=True,
        validate=validate.Regexp(CURSOR_PATTERN, error="not a cursor this feed gave out"),
    )
    limit = fields.Integer(load_default=500, validate=validate.Range(min=1, max=1000))


class ChangePageSchema(Schema):
    added = fields.List(fields.Dict(), required=True, metadata={"description": "Entities"})
    removed = fields.List(
        fields.String(), required=True, metadata={"description": "kind:namespace/name"}
    )
    cursor = fields.String(required=True, metadata={"description": "Opaque; pass as since"})
    more = fields.Boolean(required=True, metadata={"description": "Another page is ready"})


@catalog.get("/changes")
@documented(
    summary="Catalog change feed (delta mutations for a Backstage entity provider)",
    auth="catalog",
    query=ChangeQuerySchema,
    responses={
        200: ChangePageSchema,
        410: Reply(
            ErrorSchema,
            "The cursor is older than the change log keeps; start again at since=0",
        ),
    },
)
def changes() -> Any:
    """Entities written and removed after a cursor, in change order.

    since=0 pages through the live entities; then pass each answer's cursor back. Every change
    after the cursor comes in order of a change number that follows commit order. An entity
    changed several times comes in its latest state.
    """
    query = load_query(ChangeQuerySchema())
    with runtime().sessions() as session:
        try:
            page = read_changes(session, query["since"], query["limit"])
        except CursorGone as exc:
            response = jsonify(
                error="cursor_gone",
                message=f"since: the cursor is {exc}; start again with since=0",
            )
            response.status_code = 410
            return response
    response = jsonify(ChangePageSchema().dump(page))
    response.headers["Cache-Control"] = "no-store"
    return response
