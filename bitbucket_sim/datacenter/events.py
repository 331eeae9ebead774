"""Data Center webhooks: payloads carrying `eventKey`, `date`, `actor` and the entity.

Events with no Data Center webhook (repository created or deleted, build statuses) send
nothing.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from bitbucket_sim.datacenter.lookup import ZERO_HASH
from bitbucket_sim.datacenter.render import Json, project_json, repository_json, user_json
from bitbucket_sim.datacenter.render_activity import participant_status, pullrequest_json
from bitbucket_sim.delivery import encode_payload
from bitbucket_sim.model import (
    Account,
    CommitStatus,
    Hook,
    Participant,
    Project,
    PullRequest,
    Repository,
)
from bitbucket_sim.webhook_payloads import RefChange

if TYPE_CHECKING:
    from bitbucket_sim.datacenter.state import DcState
    from bitbucket_sim.runtime import Simulator

PR_EVENTS = {
    "create": "pr:opened",
    "approve": "pr:reviewer:approved",
    "unapprove": "pr:reviewer:unapproved",
    "merge": "pr:merged",
    "decline": "pr:declined",
    "delete": "pr:deleted",
}


def dc_date(moment: datetime) -> str:
    """Data Center's webhook `date`: `2017-09-19T09:45:32+1000` (no colon in the offset)."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S%z")


def _change_json(change: RefChange) -> Json:
    prefix, kind = ("refs/heads/", "BRANCH") if change.kind == "branch" else ("refs/tags/", "TAG")
    if change.old_hash is None:
        change_type = "ADD"
    elif change.new_hash is None:
        change_type = "DELETE"
    else:
        change_type = "UPDATE"
    return {
        "ref": {"id": prefix + change.name, "displayId": change.name, "type": kind},
        "refId": prefix + change.name,
        "fromHash": change.old_hash or ZERO_HASH,
        "toHash": change.new_hash or ZERO_HASH,
        "type": change_type,
    }


class DcEvents:
    """Implements `bitbucket_sim.events.EventSink` with Data Center payloads."""

    def __init__(self, sim: Simulator, dc: DcState) -> None:
        self.sim = sim
        self.dc = dc

    # -- helpers -------------------------------------------------------------------------

    def _user(self, account: Account) -> Json:
        return user_json(self.sim.public_url, self.dc, account)

    def _repo(self, repo: Repository) -> Json:
        return repository_json(self.sim.public_url, self.dc, self.sim.workspace, repo)

    def _pr(self, repo: Repository, pr: PullRequest) -> Json:
        return pullrequest_json(self.sim.public_url, self.dc, self.sim.workspace, repo, pr)

    def _send(
        self, key: str, actor: Account, body: Json, repo: Repository | None, project_key: str
    ) -> None:
        payload: Json = {
            "eventKey": key,
            "date": dc_date(self.sim.clock.now()),
            "actor": self._user(actor),
            **body,
        }
        self.sim.emit(key, payload, repo.uuid if repo else None, project_key)

    # -- EventSink -----------------------------------------------------------------------

    def pushed(
        self, repo: Repository, changes: list[RefChange], actor: Account, merge: bool = False
    ) -> None:
        """`repo:refs_changed`, then `pr:from_ref_updated` for open PRs from a moved branch."""
        if not merge or self.sim.config.merge_fires_refs_changed:
            body = {"repository": self._repo(repo), "changes": [_change_json(c) for c in changes]}
            self._send("repo:refs_changed", actor, body, repo, repo.project_key)
        for change in changes:
            if change.kind != "branch" or change.old_hash is None or change.new_hash is None:
                continue
            for pr in repo.pullrequests.values():
                if pr.state == "OPEN" and pr.source_branch == change.name:
                    body = {"pullRequest": self._pr(repo, pr), "previousFromHash": change.old_hash}
                    self._send("pr:from_ref_updated", actor, body, repo, repo.project_key)

    def repository_created(self, repo: Repository, actor: Account) -> None:
        return None

    def repository_updated(self, repo: Repository, actor: Account, changes: dict[str, Any]) -> None:
        """`repo:modified` with `old` and `new` when the name or slug changed."""
        if "name" not in changes and "slug" not in changes:
            return
        new = self._repo(repo)
        old = dict(new)
        old["name"] = changes.get("name", {}).get("old", repo.name)
        old_slug = changes.get("slug", {}).get("old", repo.slug)
        if old_slug != repo.slug:
            old = self._repo_with_slug(repo, old_slug, old["name"])
        self._send("repo:modified", actor, {"old": old, "new": new}, repo, repo.project_key)

    def _repo_with_slug(self, repo: Repository, slug: str, name: str) -> Json:
        current_slug, current_name = repo.slug, repo.name
        repo.slug, repo.name = slug, name
        try:
            return self._repo(repo)
        finally:
            repo.slug, repo.name = current_slug, current_name

    def repository_deleted(self, repo: Repository, actor: Account) -> None:
        return None

    def pullrequest_changed(
        self,
        action: str,
        repo: Repository,
        pr: PullRequest,
        actor: Account,
        approval_on: datetime | None = None,
        previous: dict[str, Any] | None = None,
    ) -> None:
        previous = previous or {}
        body: Json = {"pullRequest": self._pr(repo, pr)}
        project_key = repo.project_key
        if action == "update":
            self._pr_updated(repo, pr, actor, previous)
            return
        if action in ("approve", "unapprove", "needs_work"):
            participant = next(p for p in pr.participants if p.account_id == actor.account_id)
            approved, state = previous.get("participants", {}).get(actor.account_id, (False, None))
            before = Participant(actor.account_id, participant.role, approved, state, None)
            body["participant"] = {
                "user": self._user(actor),
                "role": participant.role,
                "approved": participant.approved,
                "status": participant_status(participant),
            }
            body["previousStatus"] = participant_status(before)
        key = self.sim.config.needs_work_event if action == "needs_work" else PR_EVENTS[action]
        self._send(key, actor, body, repo, project_key)

    def _pr_updated(
        self, repo: Repository, pr: PullRequest, actor: Account, previous: dict[str, Any]
    ) -> None:
        ws = self.sim.workspace
        changed = (
            previous.get("title") != pr.title
            or previous.get("description") != pr.description
            or previous.get("destination_branch") != pr.destination_branch
        )
        if changed:
            target = previous.get("destination_branch", pr.destination_branch)
            body: Json = {
                "pullRequest": self._pr(repo, pr),
                "previousTitle": previous.get("title", pr.title),
                "previousDescription": previous.get("description", pr.description),
                "previousTarget": {
                    "id": f"refs/heads/{target}",
                    "displayId": target,
                    "type": "BRANCH",
                    "latestCommit": repo.branches.get(target, pr.destination_commit),
                    "latestChangeset": repo.branches.get(target, pr.destination_commit),
                },
            }
            self._send("pr:modified", actor, body, repo, repo.project_key)
        before = list(previous.get("reviewer_ids", pr.reviewer_ids))
        after = pr.reviewer_ids
        added = [a for a in after if a not in before]
        removed = [a for a in before if a not in after]
        if added or removed:
            body = {
                "pullRequest": self._pr(repo, pr),
                "addedReviewers": [self._user(ws.accounts[a]) for a in added],
                "removedReviewers": [self._user(ws.accounts[a]) for a in removed],
            }
            self._send("pr:reviewer:updated", actor, body, repo, repo.project_key)

    def commit_status_changed(
        self, repo: Repository, status: CommitStatus, actor: Account, created: bool
    ) -> None:
        return None

    # -- Data Center only ------------------------------------------------------------------

    def project_modified(self, project: Project, old_name: str, actor: Account) -> None:
        base = self.sim.public_url
        new = project_json(base, self.dc, project)
        old = {**new, "name": old_name}
        key = self.sim.config.project_modified_event
        self._send(key, actor, {"old": old, "new": new}, None, project.key)

    def ping(self, hook: Hook) -> str:
        """`diagnostics:ping` to one webhook (the "Test connection" button)."""
        body = encode_payload({"test": True})
        return self.sim.dispatcher.enqueue(
            "diagnostics:ping", hook.uuid, hook.url, hook.secret, body
        )
