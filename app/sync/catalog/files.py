"""Fetching a repository's catalog files: the paths to read, each file's bytes (a 304 when
its ETag still holds), and a file Bitbucket keeps failing to serve, reported on the file."""

from __future__ import annotations

import logging
from typing import Any

from sqlalchemy.orm import Session

from app.bitbucket.client import BitbucketClient, RawFile, file_path
from app.bitbucket.errors import BitbucketError, BitbucketUnavailable
from app.catalog.entities import RepositoryView
from app.config import Settings
from app.models import CatalogFile, Repository, Workspace
from app.sync.catalog.search import CatalogFileSearch, CodeSearchUnavailable, is_glob

log = logging.getLogger(__name__)

# Files Bitbucket failed to serve (after the client's retries) one after another, with no
# file served in between: then Bitbucket itself is down, not one file, and the run pauses.
UNAVAILABLE_STREAK = 3


class FileUnavailable(BitbucketError):
    """One catalog file Bitbucket kept failing to serve: skipped and reported on the file."""


class CatalogFiles:
    """Reads catalog files for one run (or one refresh); counts what it could not read."""

    def __init__(
        self,
        client: BitbucketClient,
        session: Session,
        settings: Settings,
        counts: dict[str, Any],
    ) -> None:
        self.client = client
        self.session = session
        self.settings = settings
        self.counts = counts
        self._unavailable_streak = 0

    def paths(
        self,
        ws: Workspace,
        repo: Repository,
        known: dict[str, CatalogFile],
        found: dict[str, set[str]] | None,
    ) -> set[str]:
        """The files to read: those on record, and those search found (`found`) or the
        configured paths (literal ones probed, globs searched in this repository)."""
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

    def fetch(
        self,
        ws: Workspace,
        repo: Repository,
        view: RepositoryView,
        path: str,
        record: CatalogFile | None,
    ) -> RawFile | None:
        """One catalog file's bytes (None when it does not exist); writes nothing but the
        report of a file not served (`FileUnavailable`)."""
        usable = record is not None and record.deleted_at is None and record.content is not None
        try:
            raw = self._read(ws, repo, view, path, record.etag if usable and record else None)
        except BitbucketUnavailable as exc:
            self._unavailable_streak += 1
            if self._unavailable_streak >= UNAVAILABLE_STREAK:
                raise
            self._report_unavailable(repo, path, record, exc)
            raise FileUnavailable(str(exc), endpoint=exc.endpoint, status=exc.status) from None
        self._unavailable_streak = 0
        return raw

    def _read(
        self, ws: Workspace, repo: Repository, view: RepositoryView, path: str, etag: str | None
    ) -> RawFile | None:
        """The file's bytes from Bitbucket (a 304 when `etag` still holds; None if absent)."""
        return self.client.get_file(
            file_path(ws.slug, repo.slug, view.default_branch, path), etag=etag
        )

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
