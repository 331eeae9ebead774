"""Repository discovery: page through a workspace's repositories and mirror them.

One page (100 repositories) is one call and one batch of upserts; after each page the caller's
`commit` makes it durable and the run's cursor (the `next` link) is saved, so a run stopped by
the budget resumes from that page instead of starting over. After a complete walk,
repositories not seen are soft-deleted (mark and sweep), unless that would remove more than
`max_delete_share` of the workspace at once: then the sweep is refused and the run says why.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from marshmallow import ValidationError
from sqlalchemy import literal, select, update
from sqlalchemy.orm import Session

from app.bitbucket.client import BitbucketClient, api_path
from app.bitbucket.schemas import REPOSITORY_LIST_FIELDS, RepositorySchema
from app.models import Project, Repository, SyncRun, Workspace, utcnow
from app.store import upsert
from app.sync.retire import sweep
from app.sync.runs import recorded_run

log = logging.getLogger(__name__)

KIND = "repositories"
_repository_schema = RepositorySchema()


@dataclass
class SyncProgress:
    """Reported after each page: what a progress bar shows."""

    workspace: str
    seen: int
    total: int | None
    calls: int


class RepositorySync:
    """Mirrors the repositories (and their projects) of one workspace."""

    def __init__(
        self,
        client: BitbucketClient,
        session: Session,
        commit: Callable[[], None],
        *,
        max_delete_share: float = 0.5,
        on_progress: Callable[[SyncProgress], None] | None = None,
    ) -> None:
        self.client = client
        self.session = session
        self.commit = commit
        self.max_delete_share = max_delete_share
        self.on_progress = on_progress

    def run(self, workspace: str) -> SyncRun:
        """Sync one workspace, resuming a run paused for budget (or whose worker was lost).

        Raises `RetryLater` (run left `paused` with its cursor) when the budget runs out, and
        re-raises other Bitbucket errors after recording the run as failed.
        """
        self.counts: dict[str, Any] = {}
        fresh = SyncRun(kind=KIND, workspace=workspace)
        with recorded_run(
            self.session, self.commit, self.client, fresh, lambda: self.counts, resume=True
        ) as run:
            self.counts = {"seen": 0, "invalid": 0, "deleted": 0, **(run.counts or {})}
            start: str = (run.cursor or {}).get("next") or api_path("repositories", workspace)
            params = None if "://" in start else {"fields": REPOSITORY_LIST_FIELDS}
            workspace_row: Workspace | None = None
            for page in self.client.iter_pages(start, params):
                repos = self._valid(page.values, self.counts)
                if workspace_row is None:
                    workspace_row = self._workspace(workspace, repos)
                self._store(workspace_row, repos)
                self.counts["seen"] += len(repos)
                run.counts = dict(self.counts)
                run.cursor = {"next": page.next_url} if page.next_url else None
                self.commit()
                if self.on_progress:
                    self.on_progress(
                        SyncProgress(
                            workspace,
                            self.counts["seen"],
                            page.size,
                            (run.api_calls or 0) + self.client.ledger.total,
                        )
                    )
            if workspace_row is None:
                workspace_row = self._workspace(workspace, [])
            self.counts["deleted"], refused = self._sweep(workspace_row, run.started_at)
            run.cursor = None
        # Set after the run is recorded: a refused sweep is a warning on a succeeded run.
        if refused:
            run.error = refused
            self.commit()
        return run

    def _valid(self, values: list[dict[str, Any]], counts: dict[str, int]) -> list[dict[str, Any]]:
        repos = []
        for value in values:
            try:
                repos.append(_repository_schema.load(value))
            except ValidationError as exc:
                counts["invalid"] += 1
                log.warning(
                    "repository skipped: payload invalid",
                    extra={"uuid": value.get("uuid"), "errors": exc.messages},
                )
        return repos

    def _workspace(self, slug: str, repos: list[dict[str, Any]]) -> Workspace:
        ref = next((r["workspace"] for r in repos if r.get("workspace")), None)
        return ensure_workspace(self.session, self.client, slug, ref)

    def _store(self, workspace: Workspace, repos: list[dict[str, Any]]) -> None:
        store_repositories(self.session, workspace, repos)

    def _sweep(self, workspace: Workspace, since: datetime) -> tuple[int, str | None]:
        """Soft-delete live repositories this run did not see; refuse a mass deletion."""
        swept = sweep(
            self.session,
            Repository,
            live=(Repository.workspace_id == workspace.id, Repository.deleted_at.is_(None)),
            stale=(Repository.synced_at < since,),
            max_share=self.max_delete_share,
            refusal=(
                "sweep refused: {removing} of {total} repositories were not listed; "
                "more than {share} at once looks like a listing problem"
            ),
            event="repository sweep refused",
            workspace=workspace.slug,
        )
        return swept.removed, swept.refusal


def ensure_workspace(
    session: Session, client: BitbucketClient, slug: str, ref: dict[str, Any] | None = None
) -> Workspace:
    """The workspace row, created from `ref` (a payload's workspace) or one API call."""
    if ref is None:
        existing = session.scalars(select(Workspace).where(Workspace.slug == slug)).first()
        if existing is not None:
            return existing
        body = client.get_json(api_path("workspaces", slug))
        ref = {"uuid": body["uuid"], "slug": body.get("slug", slug), "name": body.get("name")}
    upsert(
        session,
        Workspace,
        [
            {
                "uuid": ref["uuid"],
                "slug": slug,
                "name": ref.get("name") or slug,
                "updated_at": utcnow(),
            }
        ],
        ["uuid"],
    )
    return session.scalars(select(Workspace).where(Workspace.uuid == ref["uuid"])).one()


def store_projects(
    session: Session, workspace_id: int, projects: dict[str, dict[str, Any]]
) -> dict[str, int]:
    """Upsert projects (`{uuid: {uuid, key, name}}`) on their UUID; returns `{uuid: id}`.

    A key belongs to one project at a time: when another project (a deleted one recreated
    under the same key, or one whose key moved) still holds it here, that stale row gives the
    key up first, so the unique (workspace, key) never refuses the current project.
    """
    if not projects:
        return {}
    now = utcnow()
    for project in projects.values():
        session.execute(
            update(Project)
            .where(
                Project.workspace_id == workspace_id,
                Project.key == project["key"],
                Project.uuid != project["uuid"],
            )
            # "~{uuid}" is unique and never a real key (keys are letters and digits).
            .values(key=literal("~") + Project.uuid, updated_at=now)
            .execution_options(synchronize_session=False)
        )
    upsert(
        session,
        Project,
        [
            {
                "uuid": p["uuid"],
                "workspace_id": workspace_id,
                "key": p["key"],
                "name": p.get("name") or p["key"],
                "updated_at": now,
            }
            for p in projects.values()
        ],
        ["uuid"],
    )
    rows = session.execute(select(Project.uuid, Project.id).where(Project.uuid.in_(list(projects))))
    return {uuid: id_ for uuid, id_ in rows}


def store_repositories(session: Session, workspace: Workspace, repos: list[dict[str, Any]]) -> None:
    """Upsert repositories (as loaded by `RepositorySchema`) and their projects, in batch."""
    projects = {r["project"]["uuid"]: r["project"] for r in repos if r.get("project")}
    now = utcnow()
    project_ids = store_projects(session, workspace.id, projects)
    upsert(
        session,
        Repository,
        [
            {
                "uuid": r["uuid"],
                "workspace_id": workspace.id,
                "project_id": project_ids.get(r["project"]["uuid"]) if r.get("project") else None,
                "slug": r["slug"],
                "full_name": r["full_name"],
                "name": r["name"] or r["slug"],
                "description": r["description"],
                "is_private": r["is_private"],
                "language": r["language"],
                "default_branch": r["mainbranch"]["name"] if r.get("mainbranch") else None,
                "created_on": r["created_on"],
                "updated_on": r["updated_on"],
                "synced_at": now,
                "deleted_at": None,
            }
            for r in repos
        ],
        ["uuid"],
    )
