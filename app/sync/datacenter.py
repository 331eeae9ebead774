"""A full sync of a Bitbucket Data Center source: projects → repositories → catalog files.

Each Data Center project is one bbsync workspace keyed `{host}/{KEY}` (a Cloud workspace slug
never holds `/` or `.`, so the two kinds of source never share a workspace, a repository row
or a sync lock). Rows get UUIDs derived from the server and Data Center's numeric ids, which
survive renames as Cloud's UUIDs do. The phases are Cloud's, with Data Center's calls:

- listing: a project's repositories page by page (`start`/`limit`), resumable from the page
  where the budget ran out, stored with Cloud's upserts and swept with Cloud's guard;
- catalog: Cloud's catalog phase (same descriptor rules, conflicts, generated Components,
  project Groups, guarded sweep) with change detection by default-branch head: one call per
  repository tells whether anything was pushed since its files were last read, and only
  those repositories have their files read (Data Center code search needs a search server
  that many instances lack, so each repository is probed at the configured paths).
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any, cast

import redis
from sqlalchemy.orm import Session

from app.bitbucket.budget import KEY_PREFIX, shared_state
from app.bitbucket.client import RawFile
from app.bitbucket.datacenter import DataCenterClient
from app.bitbucket.errors import (
    BitbucketError,
    BitbucketRequestError,
    RetryLater,
)
from app.catalog.datacenter_entities import DataCenterEntityBuilder
from app.catalog.entities import RepositoryView
from app.config import Settings
from app.datacenter_settings import DataCenterSettings
from app.models import CatalogFile, Project, Repository, SyncRun, Workspace
from app.sync.catalog.changed import ChangedRepositories
from app.sync.catalog.files import CatalogFiles
from app.sync.catalog.phase import CatalogProgress, CatalogSync
from app.sync.catalog.search import is_glob
from app.sync.liveness import SyncBusy
from app.sync.repositories import KIND as LISTING
from app.sync.repositories import RepositorySync, SyncProgress, ensure_workspace
from app.sync.runs import recorded_run

log = logging.getLogger(__name__)

# A walk paused for longer than this starts over (its projects are synced again).
WALK_MEMORY_SECONDS = 24 * 3600


def workspace_key(server: DataCenterSettings, project_key: str) -> str:
    """The bbsync workspace of a Data Center project: `{host}/{KEY}`."""
    return f"{server.host}/{project_key.upper()}"


def is_datacenter_workspace(slug: str) -> bool:
    """True for a Data Center project's workspace (`{host}/{KEY}`): a Cloud slug has no `/`."""
    return "/" in slug


def stable_uuid(server: DataCenterSettings, what: str, number: Any) -> str:
    """A `{…}` UUID (as Cloud's) for a Data Center object of this server by its numeric id."""
    return "{" + str(uuid.uuid5(uuid.NAMESPACE_URL, f"{server.url}#{what}/{number}")) + "}"


def _project_ref(server: DataCenterSettings, project: dict[str, Any]) -> dict[str, Any]:
    return {
        "uuid": stable_uuid(server, "project", project.get("id", project["key"])),
        "key": project["key"],
        "name": project.get("name") or project["key"],
    }


def repository_row(
    server: DataCenterSettings, workspace: str, value: dict[str, Any]
) -> dict[str, Any] | None:
    """A Data Center repository in the shape `store_repositories` takes; None when invalid."""
    slug, project = value.get("slug"), value.get("project")
    if not isinstance(slug, str) or not slug or not isinstance(project, dict):
        return None
    if not isinstance(project.get("key"), str):
        return None
    branch = value.get("defaultBranch")  # only some servers send it
    return {
        "uuid": stable_uuid(server, "repo", value.get("id", f"{project['key']}/{slug}")),
        "slug": slug,
        "full_name": f"{workspace}/{slug}",
        "name": str(value.get("name") or slug),
        "description": str(value.get("description") or ""),
        "is_private": not bool(value.get("public", False)),
        "language": "",
        "mainbranch": {"name": branch} if isinstance(branch, str) and branch else None,
        "created_on": None,
        "updated_on": None,
        "project": _project_ref(server, project),
    }


class DataCenterRepositorySync(RepositorySync):
    """The listing phase for one Data Center project."""

    def __init__(
        self,
        client: DataCenterClient,
        session: Session,
        commit: Callable[[], None],
        server: DataCenterSettings,
        *,
        max_delete_share: float = 0.5,
        on_progress: Callable[[SyncProgress], None] | None = None,
    ) -> None:
        super().__init__(
            client.calls,
            session,
            commit,
            max_delete_share=max_delete_share,
            on_progress=on_progress,
        )
        self.dc = client
        self.server = server

    def run_project(self, project: dict[str, Any]) -> SyncRun:
        """List one project's repositories, resuming a run paused for budget."""
        workspace = workspace_key(self.server, project["key"])
        self.counts = {}
        fresh = SyncRun(kind=LISTING, workspace=workspace)
        with recorded_run(
            self.session, self.commit, self.client, fresh, lambda: self.counts, resume=True
        ) as run:
            self.counts = {"seen": 0, "invalid": 0, "deleted": 0, **(run.counts or {})}
            ref = _project_ref(self.server, project)
            ws = ensure_workspace(
                self.session,
                self.client,
                workspace,
                {
                    "uuid": stable_uuid(self.server, "workspace", project.get("id", workspace)),
                    "name": ref["name"],
                },
            )
            start = int((run.cursor or {}).get("start") or 0)
            path = f"projects/{project['key']}/repos"
            for page in self.dc.iter_pages(path, start=start):
                rows = []
                for value in page.values:
                    row = (
                        repository_row(self.server, workspace, value)
                        if isinstance(value, dict)
                        else None
                    )
                    if row is None:
                        self.counts["invalid"] += 1
                        continue
                    rows.append(row)
                self._store(ws, rows)
                self.counts["seen"] += len(rows)
                run.counts = dict(self.counts)
                run.cursor = {"start": page.next_start} if page.next_start else None
                self.commit()
                if self.on_progress:
                    self.on_progress(
                        SyncProgress(
                            workspace,
                            self.counts["seen"],
                            None,
                            (run.api_calls or 0) + self.client.ledger.total,
                        )
                    )
            self.counts["deleted"], refused = self._sweep(ws, run.started_at)
            run.cursor = None
        if refused:
            run.error = refused
            self.commit()
        return run


def _project_key(session: Session, repo: Repository) -> str:
    project = session.get(Project, repo.project_id) if repo.project_id else None
    assert project is not None, "every Data Center repository belongs to a project"
    return project.key


class DataCenterChanges(ChangedRepositories):
    """Changed repositories by default-branch head (Data Center repositories carry no
    `updated_on`), each probed at the configured paths (code search is often absent)."""

    def __init__(
        self, dc: DataCenterClient, session: Session, settings: Settings, counts: dict[str, Any]
    ) -> None:
        super().__init__(dc.calls, settings, counts)
        self.dc = dc
        self.session = session

    def _head(self, ws: Workspace, repo: Repository) -> str | None:
        """The default branch's head (one call), the mark of whether anything changed."""
        try:
            branch = self.dc.default_branch(_project_key(self.session, repo), repo.slug)
        except BitbucketRequestError as exc:
            self.counts["failures"] += 1
            log.warning(
                "branch head unavailable", extra={"repository": repo.full_name, "error": str(exc)}
            )
            return None
        if branch is None:
            return None  # an empty repository
        repo.default_branch = str(branch.get("displayId") or "") or repo.default_branch
        return str(branch.get("latestCommit") or "") or None

    def discover(self, ws: Workspace, candidates: list[Repository]) -> dict[str, set[str]] | None:
        self.counts["discovery"] = "probe" if candidates else "none"
        return None


class DataCenterFiles(CatalogFiles):
    """Catalog files read with Data Center's raw endpoint at the head that was checked."""

    def __init__(
        self, dc: DataCenterClient, session: Session, settings: Settings, counts: dict[str, Any]
    ) -> None:
        super().__init__(dc.calls, session, settings, counts)
        self.dc = dc
        self._globs_warned = False

    def paths(
        self,
        ws: Workspace,
        repo: Repository,
        known: dict[str, CatalogFile],
        found: dict[str, set[str]] | None,
    ) -> set[str]:
        paths = {path for path, f in known.items() if f.deleted_at is None}
        literal = {p for p in self.settings.catalog_paths if not is_glob(p)}
        if not self._globs_warned and len(literal) < len(self.settings.catalog_paths):
            self._globs_warned = True
            log.warning("glob catalog paths need code search, which Data Center lacks; skipped")
        return paths | literal

    def fetch(
        self,
        ws: Workspace,
        repo: Repository,
        view: RepositoryView,
        path: str,
        record: CatalogFile | None,
    ) -> RawFile | None:
        """As Cloud's, but None without asking when the repository is empty."""
        if not repo.head_commit and not repo.default_branch:
            return None
        return super().fetch(ws, repo, view, path, record)

    def _read(
        self, ws: Workspace, repo: Repository, view: RepositoryView, path: str, etag: str | None
    ) -> RawFile | None:
        """The file at the head that was checked (Data Center's raw endpoint with `at=`)."""
        at = repo.head_commit or f"refs/heads/{repo.default_branch}"
        return self.dc.file(_project_key(self.session, repo), repo.slug, path, at=at, etag=etag)


class DataCenterCatalogSync(CatalogSync):
    """Cloud's catalog phase with Data Center's calls (see the module docstring)."""

    def __init__(
        self,
        client: DataCenterClient,
        session: Session,
        commit: Callable[[], None],
        settings: Settings,
        server: DataCenterSettings,
        *,
        on_progress: Callable[[CatalogProgress], None] | None = None,
    ) -> None:
        self.dc = client
        self.server = server
        self.dc_builder = DataCenterEntityBuilder(settings, server)
        super().__init__(
            client.calls,
            session,
            commit,
            # Data Center repositories carry no `updated_on` and code search is often absent.
            replace(settings, change_detection="head", discovery="probe"),
            on_progress=on_progress,
        )

    def _reset_counts(self) -> None:
        self.builder = self.dc_builder
        super()._reset_counts()
        self.changes = DataCenterChanges(self.dc, self.session, self.settings, self.counts)
        self.files = DataCenterFiles(self.dc, self.session, self.settings, self.counts)


@dataclass
class ProjectResult:
    workspace: str
    repositories: SyncRun | None  # None when a paused catalog phase was resumed
    catalog: SyncRun


@dataclass
class DataCenterSyncResult:
    projects: list[ProjectResult] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)  # "{workspace}: {error}"
    skipped: list[str] = field(default_factory=list)  # another sync held the project

    @property
    def ok(self) -> bool:
        return not self.failed


class DataCenterSync:
    """Every configured (or visible) project of one Data Center server, both phases each."""

    def __init__(
        self,
        client: DataCenterClient,
        session: Session,
        commit: Callable[[], None],
        settings: Settings,
        server: DataCenterSettings,
        *,
        on_repositories: Callable[[SyncProgress], None] | None = None,
        on_catalog: Callable[[CatalogProgress], None] | None = None,
        redis_client: redis.Redis | None = None,
    ) -> None:
        self.client = client
        self.server = server
        self.redis = redis_client
        self.repositories = DataCenterRepositorySync(
            client,
            session,
            commit,
            server,
            max_delete_share=settings.max_delete_share,
            on_progress=on_repositories,
        )
        self.catalog = DataCenterCatalogSync(
            client, session, commit, settings, server, on_progress=on_catalog
        )

    def projects(self) -> list[dict[str, Any]]:
        return [p for p in self.client.projects(self.server.projects) if isinstance(p, dict)]

    def run_project(self, project: dict[str, Any]) -> ProjectResult:
        workspace = workspace_key(self.server, project["key"])
        repositories = None
        if not self.catalog.resuming(workspace):
            repositories = self.repositories.run_project(project)
        return ProjectResult(workspace, repositories, self.catalog.run(workspace))

    def run(self) -> DataCenterSyncResult:
        """Every project, both phases each.

        The walk remembers in Redis the projects it finished: after a budget pause, running
        again resumes with the paused project, not with the projects already synced (on Data
        Center each sync costs a head call per repository). Only a memory of progress: when
        it is lost, the walk starts over and costs more, nothing else.
        """
        result = DataCenterSyncResult()
        done = self._walk_done()
        for project in self.projects():
            if project["key"] in done:
                continue
            workspace = workspace_key(self.server, project["key"])
            try:
                result.projects.append(self.run_project(project))
            except SyncBusy as exc:
                result.skipped.append(f"{workspace}: {exc}")
                continue
            except RetryLater:
                raise  # the walk pauses here; running again resumes with this project
            except BitbucketError as exc:
                # Recorded on the project's run; the other projects still sync.
                result.failed.append(f"{workspace}: {exc}")
                continue
            done.add(project["key"])
            self._remember_walk(done)
        self._remember_walk(None)
        result.warnings = list(self.client.warnings)
        return result

    def _walk_key(self) -> str:
        return f"{KEY_PREFIX}:datacenter-walk/{self.server.fingerprint}"

    def _walk_done(self) -> set[str]:
        if self.redis is None:
            return set()
        with shared_state("Data Center walk"):
            raw = cast(bytes | None, self.redis.get(self._walk_key()))
        try:
            done = json.loads(raw) if raw else []
        except ValueError:
            done = []
        return {str(key) for key in done} if isinstance(done, list) else set()

    def _remember_walk(self, done: set[str] | None) -> None:
        """Keep the projects finished (None: the walk is over, forget it)."""
        if self.redis is None:
            return
        with shared_state("Data Center walk"):
            if done is None:
                self.redis.delete(self._walk_key())
            else:
                self.redis.set(self._walk_key(), json.dumps(sorted(done)), ex=WALK_MEMORY_SECONDS)
