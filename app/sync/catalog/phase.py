"""The catalog phase of a full sync: read catalog files only where something changed, and
keep `catalog_entities` true to them. What to read is decided in `changed`, files are fetched
in `files`, applied in `apply`; then `groups` and the guarded `sweep` run once per workspace.

Progress is kept as it is obtained, so that any budget above zero moves a sync forward: the
search results are committed in the run's cursor before any file is read, each batch of
repositories is committed with its "checked" marks, and a budget pause commits the
repositories read so far (a repository's files are all fetched before any of its rows are
written, so a pause never leaves one half-applied). The retry resumes the paused run: no
listing, no search, only the repositories not yet read.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.bitbucket.client import BitbucketClient
from app.bitbucket.errors import (
    BitbucketError,
    BitbucketRequestError,
    BitbucketUnavailable,
    RetryLater,
)
from app.catalog.entities import EntityBuilder, RepositoryView
from app.config import Settings
from app.models import CatalogFile, Project, Repository, SyncRun, Workspace, utcnow
from app.sync.catalog.apply import CatalogApply
from app.sync.catalog.changed import ChangedRepositories
from app.sync.catalog.files import CatalogFiles, FileUnavailable
from app.sync.catalog.groups import write_project_groups
from app.sync.catalog.sweep import sweep_deleted_repositories
from app.sync.entity_writer import EntityWriter, WriteOutcome
from app.sync.runs import has_resumable, recorded_run

log = logging.getLogger(__name__)

KIND = "catalog"
BATCH = 20
# Per-attempt progress kept on the run (how many repositories each attempt read), bounded.
MAX_ATTEMPTS_KEPT = 100
MAX_REPORTED_CONFLICTS = 50


@dataclass
class CatalogProgress:
    workspace: str
    checked: int
    total: int
    files_fetched: int
    calls: int


class CatalogSync:
    def __init__(
        self,
        client: BitbucketClient,
        session: Session,
        commit: Callable[[], None],
        settings: Settings,
        *,
        on_progress: Callable[[CatalogProgress], None] | None = None,
    ) -> None:
        self.client = client
        self.session = session
        self.commit = commit
        self.settings = settings
        self.builder = EntityBuilder(settings)
        self.on_progress = on_progress
        self.counts: dict[str, Any] = {}
        self._reset_counts()

    def run(self, workspace: str) -> SyncRun:
        """Read the catalog files that changed, resuming a paused (or lost) run."""
        ws = self.session.scalars(select(Workspace).where(Workspace.slug == workspace)).first()
        self._reset_counts()
        fresh = SyncRun(kind=KIND, workspace=workspace)
        with recorded_run(
            self.session, self.commit, self.client, fresh, lambda: self.counts, resume=True
        ) as run:
            self.counts.update(run.counts or {})
            if ws is None:
                raise BitbucketError(f"workspace {workspace} has not been listed yet")
            self._sync(ws, run)
        return run

    def resuming(self, workspace: str) -> bool:
        """Whether a paused (or lost) catalog run waits for this workspace: its listing is
        done, so a retry goes straight back to reading files."""
        return has_resumable(self.session, KIND, workspace)

    def _reset_counts(self) -> None:
        """Fresh counts, shared with the parts that fill them (and a fresh file reader)."""
        self.counts = {
            "candidates": 0,
            "checked": 0,
            "files_fetched": 0,
            "files_unchanged": 0,
            "files_missing": 0,
            "parse_errors": 0,
            "entities_written": 0,
            "entities_deleted": 0,
            "failures": 0,
            "conflicts": [],
            "discovery": "none",
            "files_unavailable": 0,
        }
        self.changes = ChangedRepositories(self.client, self.settings, self.counts)
        self.files = CatalogFiles(self.client, self.session, self.settings, self.counts)
        self.apply = CatalogApply(self.session, self.settings, self.builder, self.counts)

    def refresh_repository(self, repository_id: int) -> dict[str, Any]:
        """Read one repository's catalog files now, whatever its checked marks say (a push,
        a rename or a new repository named it). The caller commits."""
        self._reset_counts()
        repo = self.session.get(Repository, repository_id)
        if repo is None or repo.deleted_at is not None:
            return {"skipped": "repository unknown or deleted"}
        ws = self.session.get(Workspace, repo.workspace_id)
        assert ws is not None
        self.counts["candidates"] = 1
        self._refresh(ws, repo, None, repo.head_commit)
        if self.counts["files_unavailable"]:
            # A push names this repository: try it again later rather than give up.
            raise BitbucketUnavailable(f"catalog files of {repo.full_name} not served")
        if self.counts["failures"]:
            raise BitbucketError(f"catalog files of {repo.full_name} could not be read")
        return dict(self.counts)

    # -- the phases -------------------------------------------------------------------

    def _sync(self, ws: Workspace, run: SyncRun) -> None:
        repos = list(
            self.session.scalars(
                select(Repository)
                .where(Repository.workspace_id == ws.id, Repository.deleted_at.is_(None))
                .order_by(Repository.slug)
            )
        )
        cursor: dict[str, Any] = dict(run.cursor or {})
        heads = (
            self._heads(ws, repos, run, cursor) if self.settings.change_detection == "head" else {}
        )
        candidates = [r for r in repos if self.changes.changed(r, heads)]
        if "found" not in cursor:
            # First attempt: what to read is decided once and kept, so a retry reads on.
            self.counts["candidates"] = len(candidates)
            found = self.changes.discover(ws, candidates)
            cursor["found"] = (
                None if found is None else {slug: sorted(paths) for slug, paths in found.items()}
            )
            self._checkpoint(run, cursor)
        kept = cursor["found"]
        found = None if kept is None else {slug: set(paths) for slug, paths in kept.items()}
        checked_before = self.counts["checked"]
        try:
            for start in range(0, len(candidates), BATCH):
                for repo in candidates[start : start + BATCH]:
                    self._refresh(ws, repo, found, heads.get(repo.id))
                self._checkpoint(run, cursor)
                if self.on_progress:
                    self.on_progress(
                        CatalogProgress(
                            ws.slug,
                            self.counts["checked"],
                            self.counts["candidates"],
                            self.counts["files_fetched"],
                            (run.api_calls or 0) + self.client.ledger.total,
                        )
                    )
        except RetryLater:
            # Out of budget mid-batch: keep the repositories read so far, then pause.
            self._attempt_done(checked_before)
            self._checkpoint(run, cursor)
            raise
        self._attempt_done(checked_before)
        run.cursor = None
        self._project_groups(ws)
        self._sweep(ws)

    def _attempt_done(self, checked_before: int) -> None:
        attempts: list[int] = list(self.counts.get("checked_per_attempt") or [])
        attempts.append(self.counts["checked"] - checked_before)
        self.counts["checked_per_attempt"] = attempts[-MAX_ATTEMPTS_KEPT:]

    def _checkpoint(self, run: SyncRun, cursor: dict[str, Any]) -> None:
        run.counts = dict(self.counts)
        run.cursor = dict(cursor)
        run.heartbeat_at = utcnow()
        self.commit()

    def _heads(
        self, ws: Workspace, repos: list[Repository], run: SyncRun, cursor: dict[str, Any]
    ) -> dict[int, str | None]:
        """Default-branch heads, kept in the cursor as they come (see `changed`)."""
        known: dict[str, str | None] = dict(cursor.get("heads") or {})
        heads = self.changes.heads(
            ws, repos, known, lambda k: self._checkpoint(run, {**cursor, "heads": k})
        )
        cursor["heads"] = known
        return heads

    # -- one repository ---------------------------------------------------------------

    def _view(self, ws: Workspace, repo: Repository) -> RepositoryView:
        project = self.session.get(Project, repo.project_id) if repo.project_id else None
        return RepositoryView(
            workspace=ws.slug,
            slug=repo.slug,
            name=repo.name,
            description=repo.description,
            language=repo.language,
            default_branch=repo.default_branch or "main",
            project_key=project.key if project else None,
            project_name=project.name if project else None,
        )

    def _refresh(
        self,
        ws: Workspace,
        repo: Repository,
        found: dict[str, set[str]] | None,
        head: str | None,
    ) -> None:
        known = {
            f.path: f
            for f in self.session.scalars(
                select(CatalogFile).where(CatalogFile.repository_id == repo.id)
            )
        }
        view = self._view(ws, repo)
        writer = EntityWriter(self.session, ws.slug)
        outcome = WriteOutcome()
        has_descriptor = False
        try:
            # Every file first, then the writes: a pause (`RetryLater`) between two files
            # leaves nothing of this repository half-applied in the session.
            fetched = [
                (path, self.files.fetch(ws, repo, view, path, known.get(path)))
                for path in sorted(self.files.paths(ws, repo, known, found))
            ]
        except (BitbucketRequestError, FileUnavailable) as exc:
            # This repository stays unchecked and is tried again next sync; no sweep this run.
            self.counts["failures"] += 1
            log.warning(
                "catalog files unreadable", extra={"repository": repo.full_name, "error": str(exc)}
            )
            return
        for path, raw in fetched:
            has_descriptor |= self.apply.file(
                repo, view, path, raw, known.get(path), writer, outcome
            )
        # Never read before and no file on record: nothing of this repository's can be stale,
        # so a cold sync skips the retire statements (two per repository).
        first_read = not known and repo.catalog_checked_on is None and not repo.catalog_checked_head
        self.apply.generated(
            repo,
            view,
            has_descriptor=has_descriptor,
            first_read=first_read,
            writer=writer,
            outcome=outcome,
        )
        self.counts["entities_written"] += outcome.written
        self._report(outcome.conflicts)
        repo.catalog_checked_on = repo.updated_on
        repo.catalog_checked_head = head or repo.head_commit
        self.counts["checked"] += 1

    def _report(self, conflicts: list[str]) -> None:
        reported: list[str] = self.counts["conflicts"]
        for conflict in conflicts:
            if len(reported) < MAX_REPORTED_CONFLICTS and conflict not in reported:
                reported.append(conflict)

    # -- workspace-wide ---------------------------------------------------------------

    def _project_groups(self, ws: Workspace) -> None:
        if not self.settings.generate_components or self.settings.component_owner:
            return
        outcome, retired = write_project_groups(self.session, self.builder, ws)
        self.counts["entities_deleted"] += retired
        self.counts["entities_written"] += outcome.written
        self._report(outcome.conflicts)
        self.commit()

    def _sweep(self, ws: Workspace) -> None:
        if self.counts["failures"]:
            self.counts["sweep"] = "skipped: some repositories could not be read"
            return
        self.counts["sweep"], removed = sweep_deleted_repositories(
            self.session, ws, self.settings.max_delete_share
        )
        self.counts["entities_deleted"] += removed
