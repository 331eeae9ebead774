"""Paginated answers: `{pagelen, size, page, values, next, previous}` with opaque cursors.

`next`/`previous` are absolute URLs on this server that carry the request's own parameters
plus `after=<cursor>`; clients must follow them, never build page URLs. `page=N` is also
accepted, as on Bitbucket. `q=`, `sort=` and `fields=` apply to every list.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import urlencode

from flask import Response, request

from bitbucket_sim.api.context import current_sim, json_response
from bitbucket_sim.errors import SimError, bad_request
from bitbucket_sim.fields import FieldSpec, apply_fields
from bitbucket_sim.query import QueryError, compile_query, sort_documents

T = TypeVar("T")
DEFAULT_PAGELEN = 10
MAX_PAGELEN = 100
CURSOR_PARAM = "after"


def encode_cursor(offset: int) -> str:
    raw = json.dumps({"o": offset}, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> int:
    """The offset inside a cursor; 400 when it was not made by this server."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        offset = json.loads(raw)["o"]
    except (binascii.Error, ValueError, KeyError, TypeError) as exc:
        raise bad_request("Invalid pagination cursor") from exc
    if not isinstance(offset, int) or offset < 0:
        raise bad_request("Invalid pagination cursor")
    return offset


def read_pagelen(max_pagelen: int, default: int = DEFAULT_PAGELEN) -> int:
    """`pagelen` from the query string, checked against the endpoint's cap."""
    raw = request.args.get("pagelen")
    if raw is None:
        return default
    try:
        pagelen = int(raw)
    except ValueError as exc:
        raise bad_request("Invalid pagelen", f"pagelen must be an integer, got {raw!r}") from exc
    if pagelen < 1:
        raise bad_request("Invalid pagelen", "pagelen must be at least 1")
    if pagelen > max_pagelen:
        if current_sim().config.pagelen_over_cap == "clamp":
            return max_pagelen
        raise bad_request("Invalid pagelen", f"pagelen must be at most {max_pagelen}")
    return pagelen


def read_offset(pagelen: int) -> int:
    cursor = request.args.get(CURSOR_PARAM)
    if cursor:
        return decode_cursor(cursor)
    raw_page = request.args.get("page")
    if raw_page is None:
        return 0
    try:
        page = int(raw_page)
    except ValueError as exc:
        raise bad_request("Invalid page", f"page must be an integer, got {raw_page!r}") from exc
    if page < 1:
        raise bad_request("Invalid page", "page must be at least 1")
    return (page - 1) * pagelen


def page_url(offset: int) -> str:
    """This request's URL with the cursor moved to `offset`."""
    params = [
        (key, value)
        for key, value in request.args.items(multi=True)
        if key not in (CURSOR_PARAM, "page")
    ]
    params.append((CURSOR_PARAM, encode_cursor(offset)))
    return f"{request.base_url}?{urlencode(params)}"


@dataclass(frozen=True)
class ListOptions:
    """How one endpoint pages: its cap, hidden fields, and Bitbucket quirks to reproduce."""

    max_pagelen: int = MAX_PAGELEN
    hidden: tuple[str, ...] = ()
    include_size: bool = True
    default_sort: str | None = None
    reachable: int | None = None  # results beyond this count are never served
    repeat_items: bool = False  # some pages start with the previous page's last item


def filter_and_sort(docs: list[dict[str, Any]], default_sort: str | None) -> list[dict[str, Any]]:
    """Apply `q=` and `sort=` from the request to rendered objects."""
    query = request.args.get("q")
    sort = request.args.get("sort") or default_sort
    try:
        if query and query.strip():
            predicate = compile_query(query, docs[0] if docs else None)
            docs = [doc for doc in docs if predicate(doc)]
        if sort:
            docs = sort_documents(docs, sort)
    except QueryError as exc:
        raise SimError(400, str(exc)) from exc
    return docs


def paginated(
    items: Sequence[T],
    render: Callable[[T], dict[str, Any]],
    options: ListOptions | None = None,
) -> Response:
    """The page of `items` this request asks for, as Bitbucket's envelope."""
    options = options or ListOptions()
    pagelen = read_pagelen(options.max_pagelen)
    offset = read_offset(pagelen)
    needs_all = bool(request.args.get("q") or request.args.get("sort") or options.default_sort)
    docs: list[dict[str, Any]] | None = None
    if needs_all:
        docs = filter_and_sort([render(item) for item in items], options.default_sort)
        total = len(docs)
    else:
        total = len(items)
    limit = total if options.reachable is None else min(total, options.reachable)
    start = offset
    if options.repeat_items and offset > 0 and (offset // pagelen) % 3 == 2:
        start = offset - 1
    end = min(start + pagelen, limit)
    if docs is not None:
        values = docs[start:end] if start < end else []
    else:
        values = [render(item) for item in items[start:end]] if start < end else []
    envelope: dict[str, Any] = {"pagelen": pagelen}
    if options.include_size:
        envelope["size"] = total
    envelope["values"] = values
    envelope["page"] = start // pagelen + 1
    if end < limit:
        envelope["next"] = page_url(end)
    if start > 0:
        envelope["previous"] = page_url(max(0, start - pagelen))
    return fielded(envelope, ("values." + path for path in options.hidden))


def fielded(doc: dict[str, Any], hidden: Iterable[str] = ()) -> Response:
    """`doc` trimmed by the request's `fields=` and sent as JSON."""
    spec = FieldSpec.parse(request.args.get("fields"))
    survive = current_sim().config.added_fields_survive
    return json_response(apply_fields(doc, spec, tuple(hidden), survive))
