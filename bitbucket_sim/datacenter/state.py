"""What the Data Center flavour keeps beside the shared model: numeric ids, buckets, hooks."""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING

from bitbucket_sim.datacenter.tokenbucket import TokenBuckets

if TYPE_CHECKING:
    from bitbucket_sim.datacenter.events import DcEvents
    from bitbucket_sim.runtime import Simulator

FAMILIES = (
    "projects",
    "repos",
    "refs",
    "raw",
    "files",
    "commits",
    "pullrequests",
    "builds",
    "users",
    "groups",
    "permissions",
    "webhooks",
    "other",
)


class DcIds:
    """Data Center's integer ids, handed out in order of first sight and never reused.

    Generated projects, repositories and users are numbered at start-up in model order, so
    the same seed gives the same ids.
    """

    def __init__(self) -> None:
        self._ids: dict[tuple[str, str], int] = {}
        self._next: dict[str, int] = {}

    def of(self, kind: str, key: str) -> int:
        found = self._ids.get((kind, key))
        if found is None:
            found = self._next.get(kind, 1)
            self._next[kind] = found + 1
            self._ids[(kind, key)] = found
        return found


def hierarchy_id(uuid: str) -> str:
    """A stable 20-hex-digit `hierarchyId` for a repository."""
    return hashlib.sha1(uuid.encode()).hexdigest()[:20]


class DcState:
    """Per-simulator Data Center state, created when `--flavor datacenter`."""

    families = FAMILIES

    def __init__(self, sim: Simulator) -> None:
        from bitbucket_sim.datacenter.events import DcEvents

        self.sim = sim
        self.ids = DcIds()
        ws = sim.workspace
        for key in ws.projects:
            self.ids.of("project", key)
        for repo in ws.repositories.values():
            self.ids.of("repo", repo.uuid)
        for account_id in ws.accounts:
            self.ids.of("user", account_id)
        self.buckets = TokenBuckets(sim.config.refill_per_second, sim.config.burst)
        self.events: DcEvents = DcEvents(sim, self)
        self._next_hook = 1

    def next_hook_id(self) -> int:
        hook_id = self._next_hook
        self._next_hook += 1
        return hook_id
