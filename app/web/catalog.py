"""Serving the catalog to Backstage from rows: `GET /catalog/entities.yaml` for a Backstage
`url` location, and `GET /catalog/entities` (JSON). Both carry an ETag over the content, so
Backstage's refresh loop costs a 304 here and nothing at Bitbucket. `GET /catalog/changes`
is the delta feed a Backstage entity provider polls (`app.catalog.feed`). The entities include
people's account ids and emails: `BBSYNC_CATALOG_TOKENS` closes every route here."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Iterator
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


def _live_entities(
    *columns: Any, kind: str | None = None, workspace: str | None = None
) -> Select[Any]:
    """The live entities (or only `columns` of them), filtered, in reference order."""
    stmt = select(*columns).where(CatalogEntity.deleted_at.is_(None))
    if kind:
        stmt = stmt.where(CatalogEntity.kind.ilike(kind))
    if workspace:
        stmt = stmt.where(CatalogEntity.workspace == workspace)
    return stmt.order_by(CatalogEntity.entity_ref)


# What an ETag is computed over: an entity's reference and content hash, never its body.
VERSION = (CatalogEntity.entity_ref, CatalogEntity.content_hash)


def _served(entity: CatalogEntity) -> dict[str, Any]:
    return served_body(entity.body, entity.source, entity.workspace)


def _etag(versions: Iterable[tuple[str, str]], extra: str = "") -> str:
    """Changes whenever a served entity is added, removed or changes content."""
    digest = hashlib.sha256(extra.encode())
    for ref, content_hash in versions:
        digest.update(f"{ref}={content_hash};".encode())
    return digest.hexdigest()[:32]


def _versions(entities: Iterable[CatalogEntity]) -> Iterator[tuple[str, str]]:
    return ((e.entity_ref, e.content_hash) for e in entities)


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
        # A client that has the catalog already costs references and hashes, no body.
        etag = _etag(session.execute(_live_entities(*VERSION)))
        if request.if_none_match.contains(etag):
            return conditional(b"", etag, "application/yaml")
        entities = list(session.scalars(_live_entities(CatalogEntity)))
        etag = _etag(_versions(entities))  # of what is served, should it have changed since
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
    filters = {"kind": query["kind"], "workspace": query["workspace"]}
    resource = request.query_string.decode()
    with runtime().sessions() as session:
        # The page's references and hashes first: a 304 never loads an entity body.
        versions, next_offset = fetch_page(
            lambda s: session.execute(s).all(), _live_entities(*VERSION, **filters), query
        )
        etag = _etag(versions, extra=_page_extra(resource, next_offset))
        if request.if_none_match.contains(etag):
            return conditional("", etag, "application/json")
        entities, next_offset = fetch_page(
            lambda s: session.scalars(s).all(), _live_entities(CatalogEntity, **filters), query
        )
        etag = _etag(_versions(entities), extra=_page_extra(resource, next_offset))
        body = {
            "items": [_served(e) for e in entities],
            "offset": query["offset"],
            "limit": query["limit"],
            "next_offset": next_offset,
        }
    return conditional(json.dumps(EntityPageSchema().dump(body)), etag, "application/json")


def _page_extra(resource: str, next_offset: int | None) -> str:
    """The query (another query is another resource) and, when there is one, the next page's
    offset, which the body carries too."""
    return resource if next_offset is None else f"{resource}#next={next_offset}"


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
