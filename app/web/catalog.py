"""Serving the catalog to Backstage from rows: `GET /catalog/entities.yaml` for a Backstage
`url` location, and `GET /catalog/entities` (JSON). Both carry an ETag over the content, so
Backstage's refresh loop costs a 304 here and nothing at Bitbucket. The entities include
people's account ids and emails: `BBSYNC_CATALOG_TOKENS` closes every route here."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import yaml
from flask import Blueprint, Response, request
from marshmallow import fields, validate
from sqlalchemy import Select, select

from app.models import CatalogEntity
from app.web import runtime
from app.web.auth import require_catalog_token
from app.web.paging import PageQuerySchema, fetch_page, load_query
from app.web.responses import conditional

catalog = Blueprint("catalog", __name__, url_prefix="/catalog")
# On the blueprint, so every route under /catalog (present and future) is behind the lock.
catalog.before_request(require_catalog_token)


class EntityQuerySchema(PageQuerySchema):
    kind = fields.String(load_default=None)
    workspace = fields.String(load_default=None)
    limit = fields.Integer(load_default=500, validate=validate.Range(min=1, max=5000))


_query_schema = EntityQuerySchema()


def _live_entities(kind: str | None = None, workspace: str | None = None) -> Select[Any]:
    stmt = select(CatalogEntity).where(CatalogEntity.deleted_at.is_(None))
    if kind:
        stmt = stmt.where(CatalogEntity.kind.ilike(kind))
    if workspace:
        stmt = stmt.where(CatalogEntity.workspace == workspace)
    return stmt.order_by(CatalogEntity.entity_ref)


def _etag(entities: list[CatalogEntity], extra: str = "") -> str:
    digest = hashlib.sha256(extra.encode())
    for entity in entities:
        digest.update(f"{entity.entity_ref}={entity.content_hash};".encode())
    return digest.hexdigest()[:32]


@catalog.get("/entities.yaml")
def entities_yaml() -> Response:
    with runtime().sessions() as session:
        entities = list(session.scalars(_live_entities()))
        etag = _etag(entities)
        if request.if_none_match.contains(etag):
            return conditional(b"", etag, "application/yaml")
        body = yaml.safe_dump_all((e.body for e in entities), sort_keys=False, allow_unicode=True)
    return conditional(body, etag, "application/yaml")


@catalog.get("/entities")
def entities_json() -> Any:
    query = load_query(_query_schema)
    with runtime().sessions() as session:
        stmt = _live_entities(query["kind"], query["workspace"])
        entities, next_offset = fetch_page(lambda s: session.scalars(s).all(), stmt, query)
        etag = _etag(entities, extra=request.query_string.decode())
        body = {
            "items": [e.body for e in entities],
            "offset": query["offset"],
            "limit": query["limit"],
            "next_offset": next_offset,
        }
    return conditional(json.dumps(body), etag, "application/json")
