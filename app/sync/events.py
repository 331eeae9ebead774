"""Processing a stored webhook delivery: what changed, from the payload where it is complete.

Idempotent: a delivery processed twice, or two deliveries out of order, leave the same rows
(pull requests and statuses keep the newest `updated_on`). The API is called (with the
webhook reserve of the budget) only for what a payload lacks: a repository bbsync has not
seen, or a change the webhook repository object cannot describe (e.g. its main branch).
Catalog files are not read here: `schedule_refresh` coalesces a burst of pushes to one
repository into one read.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from app.bitbucket.client import BitbucketClient, api_path
from app.bitbucket.errors import NotFound
from app.bitbucket.schemas import RepositorySchema
from app.bitbucket.webhooks import SCHEMAS
from app.config import Settings
from app.models import (
    CatalogEntity,
    CatalogFile,
    CommitStatus,
    Project,
    PullRequest,
    Repository,
    WebhookDelivery,
    utcnow,
)
from app.store import upsert
from app.sync.repositories import ensure_workspace, store_repositories

log = logging.getLogger(__name__)

_repository_schema = RepositorySchema()


class EventProcessor:
    def __init__(
        self,
        client: BitbucketClient,
        session: Session,
        settings: Settings,
        schedule_refresh: Callable[[int], None],
    ) -> None:
        self.client = client
        self.session = session
        self.settings = settings
        self.schedule_refresh = schedule_refresh

    def process(self, delivery: WebhookDelivery) -> str:
        """Apply one delivery; returns a one-line summary. The caller commits."""
        event = SCHEMAS[delivery.event_key].load(delivery.body)
        family, _, action = delivery.event_key.partition(":")
        if delivery.event_key == "repo:push":
            return self._push(event)
        if family == "pullrequest":
            return self._pull_request(event)
        if action.startswith("commit_status_"):
            return self._commit_status(event)
        handler = {
            "created": self._created,
            "updated": self._updated,
            "transfer": self._transfer,
            "deleted": self._deleted,
        }[action]
        return handler(event)

    # -- repositories -----------------------------------------------------------------

    def _known(self, payload_repo: dict[str, Any]) -> Repository | None:
        return self.session.scalars(
            select(Repository).where(Repository.uuid == payload_repo["uuid"])
        ).first()

    def _workspace_of(self, payload_repo: dict[str, Any]) -> str:
        return str(payload_repo["full_name"].split("/", 1)[0])

    def _fetch(self, payload_repo: dict[str, Any]) -> Repository | None:
        """The repository as the API describes it now, stored; None when it is gone or
        outside the configured workspaces."""
        workspace = self._workspace_of(payload_repo)
        if workspace not in self.settings.workspaces:
            return None
        try:
            body = self.client.get_json(api_path("repositories", workspace, payload_repo["uuid"]))
        except NotFound:
            return None
        data = _repository_schema.load(body)
        ws = ensure_workspace(self.session, self.client, workspace, data.get("workspace"))
        store_repositories(self.session, ws, [data])
        return self.session.scalars(select(Repository).where(Repository.uuid == data["uuid"])).one()

    def _repository(self, payload_repo: dict[str, Any]) -> Repository | None:
        return self._known(payload_repo) or self._fetch(payload_repo)

    def _created(self, event: dict[str, Any]) -> str:
        repo = self._fetch(event["repository"])
        if repo is None:
            return "ignored: repository outside the configured workspaces or already gone"
        self.schedule_refresh(repo.id)
        return f"{repo.full_name}: stored; catalog refresh scheduled"

    def _updated(self, event: dict[str, Any]) -> str:
        payload_repo = event["repository"]
        changes: dict[str, Any] = event.get("changes") or {}
        repo = self._known(payload_repo)
        complete = {
            "name",
            "full_name",
            "slug",
            "description",
            "is_private",
            "updated_on",
            "website",
            "links",
            "project",
        }
        if repo is None or set(changes) - complete:
            # A change the webhook's repository object cannot show (main branch, language…).
            repo = self._fetch(payload_repo)
            if repo is None:
                return "ignored: repository not available"
        else:
            self._apply_payload(repo, payload_repo, changes)
        self.schedule_refresh(repo.id)
        return f"{repo.full_name}: updated ({', '.join(sorted(changes)) or 'no field named'})"

    def _apply_payload(
        self, repo: Repository, payload_repo: dict[str, Any], changes: dict[str, Any]
    ) -> None:
        repo.full_name = payload_repo["full_name"]
        repo.slug = payload_repo["full_name"].split("/", 1)[1]
        repo.name = payload_repo.get("name") or repo.slug
        if payload_repo.get("is_private") is not None:
            repo.is_private = bool(payload_repo["is_private"])
        description = changes.get("description")
        if isinstance(description, dict) and "new" in description:
            repo.description = str(description.get("new") or "")
        project = payload_repo.get("project")
        if project:
            upsert(
                self.session,
                Project,
                [
                    {
                        "uuid": project["uuid"],
                        "workspace_id": repo.workspace_id,
                        "key": project["key"],
                        "name": project.get("name") or project["key"],
                    }
                ],
                ["uuid"],
            )
            repo.project_id = self.session.scalars(
                select(Project.id).where(Project.uuid == project["uuid"])
            ).one()
        repo.synced_at = utcnow()

    def _transfer(self, event: dict[str, Any]) -> str:
        payload_repo = event["repository"]
        repo = self._known(payload_repo)
        fetched = self._fetch(payload_repo)
        if fetched is None:
            if repo is not None:
                self._retire(repo)
            return f"{payload_repo['full_name']}: left the configured workspaces; retired"
        self.schedule_refresh(fetched.id)
        return f"{fetched.full_name}: transferred; catalog refresh scheduled"

    def _deleted(self, event: dict[str, Any]) -> str:
        repo = self._known(event["repository"])
        if repo is None or repo.deleted_at is not None:
            return "nothing to do: repository unknown or already deleted"
        self._retire(repo)
        return f"{repo.full_name}: deleted; its entities left the catalog"

    def _retire(self, repo: Repository) -> None:
        now = utcnow()
        repo.deleted_at = now
        for model in (CatalogEntity, CatalogFile):
            self.session.execute(
                update(model)
                .where(model.repository_id == repo.id, model.deleted_at.is_(None))
                .values(deleted_at=now)
                .execution_options(synchronize_session=False)
            )

    # -- pushes -----------------------------------------------------------------------

    def _push(self, event: dict[str, Any]) -> str:
        repo = self._repository(event["repository"])
        if repo is None:
            return "ignored: repository outside the configured workspaces"
        touched = False
        for change in event["push"]["changes"]:
            new, old = change.get("new"), change.get("old")
            ref = new or old
            if ref is None or ref["type"] != "branch" or ref["name"] != repo.default_branch:
                continue  # tags and other branches change nothing in the catalog
            touched = True
            if new is not None and (new.get("target") or {}).get("hash"):
                repo.head_commit = new["target"]["hash"]
            # Forced and truncated pushes name no files either way: the refresh re-reads the
            # catalog paths at the branch, which is right whatever the commits were.
        if not touched:
            return f"{repo.full_name}: push to another branch or a tag; nothing to do"
        self.schedule_refresh(repo.id)
        return f"{repo.full_name}: default branch moved; catalog refresh scheduled"

    # -- pull requests and build statuses ---------------------------------------------

    def _pull_request(self, event: dict[str, Any]) -> str:
        repo = self._repository(event["repository"])
        if repo is None:
            return "ignored: repository outside the configured workspaces"
        pr = event["pullrequest"]
        existing = self.session.scalars(
            select(PullRequest).where(
                PullRequest.repository_id == repo.id, PullRequest.number == pr["id"]
            )
        ).first()
        if existing is not None and _older(pr["updated_on"], existing.updated_on):
            return f"{repo.full_name}#{pr['id']}: stale delivery ignored"
        author = pr.get("author") or {}
        source, destination = pr.get("source") or {}, pr.get("destination") or {}
        row = existing or PullRequest(repository_id=repo.id, number=pr["id"])
        row.title = pr.get("title") or ""
        row.state = pr["state"]
        row.author_account_id = author.get("account_id")
        row.author_display_name = author.get("display_name")
        row.source_branch = (source.get("branch") or {}).get("name")
        row.destination_branch = (destination.get("branch") or {}).get("name")
        row.source_commit = (source.get("commit") or {}).get("hash")
        row.destination_commit = (destination.get("commit") or {}).get("hash")
        row.merge_commit = (pr.get("merge_commit") or {}).get("hash")
        row.comment_count = pr.get("comment_count")
        row.task_count = pr.get("task_count")
        if pr.get("reviewers") is not None or pr.get("participants") is not None:
            row.reviewers = {
                "reviewers": [_account(r) for r in pr.get("reviewers") or []],
                "participants": [_participant(p) for p in pr.get("participants") or []],
            }
        row.created_on = pr["created_on"]
        row.updated_on = pr["updated_on"]
        row.closed_on = pr["updated_on"] if pr["state"] != "OPEN" else None
        self.session.add(row)
        return f"{repo.full_name}#{pr['id']}: {pr['state']}"

    def _commit_status(self, event: dict[str, Any]) -> str:
        repo = self._repository(event["repository"])
        if repo is None:
            return "ignored: repository outside the configured workspaces"
        status = event["commit_status"]
        commit = status["commit"]["hash"]
        existing = self.session.scalars(
            select(CommitStatus).where(
                CommitStatus.repository_id == repo.id,
                CommitStatus.commit_hash == commit,
                CommitStatus.key == status["key"],
            )
        ).first()
        if existing is not None and _older(status.get("updated_on"), existing.updated_on):
            return f"{repo.full_name}@{commit[:12]} {status['key']}: stale delivery ignored"
        row = existing or CommitStatus(repository_id=repo.id, commit_hash=commit, key=status["key"])
        row.state = status["state"]
        row.name = status.get("name")
        row.description = status.get("description")
        row.refname = status.get("refname")
        row.url = status.get("url")  # the CI system's page: stored, never fetched
        row.created_on = status.get("created_on")
        row.updated_on = status.get("updated_on")
        self.session.add(row)
        return f"{repo.full_name}@{commit[:12]} {status['key']}: {status['state']}"


def _older(incoming: datetime | None, stored: datetime | None) -> bool:
    return incoming is not None and stored is not None and incoming < stored


def _account(value: dict[str, Any]) -> dict[str, Any]:
    return {k: value.get(k) for k in ("account_id", "uuid", "display_name", "nickname")}


def _participant(value: dict[str, Any]) -> dict[str, Any]:
    user = value.get("user") or {}
    return {
        **_account(user),
        "role": value.get("role"),
        "approved": value.get("approved"),
        "state": value.get("state"),
    }
