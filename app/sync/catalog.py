"""The catalog phase of a full sync: read catalog files only where something changed, and
keep `catalog_entities` true to them.

A repository is looked at when its `updated_on` (or, with `change_detection=head`, its
default-branch head) differs from what it was when its catalog files were last read. For
those, code search finds where the files are (one call per 100 files) when many repositories
need a look, else each is probed at its known and configured paths. A file answering 304 is
re-built from its stored content.

Progress is kept as it is obtained, so that any budget above zero moves a sync forward: the
search results are committed in the run's cursor before any file is read, each batch of
repositories is committed with its "checked" marks, and a budget pause commits the
repositories read so far (a repository's files are all fetched before any of its rows are
written, so a pause never leaves one half-applied). The retry resumes the paused run: no
listing, no search, only the repositories not yet read.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from app.bitbucket.client import BitbucketClient, RawFile, api_path, file_path
from app.bitbucket.errors import (
    BitbucketError,
    BitbucketRequestError,
    BitbucketUnavailable,
    RetryLater,
)
from app.catalog.changes import retire_entities
from app.catalog.descriptor_policy import screen_descriptors
from app.catalog.descriptors import DescriptorError, parse_descriptor, storable_text
from app.catalog.entities import EntityBuilder, RepositoryView
from app.config import Settings
from app.models import (
    CatalogEntity,
    CatalogFile,
    EntitySource,
    Project,
    Repository,
    SyncRun,
    Workspace,
    utcnow,
)
from app.sync.discovery import CatalogFileSearch, CodeSearchUnavailable, is_glob
from app.sync.entity_writer import EntityWriter, WriteOutcome
from app.sync.runs import has_resumable, recorded_run

log = logging.getLogger(__name__)

KIND = "catalog"
BATCH = 20
# Per-attempt progress kept on the run (how many repositories each attempt read), bounded.
MAX_ATTEMPTS_KEPT = 100
HEAD_BATCH = 100
# Below this many repositories to look at, probing each costs less than a workspace search.
SEARCH_THRESHOLD = 20
MAX_REPORTED_CONFLICTS = 50
# Files Bitbucket failed to serve (after the client's retries) one after another, with no
# file served in between: then Bitbucket itself is down, not one file, and the run pauses.
UNAVAILABLE_STREAK = 3


class FileUnavailable(BitbucketError):
    """One catalog file Bitbucket kept failing to serve: skipped and reported on the file."""


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
        self._unavailable_streak = 0

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
        candidates = [r for r in repos if self._changed(r, heads)]
        if "found" not in cursor:
            # First attempt: what to read is decided once and kept, so a retry reads on.
            self.counts["candidates"] = len(candidates)
            found = self._discover(ws, candidates)
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
        """Default-branch heads, one call per repository (for when `updated_on` lags); kept
        in the cursor as they come, so a retry asks only for the ones still unknown."""
        known: dict[str, str | None] = dict(cursor.get("heads") or {})
        try:
            for repo in repos:
                if str(repo.id) in known:
                    continue
                known[str(repo.id)] = self._head(ws, repo)
                if len(known) % HEAD_BATCH == 0:
                    self._checkpoint(run, {**cursor, "heads": known})
        except RetryLater:
            self._checkpoint(run, {**cursor, "heads": known})
            raise
        cursor["heads"] = known
        heads = {repo.id: known.get(str(repo.id)) for repo in repos}
        for repo in repos:
            if heads.get(repo.id):
                repo.head_commit = heads[repo.id]
        return heads

    def _head(self, ws: Workspace, repo: Repository) -> str | None:
        if not repo.default_branch:
            return None
        try:
            body = self.client.get_json(
                api_path(
                    "repositories", ws.slug, repo.slug, "refs", "branches", repo.default_branch
                )
            )
        except BitbucketRequestError as exc:
            self.counts["failures"] += 1
            log.warning(
                "branch head unavailable",
                extra={"repository": repo.full_name, "error": str(exc)},
            )
            return None
        return str((body.get("target") or {}).get("hash") or "") or None

    def _changed(self, repo: Repository, heads: dict[int, str | None]) -> bool:
        if repo.catalog_checked_on is None and repo.catalog_checked_head is None:
            return True
        if self.settings.change_detection == "head":
            head = heads.get(repo.id)
            return head is None or head != repo.catalog_checked_head
        return repo.updated_on != repo.catalog_checked_on

    def _discover(self, ws: Workspace, candidates: list[Repository]) -> dict[str, set[str]] | None:
        """Catalog files per repository slug from code search, or None to probe."""
        mode = self.settings.discovery
        if not candidates or mode == "probe":
            self.counts["discovery"] = "probe" if candidates else "none"
            return None
        if mode == "auto" and len(candidates) < SEARCH_THRESHOLD:
            self.counts["discovery"] = "probe"
            return None
        search = CatalogFileSearch(self.client, self.settings.catalog_paths)
        try:
            result = search.find(ws.slug, [r.slug for r in candidates])
        except CodeSearchUnavailable as exc:
            log.warning(
                "code search unavailable; probing each repository",
                extra={"workspace": ws.slug, "reason": str(exc)},
            )
            self.counts["discovery"] = "probe (search unavailable)"
            return None
        self.counts["discovery"] = f"search ({result.queries} queries, {result.pages} pages)"
        return result.files

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

    def _paths(
        self,
        ws: Workspace,
        repo: Repository,
        known: dict[str, CatalogFile],
        found: dict[str, set[str]] | None,
    ) -> set[str]:
        paths = {path for path, f in known.items() if f.deleted_at is None}
        if found is not None:
            return paths | found.get(repo.slug, set())
        literal = {p for p in self.settings.catalog_paths if not is_glob(p)}
        globs = tuple(p for p in self.settings.catalog_paths if is_glob(p))
        if globs:
            try:
                per_repo = CatalogFileSearch(self.client, globs).find(ws.slug, [repo.slug])
                literal |= per_repo.files.get(repo.slug, set())
            except CodeSearchUnavailable:
                log.warning(
                    "glob catalog paths need code search; skipped",
                    extra={"repository": repo.full_name},
                )
        return paths | literal

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
                (path, self._fetch(ws, repo, view, path, known.get(path)))
                for path in sorted(self._paths(ws, repo, known, found))
            ]
        except (BitbucketRequestError, FileUnavailable) as exc:
            # This repository stays unchecked and is tried again next sync; no sweep this run.
            self.counts["failures"] += 1
            log.warning(
                "catalog files unreadable", extra={"repository": repo.full_name, "error": str(exc)}
            )
            return
        for path, raw in fetched:
            has_descriptor |= self._apply_file(
                repo, view, path, raw, known.get(path), writer, outcome
            )
        # Never read before and no file on record: nothing of this repository's can be stale,
        # so a cold sync skips the retire statements (two per repository).
        first_read = not known and repo.catalog_checked_on is None and not repo.catalog_checked_head
        if has_descriptor or not self.settings.generate_components:
            if not first_read:
                self.counts["entities_deleted"] += writer.retire_generated(repo.id)
        else:
            component = self.builder.generated_component(view)
            writer.write(component, EntitySource.GENERATED, repository_id=repo.id, outcome=outcome)
            if not first_read:
                self.counts["entities_deleted"] += writer.retire_generated(repo.id, {component.ref})
        self.counts["entities_written"] += outcome.written
        self._report(outcome.conflicts)
        repo.catalog_checked_on = repo.updated_on
        repo.catalog_checked_head = head or repo.head_commit
        self.counts["checked"] += 1

    def _fetch(
        self,
        ws: Workspace,
        repo: Repository,
        view: RepositoryView,
        path: str,
        record: CatalogFile | None,
    ) -> RawFile | None:
        """One catalog file's bytes (None when it does not exist); writes nothing."""
        usable = record is not None and record.deleted_at is None and record.content is not None
        try:
            raw = self.client.get_file(
                file_path(ws.slug, repo.slug, view.default_branch, path),
                etag=record.etag if usable and record else None,
            )
        except BitbucketUnavailable as exc:
            self._unavailable_streak += 1
            if self._unavailable_streak >= UNAVAILABLE_STREAK:
                raise
            self._report_unavailable(repo, path, record, exc)
            raise FileUnavailable(str(exc), endpoint=exc.endpoint, status=exc.status) from None
        self._unavailable_streak = 0
        return raw

    def _apply_file(
        self,
        repo: Repository,
        view: RepositoryView,
        path: str,
        raw: RawFile | None,
        record: CatalogFile | None,
        writer: EntityWriter,
        outcome: WriteOutcome,
    ) -> bool:
        """Apply one fetched catalog file; True when the file exists."""
        if raw is None:
            self.counts["files_missing"] += 1
            if record is not None and record.deleted_at is None:
                record.deleted_at = utcnow()
                self.counts["entities_deleted"] += writer.retire_file_entities(record.id, set())
            return False
        fresh_record = record is None
        if record is None:
            record = CatalogFile(repository_id=repo.id, path=path)
            self.session.add(record)
        if raw.not_modified:
            self.counts["files_unchanged"] += 1
            content = record.content or ""
        else:
            self.counts["files_fetched"] += 1
            data = raw.content or b""
            content = data.decode("utf-8", errors="replace")
            record.etag = raw.etag
            record.content_hash = hashlib.sha256(data).hexdigest()
            record.content = storable_text(data, self.settings.descriptor_max_bytes)
            record.fetched_at = utcnow()
            if record.content is None:
                record.etag = None  # never trust a 304 for content we did not keep
        record.commit = repo.head_commit
        record.deleted_at = None
        self.session.flush()
        try:
            descriptors = parse_descriptor(
                content.encode() if raw.not_modified else (raw.content or b""),
                max_bytes=self.settings.descriptor_max_bytes,
                max_documents=self.settings.descriptor_max_documents,
            )
        except DescriptorError as exc:
            # Keep the last good entities; show the error where an operator looks.
            record.parse_error = str(exc)
            self.counts["parse_errors"] += 1
            return True
        # Refused kinds and bbsync's own annotations are reported like a parse error; the
        # file's other documents are still used.
        screened = screen_descriptors(
            descriptors,
            self.settings.descriptor_kinds,
            self.builder.derived_annotations(view, path),
        )
        record.parse_error = screened.report
        self.counts["parse_errors"] += 1 if screened.problems else 0
        file_outcome = WriteOutcome()
        kept: set[str] = set()
        for descriptor in screened.descriptors:
            entity = self.builder.from_descriptor(descriptor, view, path)
            if writer.write(
                entity,
                EntitySource.DESCRIPTOR,
                repository_id=repo.id,
                catalog_file_id=record.id,
                outcome=file_outcome,
            ):
                kept.add(entity.ref)
        record.entity_conflicts = file_outcome.conflicts or None
        if not fresh_record:
            self.counts["entities_deleted"] += writer.retire_file_entities(record.id, kept)
        outcome.written += file_outcome.written
        outcome.unchanged += file_outcome.unchanged
        outcome.conflicts.extend(file_outcome.conflicts)
        return True

    def _report_unavailable(
        self, repo: Repository, path: str, record: CatalogFile | None, exc: BitbucketUnavailable
    ) -> None:
        """Show the file as unreadable where parse errors show; its entities stay as they are."""
        self.counts["files_unavailable"] += 1
        if record is None:
            record = CatalogFile(repository_id=repo.id, path=path)
            self.session.add(record)
        record.parse_error = f"not served by Bitbucket, kept as last read: {exc}"
        record.deleted_at = None
        self.session.flush()

    def _report(self, conflicts: list[str]) -> None:
        reported: list[str] = self.counts["conflicts"]
        for conflict in conflicts:
            if len(reported) < MAX_REPORTED_CONFLICTS and conflict not in reported:
                reported.append(conflict)

    # -- workspace-wide ---------------------------------------------------------------

    def _project_groups(self, ws: Workspace) -> None:
        """A Group per Bitbucket project with live repositories: the default owners."""
        if not self.settings.generate_components or self.settings.component_owner:
            return
        writer = EntityWriter(self.session, ws.slug)
        outcome = WriteOutcome()
        live_projects = self.session.scalars(
            select(Project).where(
                Project.workspace_id == ws.id,
                Project.id.in_(
                    select(Repository.project_id).where(
                        Repository.workspace_id == ws.id, Repository.deleted_at.is_(None)
                    )
                ),
            )
        ).all()
        keep = set()
        for project in live_projects:
            group = self.builder.project_group(ws.slug, project.key, project.name)
            if writer.write(group, EntitySource.BITBUCKET, outcome=outcome):
                keep.add(group.ref)
        orphans = self.session.scalar(
            select(func.count())
            .select_from(Repository)
            .where(
                Repository.workspace_id == ws.id,
                Repository.deleted_at.is_(None),
                Repository.project_id.is_(None),
            )
        )
        if orphans:
            group = self.builder.workspace_group(ws.slug)
            if writer.write(group, EntitySource.BITBUCKET, outcome=outcome):
                keep.add(group.ref)
        stale = [
            CatalogEntity.workspace == ws.slug,
            CatalogEntity.source == EntitySource.BITBUCKET.value,
            CatalogEntity.kind == "Group",
        ]
        if keep:
            stale.append(CatalogEntity.entity_ref.not_in(keep))
        self.counts["entities_deleted"] += retire_entities(self.session, *stale)
        self.counts["entities_written"] += outcome.written
        self._report(outcome.conflicts)
        self.commit()

    def _sweep(self, ws: Workspace) -> None:
        """Entities of repositories gone from Bitbucket leave the catalog, guarded."""
        if self.counts["failures"]:
            self.counts["sweep"] = "skipped: some repositories could not be read"
            return
        gone = select(Repository.id).where(
            Repository.workspace_id == ws.id, Repository.deleted_at.is_not(None)
        )
        live = (CatalogEntity.workspace == ws.slug, CatalogEntity.deleted_at.is_(None))
        doomed = (
            self.session.scalar(
                select(func.count())
                .select_from(CatalogEntity)
                .where(*live, CatalogEntity.repository_id.in_(gone))
            )
            or 0
        )
        total = (
            self.session.scalar(select(func.count()).select_from(CatalogEntity).where(*live)) or 0
        )
        if not doomed:
            self.counts["sweep"] = "nothing to remove"
            return
        if doomed / total > self.settings.max_delete_share:
            self.counts["sweep"] = (
                f"refused: would remove {doomed} of {total} entities, more than "
                f"{self.settings.max_delete_share:.0%}"
            )
            log.error(
                "entity sweep refused",
                extra={"workspace": ws.slug, "doomed": doomed, "total": total},
            )
            return
        retire_entities(
            self.session, CatalogEntity.workspace == ws.slug, CatalogEntity.repository_id.in_(gone)
        )
        self.session.execute(
            update(CatalogFile)
            .where(CatalogFile.repository_id.in_(gone), CatalogFile.deleted_at.is_(None))
            .values(deleted_at=utcnow())
            .execution_options(synchronize_session=False)
        )
        self.counts["entities_deleted"] += doomed
        self.counts["sweep"] = f"removed {doomed} entities of deleted repositories"
