"""Webhook payload shapes, as captured from Bitbucket Cloud."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from bitbucket_sim.ids import iso
from bitbucket_sim.model import Account, Commit, CommitStatus, PullRequest, Repository, Workspace
from bitbucket_sim.render import (
    HTML,
    Json,
    account_json,
    commit_json,
    href,
    ref_json,
    repo_api,
    webhook_repository_json,
)
from bitbucket_sim.render_activity import pullrequest_json, status_json

MAX_PUSH_COMMITS = 5


@dataclass
class RefChange:
    """One entry of `push.changes`: a ref moved, created or deleted."""

    kind: str  # branch | tag
    name: str
    old_hash: str | None
    new_hash: str | None
    forced: bool = False
    commits: list[Commit] = field(default_factory=list)  # newest first, all of them

    @property
    def created(self) -> bool:
        return self.old_hash is None

    @property
    def closed(self) -> bool:
        return self.new_hash is None


def _change_links(base: str, ws: Workspace, repo: Repository, change: RefChange) -> Json:
    html = f"{HTML}/{ws.slug}/{repo.slug}"
    api = repo_api(base, ws, repo)
    new, old = change.new_hash, change.old_hash
    if new is not None and old is not None:
        return {
            "html": href(f"{html}/branches/compare/{new}..{old}"),
            "diff": href(f"{api}/diff/{new}..{old}"),
            "commits": href(f"{api}/commits?include={new}&exclude={old}"),
        }
    sha = new or old
    return {"html": href(f"{html}/commits/{sha}"), "commits": href(f"{api}/commits/{sha}")}


def _change_json(base: str, ws: Workspace, repo: Repository, change: RefChange) -> Json:
    new = old = None
    if change.new_hash is not None:
        new = ref_json(base, ws, repo, change.name, change.new_hash, change.kind)
        if change.kind == "tag":
            new["tagger"] = {}
    if change.old_hash is not None:
        old = ref_json(base, ws, repo, change.name, change.old_hash, change.kind)
    doc: Json = {
        "new": new,
        "old": old,
        "created": change.created,
        "closed": change.closed,
        "forced": change.forced,
        "truncated": len(change.commits) > MAX_PUSH_COMMITS,
        "links": _change_links(base, ws, repo, change),
    }
    if change.kind == "branch":
        doc["commits"] = [
            commit_json(base, ws, repo, commit) for commit in change.commits[:MAX_PUSH_COMMITS]
        ]
    return doc


def push_payload(
    base: str, ws: Workspace, repo: Repository, changes: list[RefChange], actor: Account
) -> Json:
    """`repo:push`."""
    return {
        "push": {"changes": [_change_json(base, ws, repo, change) for change in changes]},
        "repository": webhook_repository_json(base, ws, repo),
        "actor": account_json(base, actor),
    }


def repository_event_payload(
    base: str,
    ws: Workspace,
    repo: Repository,
    actor: Account,
    changes: dict[str, Any] | None = None,
) -> Json:
    """`repo:created`, `repo:deleted` and (with `changes`) `repo:updated`."""
    payload: Json = {
        "repository": webhook_repository_json(base, ws, repo),
        "actor": account_json(base, actor),
    }
    if changes is not None:
        payload["changes"] = changes
    return payload


def pullrequest_payload(
    base: str,
    ws: Workspace,
    repo: Repository,
    pr: PullRequest,
    actor: Account,
    approval_on: datetime | None = None,
) -> Json:
    """`pullrequest:*`; approvals carry `approval: {date, user}`."""
    payload: Json = {
        "pullrequest": pullrequest_json(base, ws, repo, pr, detailed=True),
        "actor": account_json(base, actor),
        "repository": webhook_repository_json(base, ws, repo),
    }
    if approval_on is not None:
        payload["approval"] = {"date": iso(approval_on), "user": account_json(base, actor)}
    return payload


def commit_status_payload(
    base: str, ws: Workspace, repo: Repository, status: CommitStatus, actor: Account
) -> Json:
    """`repo:commit_status_created` / `repo:commit_status_updated`."""
    commit_status = status_json(base, ws, repo, status)
    commit_status["repository"] = webhook_repository_json(base, ws, repo)
    return {
        "commit_status": commit_status,
        "repository": webhook_repository_json(base, ws, repo),
        "actor": account_json(base, actor),
    }
