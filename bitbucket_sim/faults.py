"""Injected faults: what real Bitbucket does now and then and a test must be able to ask for.

A fault matches API calls whose path contains `path_contains` (and, when given, whose
method is `method`) and applies to the next `times` of them: answer `status` (a 5xx outage)
instead of the real answer, rewrite the `next` link of a page to another origin
(`next_origin`), as a hostile or broken proxy might, or answer `delay_seconds` late (a slow
Bitbucket: the call is carried out at once, only its answer waits, so a client that gives
up early does not know it happened).
"""

from __future__ import annotations

import threading
from dataclasses import asdict, dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

MAX_DELAY_SECONDS = 120.0


@dataclass
class Fault:
    path_contains: str = ""
    times: int = 1
    status: int | None = None
    next_origin: str | None = None
    delay_seconds: float = 0.0
    method: str | None = None

    def __post_init__(self) -> None:
        if self.times < 1:
            raise ValueError("times must be at least 1")
        if self.status is None and self.next_origin is None and not self.delay_seconds:
            raise ValueError("a fault needs a status, a next_origin or a delay_seconds")
        if not 0 <= self.delay_seconds <= MAX_DELAY_SECONDS:
            raise ValueError(f"delay_seconds must be from 0 to {MAX_DELAY_SECONDS}")
        if self.method is not None:
            self.method = self.method.upper()
        if self.status is not None and not 400 <= self.status <= 599:
            raise ValueError("status must be an HTTP error status (400-599)")
        if self.next_origin is not None and not urlsplit(self.next_origin).netloc:
            raise ValueError("next_origin must look like http://host:port")


class FaultPlan:
    """The faults waiting to happen, consumed in the order they were added."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._faults: list[Fault] = []

    def add(self, fault: Fault) -> None:
        with self._lock:
            self._faults.append(fault)

    def clear(self) -> None:
        with self._lock:
            self._faults.clear()

    def pending(self) -> list[dict[str, Any]]:
        with self._lock:
            return [asdict(f) for f in self._faults]

    def take(self, path: str, method: str = "GET") -> Fault | None:
        """The first fault matching `path` and `method`, counting one use of it."""
        with self._lock:
            for fault in self._faults:
                if fault.path_contains in path and fault.method in (None, method.upper()):
                    fault.times -= 1
                    if fault.times == 0:
                        self._faults.remove(fault)
                    return fault
        return None


def move_next_link(body: dict[str, Any], origin: str) -> dict[str, Any]:
    """The page with its `next` link moved to `origin` (same path and query)."""
    link = body.get("next")
    if not isinstance(link, str):
        return body
    target = urlsplit(origin)
    parts = urlsplit(link)
    moved = urlunsplit((target.scheme, target.netloc, parts.path, parts.query, parts.fragment))
    return {**body, "next": moved}
