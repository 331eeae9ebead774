"""A full sync of one workspace: list the repositories, then read the catalog files of those
that changed. Each phase records its own sync run; both resume after a budget pause, and a
retry of a paused catalog phase goes straight back to it (the listing is done)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy.orm import Session

from app.bitbucket.client import BitbucketClient
from app.config import Settings
from app.models import SyncRun
from app.sync.catalog.phase import CatalogProgress, CatalogSync
from app.sync.repositories import RepositorySync, SyncProgress


@dataclass
class WorkspaceSyncResult:
    repositories: SyncRun | None  # None when the run resumed a paused catalog phase
    catalog: SyncRun


class WorkspaceSync:
    def __init__(
        self,
        client: BitbucketClient,
        session: Session,
        commit: Callable[[], None],
        settings: Settings,
        *,
        on_repositories: Callable[[SyncProgress], None] | None = None,
        on_catalog: Callable[[CatalogProgress], None] | None = None,
    ) -> None:
        self.repositories = RepositorySync(
            client,
            session,
            commit,
            max_delete_share=settings.max_delete_share,
            on_progress=on_repositories,
        )
        self.catalog = CatalogSync(client, session, commit, settings, on_progress=on_catalog)

    def run(self, workspace: str) -> WorkspaceSyncResult:
        repositories = None
        if not self.catalog.resuming(workspace):
            repositories = self.repositories.run(workspace)
        catalog = self.catalog.run(workspace)
        return WorkspaceSyncResult(repositories, catalog)
