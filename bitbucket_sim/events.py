"""What happened, told once by the change functions and rendered per flavor as webhooks.

`repo_changes` and `activity_changes` call `sim.events.<what>(...)`; `CloudEvents` renders
Bitbucket Cloud payloads, `bitbucket_sim.datacenter.events.DcEvents` Data Center ones.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol

from bitbucket_sim.model import Account, CommitStatus, PullRequest, Repository
from bitbucket_sim.webhook_payloads import (
    RefChange,
    commit_status_payload,
    pullrequest_payload,
    push_payload,
    repository_event_payload,
)

if TYPE_CHECKING:
    from bitbucket_sim.runtime import Simulator

CLOUD_PR_EVENTS = {
    "create": "pullrequest:created",
    "update": "pullrequest:updated",
    "approve": "pullrequest:approved",
    "unapprove": "pullrequest:unapproved",
    "merge": "pullrequest:fulfilled",
    "decline": "pullrequest:rejected",
}


class EventSink(Protocol):
    """The events a live change can cause; each flavor decides what (if anything) it sends."""

    def pushed(
        self, repo: Repository, changes: list[RefChange], actor: Account, merge: bool = False
    ) -> None: ...

    def repository_created(self, repo: Repository, actor: Account) -> None: ...

    def repository_updated(
        self, repo: Repository, actor: Account, changes: dict[str, Any]
    ) -> None: ...

    def repository_deleted(self, repo: Repository, actor: Account) -> None: ...

    def pullrequest_changed(
        self,
        action: str,
        repo: Repository,
        pr: PullRequest,
        actor: Account,
        approval_on: datetime | None = None,
        previous: dict[str, Any] | None = None,
    ) -> None: ...

    def commit_status_changed(
        self, repo: Repository, status: CommitStatus, actor: Account, created: bool
    ) -> None: ...


class CloudEvents:
    """Bitbucket Cloud webhooks (`repo:push`, `repo:updated`, `pullrequest:*`, ...)."""

    def __init__(self, sim: Simulator) -> None:
        self.sim = sim

    def pushed(
        self, repo: Repository, changes: list[RefChange], actor: Account, merge: bool = False
    ) -> None:
        sim = self.sim
        payload = push_payload(sim.public_url, sim.workspace, repo, changes, actor)
        sim.emit("repo:push", payload, repo.uuid)

    def repository_created(self, repo: Repository, actor: Account) -> None:
        sim = self.sim
        payload = repository_event_payload(sim.public_url, sim.workspace, repo, actor)
        sim.emit("repo:created", payload, repo.uuid)

    def repository_updated(self, repo: Repository, actor: Account, changes: dict[str, Any]) -> None:
        sim = self.sim
        payload = repository_event_payload(sim.public_url, sim.workspace, repo, actor, changes)
        sim.emit("repo:updated", payload, repo.uuid)

    def repository_deleted(self, repo: Repository, actor: Account) -> None:
        sim = self.sim
        payload = repository_event_payload(sim.public_url, sim.workspace, repo, actor)
        sim.emit("repo:deleted", payload, repo.uuid)

    def pullrequest_changed(
        self,
        action: str,
        repo: Repository,
        pr: PullRequest,
        actor: Account,
        approval_on: datetime | None = None,
        previous: dict[str, Any] | None = None,
    ) -> None:
        sim = self.sim
        payload = pullrequest_payload(sim.public_url, sim.workspace, repo, pr, actor, approval_on)
        sim.emit(CLOUD_PR_EVENTS[action], payload, repo.uuid)

    def commit_status_changed(
        self, repo: Repository, status: CommitStatus, actor: Account, created: bool
    ) -> None:
        sim = self.sim
        event_key = "repo:commit_status_created" if created else "repo:commit_status_updated"
        payload = commit_status_payload(sim.public_url, sim.workspace, repo, status, actor)
        sim.emit(event_key, payload, repo.uuid)
