"""Processing a stored webhook delivery: what changed, from the payload where it is complete.

Idempotent: a delivery processed twice, or two deliveries out of order, leave the same rows:
pull requests and statuses keep the newest `updated_on`; a repository's name, slug and
workspace are never set from a payload older than what is stored (its `changes.updated_on`
when it has one, else a later-received repository delivery already processed); a push never
moves the head back to an older commit. The API is called (with the
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

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.bitbucket.client import BitbucketClient, api_path
from app.bitbucket.errors import NotFound
from app.bitbucket.schemas import RepositorySchema
from app.bitbucket.webhooks import SCHEMAS
from app.config import Settings
from app.models import (
    DeliveryStatus,
    Repository,
    WebhookDelivery,
    utcnow,
)
from app.store import retire
from app.sync.activity import store_commit_status, store_pull_request
from app.sync.repositories import ensure_workspace, store_projects, store_repositories
from app.sync.retire import retire_repository_catalog

log = logging.getLogger(__name__)

# Deliveries that carry a repository's name, slug and workspace: their order matters.
REPOSITORY_STATE_EVENTS = ("repo:created", "repo:updated", "repo:transfer")

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
        self.delivery: WebhookDelivery | None = None

    def process(self, delivery: WebhookDelivery) -> str:
        """Apply one delivery; returns a one-line summary. The caller commits."""
        self.delivery = delivery
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
        if repo is not None and self._superseded(repo, changes):
            return f"{repo.full_name}: stale delivery ignored (a newer state is stored)"
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
            repo.project_id = store_projects(
                self.session, repo.workspace_id, {project["uuid"]: project}
            )[project["uuid"]]
        updated_on = _changed_on(changes)
        if updated_on is not None:
            repo.updated_on = updated_on
        repo.synced_at = utcnow()

    def _superseded(self, repo: Repository, changes: dict[str, Any]) -> bool:
        """True when what is stored for `repo` is newer than this delivery: its `updated_on`
        is later than the payload's, or a repository delivery received after this one has
        already been processed (deliveries can be processed out of order)."""
        updated_on = _changed_on(changes)
        if updated_on is not None and repo.updated_on is not None:
            return updated_on < repo.updated_on
        delivery = self.delivery
        if delivery is None or delivery.received_at is None:
            return False
        later = self.session.scalars(
            select(WebhookDelivery.id)
            .where(
                WebhookDelivery.repository_uuid == repo.uuid,
                WebhookDelivery.event_key.in_(REPOSITORY_STATE_EVENTS),
                WebhookDelivery.status == DeliveryStatus.PROCESSED.value,
                WebhookDelivery.received_at > delivery.received_at,
            )
            .limit(1)
        ).first()
        return later is not None

    def _transfer(self, event: dict[str, Any]) -> str:
        payload_repo = event["repository"]
        repo = self._known(payload_repo)
        fetched = self._fetch(payload_repo)
        if fetched is None:
            if repo is not None and self._superseded(repo, {}):
                # It came back (or moved on) since: a later delivery already said where.
                return f"{repo.full_name}: stale transfer ignored (a newer state is stored)"
            if repo is not None:
                self._retire(repo)
            return f"{payload_repo['full_name']}: left the configured workspaces; retired"
        self.schedule_refresh(fetched.id)
        return f"{fetched.full_name}: transferred; catalog refresh scheduled"

    def _deleted(self, event: dict[str, Any]) -> str:
        repo = self._known(event["repository"])
        if repo is None or repo.deleted_at is not None:
            return "nothing to do: repository unknown or already deleted"
        # The event key is not signed (only the body is), so a captured `repo:created` body
        # could be replayed as `repo:deleted`: removing is destructive, so ask Bitbucket first.
        if self._fetch(event["repository"]) is not None:
            return f"{repo.full_name}: ignored: Bitbucket still has this repository"
        self._retire(repo)
        return f"{repo.full_name}: deleted; its entities left the catalog"

    def _retire(self, repo: Repository) -> None:
        now = utcnow()
        retire(self.session, Repository, ids=[repo.id], at=now, synchronize=True)
        retire_repository_catalog(self.session, [repo.id], at=now)

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
            target = (new or {}).get("target") or {}
            if _older(target.get("date"), repo.last_push_at):
                continue  # a push delivered late: the stored head is newer
            if target.get("hash"):
                repo.head_commit = target["hash"]
            if target.get("date") and (
                repo.last_push_at is None or target["date"] > repo.last_push_at
            ):
                repo.last_push_at = target["date"]
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
        if not store_pull_request(self.session, repo, pr):
            return f"{repo.full_name}#{pr['id']}: stale delivery ignored"
        return f"{repo.full_name}#{pr['id']}: {pr['state']}"

    def _commit_status(self, event: dict[str, Any]) -> str:
        repo = self._repository(event["repository"])
        if repo is None:
            return "ignored: repository outside the configured workspaces"
        status = event["commit_status"]
        where = f"{repo.full_name}@{status['commit']['hash'][:12]} {status['key']}"
        if not store_commit_status(self.session, repo, status):
            return f"{where}: stale delivery ignored"
        return f"{where}: {status['state']}"


def _older(incoming: datetime | None, stored: datetime | None) -> bool:
    return incoming is not None and stored is not None and incoming < stored


def _changed_on(changes: dict[str, Any]) -> datetime | None:
    """`changes.updated_on.new` of a `repo:updated` payload, when present and readable."""
    value = (changes.get("updated_on") or {}) if isinstance(changes, dict) else {}
    new = value.get("new") if isinstance(value, dict) else None
    if not isinstance(new, str):
        return None
    try:
        parsed = datetime.fromisoformat(new.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else None
