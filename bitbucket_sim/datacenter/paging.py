"""Data Center paging: `?start=&limit=`, answered as `{size, limit, isLastPage, values, start,
nextPageStart}`."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from flask import Response, request

from bitbucket_sim.api.context import current_sim, json_response
from bitbucket_sim.datacenter.errors import dc_bad_request
from bitbucket_sim.datacenter.state import DcState

T = TypeVar("T")
DEFAULT_LIMIT = 25
MAX_LIMIT = 1000  # Atlassian KB: 25 by default, "can be increased to 1000"


def dc_state() -> DcState:
    dc = current_sim().dc
    assert dc is not None, "the Data Center routes run only with --flavor datacenter"
    return dc


def _integer(name: str, default: int) -> int:
    raw = request.args.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError as exc:
        raise dc_bad_request(f"{name} must be an integer, got {raw!r}", name) from exc


def page_bounds() -> tuple[int, int]:
    """`(start, limit)`; a limit above the server's maximum is served at the maximum."""
    start = _integer("start", 0)
    limit = _integer("limit", DEFAULT_LIMIT)
    if start < 0:
        raise dc_bad_request("start must be zero or more", "start")
    if limit < 1:
        raise dc_bad_request("limit must be at least 1", "limit")
    return start, min(limit, MAX_LIMIT)


def page_json(items: Sequence[T], render: Callable[[T], Any]) -> dict[str, Any]:
    """One page of `items`; `nextPageStart` only when more follow, never past the end."""
    start, limit = page_bounds()
    chunk = items[start : start + limit]
    last = start + len(chunk) >= len(items)
    doc: dict[str, Any] = {
        "size": len(chunk),
        "limit": limit,
        "isLastPage": last,
        "values": [render(item) for item in chunk],
        "start": start,
    }
    if not last:
        doc["nextPageStart"] = start + len(chunk)
    return doc


def paged(items: Sequence[T], render: Callable[[T], Any]) -> Response:
    return json_response(page_json(items, render))


def name_filter(param: str = "filter") -> str:
    """A case-insensitive substring filter from the query string ("" = none)."""
    return (request.args.get(param) or "").strip().lower()
