"""Counts of API calls per endpoint family, and of rate-limited answers."""

from __future__ import annotations

import re
import threading
from typing import Any

FAMILIES = (
    "repositories",
    "refs",
    "src",
    "search",
    "pullrequests",
    "pipelines",
    "statuses",
    "members",
    "permissions",
    "groups",
    "hooks",
    "workspaces",
    "oauth",
    "users",
    "other",
)

_REPO = r"^/2\.0/repositories/[^/]+/[^/]+"
_WS = r"^/2\.0/workspaces/[^/]+"
_RULES: tuple[tuple[re.Pattern[str], str], ...] = tuple(
    (re.compile(pattern), family)
    for pattern, family in (
        (_REPO + r"/refs(/|$)", "refs"),
        (_REPO + r"/src(/|$)", "src"),
        (_REPO + r"/pullrequests(/|$)", "pullrequests"),
        (_REPO + r"/pipelines(/|$)", "pipelines"),
        (_REPO + r"/commit/[^/]+/statuses(/|$)", "statuses"),
        (_REPO + r"/permissions-config(/|$)", "permissions"),
        (_REPO + r"/hooks(/|$)", "hooks"),
        (_REPO + r"/?$", "repositories"),
        (r"^/2\.0/repositories(/[^/]+)?/?$", "repositories"),
        (_WS + r"/search(/|$)", "search"),
        (_WS + r"/members(/|$)", "members"),
        (_WS + r"/permissions(/|$)", "permissions"),
        (_WS + r"/hooks(/|$)", "hooks"),
        (r"^/2\.0/workspaces(/|$)", "workspaces"),
        (r"^/2\.0/users?(/|$)", "users"),
        (r"^/1\.0/groups(/|$)", "groups"),
        (r"^/site/oauth2/", "oauth"),
        (r"^/(2|1)\.0(/|$)", "other"),
    )
)


def family_of(path: str) -> str | None:
    """The stats family of a request path, or None when it is not an API call."""
    for pattern, family in _RULES:
        if pattern.search(path):
            return family
    return None


class CallStats:
    """Thread-safe counters behind `GET /_sim/stats`."""

    def __init__(self, families: tuple[str, ...] = FAMILIES) -> None:
        self._families = families
        self._lock = threading.Lock()
        self._calls = dict.fromkeys(families, 0)
        self._rate_limited = 0

    def count(self, family: str, delta: int = 1) -> None:
        """Record (or, with a negative delta, take back) a call."""
        with self._lock:
            self._calls[family] = self._calls.get(family, 0) + delta

    def count_rate_limited(self) -> None:
        with self._lock:
            self._rate_limited += 1

    def snapshot(self) -> dict[str, Any]:
        """`{calls_total, calls: {family: n}, rate_limited}`."""
        with self._lock:
            calls = dict(self._calls)
            return {
                "calls_total": sum(calls.values()),
                "calls": calls,
                "rate_limited": self._rate_limited,
            }

    def reset(self) -> None:
        with self._lock:
            self._calls = dict.fromkeys(self._families, 0)
            self._rate_limited = 0
