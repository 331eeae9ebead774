"""Counting Bitbucket calls: per run (in memory, for the sync run row) and for every process
together (in Redis, for `/metrics` and the status page)."""

from __future__ import annotations

import logging
import time
from collections import Counter
from typing import cast

import redis

from app.bitbucket.budget import KEY_PREFIX

log = logging.getLogger(__name__)

TOTALS_KEY = f"{KEY_PREFIX}:calls"
MINUTE_KEY = f"{KEY_PREFIX}:calls-minute"
MINUTES_KEPT = 120


def endpoint_family(path: str) -> str:
    """The family of an API path relative to the API base, e.g. `repositories/ws/r/src/…`."""
    parts = [p for p in path.split("?", 1)[0].strip("/").split("/") if p]
    if not parts:
        return "other"
    head = parts[0]
    if head == "repositories":
        rest = parts[3:] if len(parts) > 3 else []
        if not rest:
            return "repositories"
        section = rest[0]
        if section == "commit" and len(rest) > 2 and rest[2] == "statuses":
            return "statuses"
        return {
            "src": "src",
            "refs": "refs",
            "pullrequests": "pullrequests",
            "pipelines": "pipelines",
            "pipelines_config": "pipelines",
            "hooks": "hooks",
            "permissions-config": "permissions",
        }.get(section, "repositories")
    if head == "workspaces":
        section = parts[2] if len(parts) > 2 else ""
        return {
            "members": "members",
            "search": "search",
            "permissions": "permissions",
            "hooks": "hooks",
        }.get(section, "workspaces")
    if head == "groups":
        return "groups"
    if head in ("user", "users"):
        return "user"
    # Data Center (`/rest/api/latest/…`): Cloud has no top-level `projects`, `repos`, `admin`.
    if head == "projects":
        return _datacenter_project_family(parts)
    if head == "repos":
        return "repositories"
    if head == "admin":
        return "groups" if parts[1:2] == ["groups"] else "user"
    return "other"


def _datacenter_project_family(parts: list[str]) -> str:
    """Families of `projects/{KEY}/…` paths, named as their Cloud counterparts."""
    if len(parts) < 3:
        return "projects"
    if parts[2] != "repos":
        return {"permissions": "permissions", "webhooks": "hooks"}.get(parts[2], "projects")
    if len(parts) < 5:
        return "repositories"
    section = parts[4]
    if section == "commits":
        return "statuses" if parts[6:7] == ["builds"] else "commits"
    return {
        "raw": "src",
        "files": "src",
        "branches": "refs",
        "tags": "refs",
        "default-branch": "refs",
        "pull-requests": "pullrequests",
        "permissions": "permissions",
        "webhooks": "hooks",
    }.get(section, "repositories")


class CallLedger:
    """Calls made by one client (one run), mirrored into shared Redis counters."""

    def __init__(self, redis_client: redis.Redis | None = None) -> None:
        self.by_family: Counter[str] = Counter()
        self.rate_limited = 0
        # A plain int, so a run's heartbeat thread can read it while calls are counted.
        self.total = 0
        self._redis = redis_client

    def record(self, family: str, status: int | None) -> None:
        """One call that reached (or tried to reach) Bitbucket; `status` None = no answer."""
        self.by_family[family] += 1
        self.total += 1
        if status == 429:
            self.rate_limited += 1
        if self._redis is None:
            return
        minute = int(time.time() // 60)
        try:
            pipe = self._redis.pipeline(transaction=False)
            pipe.hincrby(TOTALS_KEY, f"{family}|{status or 'error'}", 1)
            pipe.hincrby(f"{MINUTE_KEY}/{minute}", family, 1)
            if status == 429:
                pipe.hincrby(f"{MINUTE_KEY}/{minute}", "429", 1)
            pipe.expire(f"{MINUTE_KEY}/{minute}", MINUTES_KEPT * 60)
            pipe.execute()
        except redis.RedisError:
            # Metrics must never fail a sync; the budget (same Redis) fails loudly on its own.
            log.warning("call metrics not recorded", exc_info=True)


def shared_call_totals(redis_client: redis.Redis) -> dict[tuple[str, str], int]:
    """`{(family, status): calls}` summed over every process since Redis started."""
    raw = cast(dict[bytes, bytes], redis_client.hgetall(TOTALS_KEY))
    totals: dict[tuple[str, str], int] = {}
    for field, value in raw.items():
        name = field.decode() if isinstance(field, bytes) else str(field)
        family, _, status = name.partition("|")
        totals[(family, status)] = int(value)
    return totals
