"""Which repositories a catalog run reads, and where their catalog files are.

A repository is looked at when its `updated_on` (or, with `change_detection=head`, its
default-branch head) differs from what it was when its catalog files were last read. For
those, code search finds where the files are (one call per 100 files) when many repositories
need a look, else each is probed at its known and configured paths.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from app.bitbucket.client import BitbucketClient, api_path
from app.bitbucket.errors import BitbucketRequestError, RetryLater
from app.config import Settings
from app.models import Repository, Workspace
from app.sync.catalog.search import CatalogFileSearch, CodeSearchUnavailable

log = logging.getLogger(__name__)

HEAD_BATCH = 100
# Below this many repositories to look at, probing each costs less than a workspace search.
SEARCH_THRESHOLD = 20


class ChangedRepositories:
    """Decides what a run reads; counts its failures and discovery mode in `counts`."""

    def __init__(self, client: BitbucketClient, settings: Settings, counts: dict[str, Any]) -> None:
        self.client = client
        self.settings = settings
        self.counts = counts

    def heads(
        self,
        ws: Workspace,
        repos: list[Repository],
        known: dict[str, str | None],
        save: Callable[[dict[str, str | None]], None],
    ) -> dict[int, str | None]:
        """Default-branch heads, one call per repository (for when `updated_on` lags). `known`
        (kept in the run's cursor) fills in as they come and is `save`d every `HEAD_BATCH`
        and on a pause, so a retry asks only for the ones still unknown."""
        try:
            for repo in repos:
                if str(repo.id) in known:
                    continue
                known[str(repo.id)] = self._head(ws, repo)
                if len(known) % HEAD_BATCH == 0:
                    save(known)
        except RetryLater:
            save(known)
            raise
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

    def changed(self, repo: Repository, heads: dict[int, str | None]) -> bool:
        if repo.catalog_checked_on is None and repo.catalog_checked_head is None:
            return True
        if self.settings.change_detection == "head":
            head = heads.get(repo.id)
            return head is None or head != repo.catalog_checked_head
        return repo.updated_on != repo.catalog_checked_on

    def discover(self, ws: Workspace, candidates: list[Repository]) -> dict[str, set[str]] | None:
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
