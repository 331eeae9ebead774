"""Processing a stored Bitbucket Data Center webhook delivery.

A Data Center delivery names its repository by the server's numeric id: the row is found by
the UUID the Data Center sync derives from it (`stable_uuid`), in the workspace `{host}/{KEY}`,
so a webhook and a sync never disagree on identity. What each event does:

- `repo:refs_changed` touching the default branch: the head moves to the pushed commit and
  the repository's catalog is refreshed (coalesced per repository, as Cloud's pushes are);
  other branches and tags change nothing in the catalog;
- `repo:modified` (a rename): name, slug and full name from the payload, then a refresh (the
  entities' annotations carry the slug); a move to another project asks for a walk of both;
- `repo:forked`: the fork is a new repository, found by a walk of its project;
- `pr:*`: the pull request stored as Cloud's pullrequest events store it (newest
  `updatedDate` wins), `pr:deleted` removes it; account ids are Data Center usernames;
- `project:modified`: the project's (and its workspace's) name;
- a repository bbsync does not know (created since the last sync): a catalog walk of its
  project is scheduled, when the project is one of `BITBUCKET_DC_PROJECTS` (or all are).

Idempotent: processing a delivery twice leaves the same rows, and schedules one more
(coalesced) refresh or walk at most.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from app.bitbucket.datacenter_webhooks import event_date, load_dc_event
from app.datacenter_settings import DataCenterSettings
from app.models import Project, PullRequest, Repository, WebhookDelivery, Workspace, utcnow
from app.sync.activity import store_pull_request
from app.sync.datacenter import stable_uuid, workspace_key

log = logging.getLogger(__name__)

ZERO_HASH = "0" * 40


class DataCenterEventProcessor:
    def __init__(
        self,
        session: Session,
        server: DataCenterSettings,
        schedule_refresh: Callable[[int], None],
        schedule_walk: Callable[[str], None],
    ) -> None:
        self.session = session
        self.server = server
        self.schedule_refresh = schedule_refresh
        self.schedule_walk = schedule_walk

    def process(self, delivery: WebhookDelivery) -> str:
        """Apply one delivery; returns a one-line summary. The caller commits."""
        key = delivery.event_key
        event = load_dc_event(key, delivery.body)
        if key == "repo:refs_changed":
            return self._refs_changed(event)
        if key == "repo:modified":
            return self._modified(event)
        if key == "repo:forked":
            return self._forked(event)
        if key == "project:modified":
            return self._project_modified(event)
        return self._pull_request(key, event)

    # -- identity ---------------------------------------------------------------------

    def _known(self, payload_repo: dict[str, Any]) -> Repository | None:
        uuid = stable_uuid(self.server, "repo", payload_repo["id"])
        return self.session.scalars(
            select(Repository).where(Repository.uuid == uuid, Repository.deleted_at.is_(None))
        ).first()

    def _synced(self, project_key: str) -> bool:
        keys = {k.upper() for k in self.server.projects}
        return not keys or project_key.upper() in keys

    def _unknown(self, payload_repo: dict[str, Any]) -> str:
        project_key = str(payload_repo["project"]["key"])
        name = f"{workspace_key(self.server, project_key)}/{payload_repo['slug']}"
        if not self._synced(project_key):
            return f"ignored: {name} is outside BITBUCKET_DC_PROJECTS"
        self.schedule_walk(project_key)
        return f"{name}: unknown repository; walk of project {project_key} scheduled"

    # -- repositories -----------------------------------------------------------------

    def _refs_changed(self, event: dict[str, Any]) -> str:
        payload_repo = event["repository"]
        repo = self._known(payload_repo)
        if repo is None:
            return self._unknown(payload_repo)
        branch = repo.default_branch
        if not branch:
            # Empty when last synced: only a walk learns its default branch.
            if any(c["refId"].startswith("refs/heads/") for c in event["changes"]):
                return self._unknown(payload_repo)
            return f"{repo.full_name}: tags changed; nothing to do"
        pushed_at = event_date(event.get("date"))
        late = (
            pushed_at is not None
            and repo.last_push_at is not None
            and pushed_at < _aware(repo.last_push_at)
        )
        touched = False
        for change in event["changes"]:
            if change["refId"] != f"refs/heads/{branch}":
                continue  # tags and other branches change nothing in the catalog
            touched = True
            if late or change["type"] == "DELETE" or change["toHash"] == ZERO_HASH:
                continue  # a delivery processed late: the stored head is newer
            repo.head_commit = change["toHash"]
            repo.last_push_at = pushed_at or utcnow()
        if not touched:
            return f"{repo.full_name}: refs changed off the default branch; nothing to do"
        self.schedule_refresh(repo.id)
        return f"{repo.full_name}: default branch moved; catalog refresh scheduled"

    def _modified(self, event: dict[str, Any]) -> str:
        old, new = event["old"], event["new"]
        repo = self._known(new)
        if repo is None:
            return self._unknown(new)
        old_key, new_key = str(old["project"]["key"]), str(new["project"]["key"])
        if old_key.upper() != new_key.upper():
            # Moved to another project: the walks store it where it is now and sweep it from
            # where it was (with the listing's guard).
            for key in (old_key, new_key):
                if self._synced(key):
                    self.schedule_walk(key)
            return f"{repo.full_name}: moved to project {new_key}; walks scheduled"
        workspace = workspace_key(self.server, new_key)
        repo.slug = new["slug"]
        repo.name = new.get("name") or new["slug"]
        repo.full_name = f"{workspace}/{new['slug']}"
        repo.synced_at = utcnow()
        self.schedule_refresh(repo.id)
        return f"{repo.full_name}: renamed from {old['slug']}; catalog refresh scheduled"

    def _forked(self, event: dict[str, Any]) -> str:
        fork = event["repository"]
        repo = self._known(fork)
        if repo is None:
            return self._unknown(fork)
        return f"{repo.full_name}: fork already known"

    def _project_modified(self, event: dict[str, Any]) -> str:
        new = event["new"]
        slug = workspace_key(self.server, str(new["key"]))
        ws = self.session.scalars(select(Workspace).where(Workspace.slug == slug)).first()
        if ws is None:
            if self._synced(str(new["key"])):
                self.schedule_walk(str(new["key"]))
                return f"{slug}: unknown project; walk scheduled"
            return f"ignored: {slug} is outside BITBUCKET_DC_PROJECTS"
        name = str(new.get("name") or new["key"])
        ws.name = name
        for project in self.session.scalars(select(Project).where(Project.workspace_id == ws.id)):
            if project.key.upper() == str(new["key"]).upper():
                project.name = name
        return f"{slug}: project renamed to {name}"

    # -- pull requests ----------------------------------------------------------------

    def _pull_request(self, key: str, event: dict[str, Any]) -> str:
        pr = event["pullRequest"]
        payload_repo = pr["toRef"]["repository"]
        repo = self._known(payload_repo)
        if repo is None:
            return self._unknown(payload_repo)
        where = f"{repo.full_name}#{pr['id']}"
        if key == "pr:deleted":
            self.session.execute(
                delete(PullRequest).where(
                    PullRequest.repository_id == repo.id, PullRequest.number == pr["id"]
                )
            )
            return f"{where}: deleted"
        shaped = cloud_shaped_pull_request(pr)
        if shaped is None:
            return f"{where}: {key} ({pr['state']}) recorded (no dates to store it by)"
        if not store_pull_request(self.session, repo, shaped):
            return f"{where}: stale delivery ignored"
        return f"{where}: {key}: {pr['state']}"


def _aware(moment: datetime) -> datetime:
    """SQLite gives back naive datetimes (stored as UTC)."""
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def _moment(millis: int | None) -> datetime | None:
    return None if millis is None else datetime.fromtimestamp(millis / 1000, UTC)


def _account(value: Any) -> dict[str, Any]:
    user = value.get("user", value) if isinstance(value, dict) else {}
    user = user if isinstance(user, dict) else {}
    # Data Center's stable user identity is its username (`name`, or `slug`).
    name = user.get("name") or user.get("slug")
    return {"account_id": name, "uuid": None, "display_name": user.get("displayName") or name}


def cloud_shaped_pull_request(pr: dict[str, Any]) -> dict[str, Any] | None:
    """A loaded Data Center pull request in the shape `store_pull_request` stores (Cloud's
    `PullRequestSchema`); None without its dates."""
    created, updated = _moment(pr.get("createdDate")), _moment(pr.get("updatedDate"))
    if created is None or updated is None:
        return None

    def endpoint(ref: dict[str, Any]) -> dict[str, Any]:
        commit = ref.get("latestCommit")
        return {
            "branch": {"name": ref.get("displayId") or ref["id"].removeprefix("refs/heads/")},
            "commit": {"hash": commit} if commit else None,
        }

    def participant(value: dict[str, Any]) -> dict[str, Any]:
        return {
            "user": _account(value),
            "role": value.get("role"),
            "approved": value.get("approved"),
            "state": str(value.get("status") or "").lower() or None,
        }

    reviewers = [r for r in pr.get("reviewers") or [] if isinstance(r, dict)]
    participants = [p for p in pr.get("participants") or [] if isinstance(p, dict)]
    return {
        "id": pr["id"],
        "title": pr.get("title") or "",
        "state": pr["state"],
        "author": _account(pr.get("author")),
        "source": endpoint(pr["fromRef"]),
        "destination": endpoint(pr["toRef"]),
        "merge_commit": None,
        "comment_count": None,
        "task_count": None,
        "created_on": created,
        "updated_on": updated,
        "reviewers": [_account(r) for r in reviewers],
        "participants": [participant(p) for p in [*reviewers, *participants]],
    }
