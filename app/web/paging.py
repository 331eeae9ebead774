"""Offset paging shared by the JSON list endpoints: `limit`, `offset`, `next_offset`."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from marshmallow import Schema, fields, validate
from sqlalchemy import Select

T = TypeVar("T")


class PageQuerySchema(Schema):
    """Base of each list endpoint's query schema; subclasses add filters."""

    limit = fields.Integer(load_default=100, validate=validate.Range(min=1, max=1000))
    offset = fields.Integer(load_default=0, validate=validate.Range(min=0))


def fetch_page(
    fetch: Callable[[Any], Sequence[T]],
    stmt: Select[*tuple[Any, ...]],
    query: dict[str, Any],
) -> tuple[list[T], int | None]:
    """One page of `stmt`, and the offset of the next page (None on the last one)."""
    limit, offset = query["limit"], query["offset"]
    rows = list(fetch(stmt.offset(offset).limit(limit + 1)))
    return rows[:limit], (offset + limit if len(rows) > limit else None)
