"""The catalog phase of a full sync: read catalog files only where something changed, and
keep `catalog_entities` true to them.

A repository is looked at when its `updated_on` (or, with `change_detection=head`, its
default-branch head) differs from what it was when its catalog files were last read. For
those, code search finds where the files are (one call per 100 files) when many repositories
need a look, else each is probed at its known and configured paths. A file answering 304 is
re-built from its stored content. Each batch of repositories is committed with its "checked"
marks, so a sync cut short by the budget resumes with the repositories not yet read.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from app.bitbucket.client import BitbucketClient, api_path, file_path
from app.bitbucket.errors import BitbucketError, BitbucketRequestError
from app.catalog.changes import retire_entities
from app.catalog.descriptors import DescriptorError, parse_descriptor
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
from app.sync.runs import recorded_run

log = logging.getLogger(__name__)

KIND = "catalog"
BATCH = 50
# Below this many repositories to look at, probing each costs less than a workspace search.
SEARCH_THRESHOLD = 20
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

    def run(self, workspace: str) -> SyncRun:
        ws = self.session.scalars(select(Workspace).where(Workspace.slug == workspace)).first()
        run = SyncRun(kind=KIND, workspace=workspace)
        self._reset_counts()
        with recorded_run(self.session, self.commit, self.client, run, lambda: self.counts):
            if ws is None:
                raise BitbucketError(f"workspace {workspace} has not been listed yet")
            self._sync(ws, run)
        return run

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
        }

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
        heads = self._heads(ws, repos) if self.settings.change_detection == "head" else {}
        candidates = [r for r in repos if self._changed(r, heads)]
        self.counts["candidates"] = len(candidates)
        found = self._discover(ws, candidates)
        for start in range(0, len(candidates), BATCH):
            for repo in candidates[start : start + BATCH]:
                self._refresh(ws, repo, found, heads.get(repo.id))
            run.counts = dict(self.counts)
            self.commit()
            if self.on_progress:
                self.on_progress(
                    CatalogProgress(
                        ws.slug,
                        self.counts["checked"],
                        len(candidates),
                        self.counts["files_fetched"],
                        self.client.ledger.total,
                    )
                )
        self._project_groups(ws)
        self._sweep(ws)

    def _heads(self, ws: Workspace, repos: list[Repository]) -> dict[int, str | None]:
        """Default-branch heads, one call per repository (for when `updated_on` lags)."""
        heads: dict[int, str | None] = {}
        for repo in repos:
            if not repo.default_branch:
                heads[repo.id] = None
                continue
            try:
                body = self.client.get_json(
                    api_path(
                        "repositories", ws.slug, repo.slug, "refs", "branches", repo.default_branch
                    )
                )
                heads[repo.id] = str((body.get("target") or {}).get("hash") or "") or None
            except BitbucketRequestError as exc:
                self.counts["failures"] += 1
                log.warning(
                    "branch head unavailable",
                    extra={"repository": repo.full_name, "error": str(exc)},
                )
                heads[repo.id] = None
        for repo in repos:
            if heads.get(repo.id):
                repo.head_commit = heads[repo.id]
        return heads

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
            for path in sorted(self._paths(ws, repo, known, found)):
                has_descriptor |= self._read_file(
                    ws, repo, view, path, known.get(path), writer, outcome
                )
        except BitbucketRequestError as exc:
            # This repository stays unchecked and is tried again next sync; no sweep this run.
            self.counts["failures"] += 1
            log.warning(
                "catalog files unreadable", extra={"repository": repo.full_name, "error": str(exc)}
            )
            return
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

    def _read_file(
        self,
        ws: Workspace,
        repo: Repository,
        view: RepositoryView,
        path: str,
        record: CatalogFile | None,
        writer: EntityWriter,
        outcome: WriteOutcome,
    ) -> bool:
        """Fetch and apply one catalog file; True when the file exists."""
        usable = record is not None and record.deleted_at is None and record.content is not None
        raw = self.client.get_file(
            file_path(ws.slug, repo.slug, view.default_branch, path),
            etag=record.etag if usable and record else None,
        )
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
            record.content = content if len(data) <= self.settings.descriptor_max_bytes else None
            record.fetched_at = utcnow()
            if len(data) > self.settings.descriptor_max_bytes:
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
        record.parse_error = None
        file_outcome = WriteOutcome()
        kept: set[str] = set()
        for descriptor in descriptors:
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
