"""Offset paging shared by the JSON list endpoints: `limit`, `offset`, `next_offset`."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from flask import abort, jsonify, request
from marshmallow import Schema, ValidationError, fields, validate
from sqlalchemy import Select

T = TypeVar("T")


MAX_OFFSET = 2**31 - 1


class PageQuerySchema(Schema):
    """Base of each list endpoint's query schema; subclasses add filters."""

    limit = fields.Integer(load_default=100, validate=validate.Range(min=1, max=1000))
    # Bounded so the database can hold it (an unbounded offset was a 500 on SQLite).
    offset = fields.Integer(load_default=0, validate=validate.Range(min=0, max=MAX_OFFSET))


def page_schema(item: type[Schema], name: str) -> type[Schema]:
    """The answer of a list endpoint: `{items: [item], next_offset}`."""
    return Schema.from_dict(
        {
            "items": fields.List(fields.Nested(item), required=True),
            "next_offset": fields.Integer(
                required=True,
                allow_none=True,
                metadata={"description": "The offset of the next page; null on the last one"},
            ),
        },
        name=name,
    )


def fetch_page(
    fetch: Callable[[Any], Sequence[T]],
    stmt: Select[*tuple[Any, ...]],
    query: dict[str, Any],
) -> tuple[list[T], int | None]:
    """One page of `stmt`, and the offset of the next page (None on the last one)."""
    limit, offset = query["limit"], query["offset"]
    rows = list(fetch(stmt.offset(offset).limit(limit + 1)))
    return rows[:limit], (offset + limit if len(rows) > limit else None)


def load_query(schema: Schema) -> dict[str, Any]:
    """The request's query parameters loaded by `schema` (list fields take repeated
    parameters, e.g. `?state=OPEN&state=MERGED`); a 400 naming the fields otherwise."""
    args: dict[str, Any] = request.args.to_dict()
    for name, field in schema.fields.items():
        key = field.data_key or name
        if isinstance(field, fields.List) and key in request.args:
            args[key] = request.args.getlist(key)
    try:
        loaded: dict[str, Any] = schema.load(args)
    except ValidationError as exc:
        response = jsonify(error="invalid_query", message="query parameters", fields=exc.messages)
        response.status_code = 400
        abort(response)
    return loaded
