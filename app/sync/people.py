"""People and access: workspace members become `User` entities, Bitbucket groups `Group`
entities, and effective repository permissions a table a Backstage permission policy reads.

Whatever Bitbucket stops listing is revoked here at the next sync (soft-deleted, with an audit
row saying what and when), under the same guard as the catalog: a sync that would remove more
than `BBSYNC_MAX_DELETE_SHARE` of the members (or groups, or permissions) at once is refused
and reported.
Groups come from the 1.0 API, which Bitbucket keeps "temporarily": when it does not answer,
the sync goes on without them and says so.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from app.bitbucket.client import BitbucketClient, api_path
from app.bitbucket.errors import BitbucketRequestError, CredentialError
from app.catalog.changes import retire_entities
from app.catalog.entities import BuiltEntity, EntityBuilder
from app.catalog.people import group_entity, user_entity, user_name
from app.config import Settings
from app.models import (
    AccessAudit,
    BitbucketGroup,
    CatalogEntity,
    EntitySource,
    Repository,
    RepositoryPermission,
    SyncRun,
    Workspace,
    WorkspaceMember,
    utcnow,
)
from app.store import retire
from app.sync.entity_writer import EntityWriter, WriteOutcome
from app.sync.repositories import ensure_workspace
from app.sync.retire import guard_removal
from app.sync.runs import recorded_run
from app.sync.shares import run_calls_left, share_per_hour

log = logging.getLogger(__name__)

KIND = "members"
# Without an admin credential a repository's permissions cost two calls (users, groups).
PER_REPOSITORY_CALLS = 2
# An admin's workspace query names this many repositories at most (one page of 100 for 40
# repositories with two explicit permissions each), and stays well inside URL limits.
BATCH_REPOSITORIES = 40
BATCH_QUERY_CHARS = 3000


def _batch(pending: list[Repository]) -> list[Repository]:
    """The next repositories one workspace-permissions query asks for."""
    batch: list[Repository] = []
    length = 0
    for repo in pending[:BATCH_REPOSITORIES]:
        length += len(repo.full_name) + 30
        if batch and length > BATCH_QUERY_CHARS:
            break
        batch.append(repo)
    return batch


def audit(
    session: Session, workspace: str | None, action: str, subject: str, **detail: Any
) -> AccessAudit:
    row = AccessAudit(workspace=workspace, action=action, subject=subject, detail=detail)
    session.add(row)
    return row


def _member(user: dict[str, Any]) -> dict[str, Any]:
    avatar = ((user.get("links") or {}).get("avatar") or {}).get("href")
    return {
        "account_id": user["account_id"],
        "uuid": user.get("uuid"),
        "nickname": user.get("nickname"),
        "display_name": user.get("display_name") or "",
        "avatar_url": avatar,
        "email": user.get("email"),
    }


class PeopleSync:
    def __init__(
        self,
        client: BitbucketClient,
        session: Session,
        commit: Callable[[], None],
        settings: Settings,
        *,
        max_calls: int | None = None,
    ) -> None:
        self.client = client
        self.session = session
        self.commit = commit
        self.settings = settings
        self.max_calls = max_calls  # the run's share of the budget; None: a full walk
        self._started = 0  # the client's call count when the run started
        self.mapping = EntityBuilder(settings).mapping
        self.counts: dict[str, Any] = {}
        # Repositories whose permissions could not be read this run: their grants are kept.
        self.unknown_repositories: set[int] = set()

    def run(self, workspace: str) -> SyncRun:
        self.counts = {
            "members": 0,
            "removed_members": 0,
            "groups": "none",
            "permissions": 0,
            "revoked_permissions": 0,
            "permission_repositories": 0,  # read in full by this run
            "permission_calls": 0,
            "permissions_deferred": 0,  # left for the next runs (the share ran out)
            "entities_written": 0,
            "entities_deleted": 0,
            "warnings": [],
        }
        run = SyncRun(kind=KIND, workspace=workspace)
        with recorded_run(self.session, self.commit, self.client, run, lambda: self.counts):
            self._started = self.client.ledger.total
            ws = ensure_workspace(self.session, self.client, workspace)
            members = [
                _member(m["user"])
                for m in self.client.paginate(api_path("workspaces", workspace, "members"))
                if (m.get("user") or {}).get("account_id")
            ]
            groups = self._groups(workspace)
            refused = [self._apply_members(ws, members), self._apply_groups(ws, groups)]
            refused.append(self._apply_permissions(ws))
            self._entities(ws, groups)
            run.error = "; ".join(r for r in refused if r) or None
        return run

    # -- fetching ---------------------------------------------------------------------

    def _groups(self, workspace: str) -> list[dict[str, Any]] | None:
        try:
            raw = self.client.get_json_list(self.client.v1_url(f"groups/{workspace}"))
        except BitbucketRequestError as exc:
            warning = f"groups unavailable ({exc.status}): project groups only"
            self.counts["warnings"].append(warning)
            self.counts["groups"] = "unavailable"
            log.warning(
                "bitbucket groups unavailable", extra={"workspace": workspace, "error": str(exc)}
            )
            return None
        groups = []
        for item in raw:
            if isinstance(item, dict) and item.get("slug"):
                groups.append(
                    {
                        "slug": str(item["slug"]),
                        "name": str(item.get("name") or item["slug"]),
                        "permission": item.get("permission"),
                        "members": sorted(
                            {
                                str(m["account_id"])
                                for m in item.get("members") or []
                                if isinstance(m, dict) and m.get("account_id")
                            }
                        ),
                    }
                )
        self.counts["groups"] = len(groups)
        return groups

    def _spent(self) -> int:
        return self.client.ledger.total - self._started

    def _affordable(self, cost: int) -> bool:
        return self.max_calls is None or self._spent() + cost <= self.max_calls

    def _permissions(self, ws: Workspace) -> tuple[dict[tuple[int, str, str], str], set[int]]:
        """`{(repository id, user|group, account id or group slug): permission}` and the ids of
        the repositories whose permissions were read in full.

        Repositories are read oldest `permissions_read_at` first (never read before all), as
        many as the run's share allows, so successive runs sweep them all and each run goes on
        where the last one stopped. With an admin credential a query asks the workspace
        permissions for a batch of repositories by name (one page for ~40 repositories);
        otherwise each repository's `permissions-config` is read (two calls each).
        """
        repos = list(
            self.session.scalars(
                select(Repository)
                .where(Repository.workspace_id == ws.id, Repository.deleted_at.is_(None))
                .order_by(Repository.permissions_read_at.asc().nulls_first(), Repository.full_name)
            )
        )
        found: dict[tuple[int, str, str], str] = {}
        read: set[int] = set()
        started = self.client.ledger.total
        pending = list(repos)
        admin = True
        while pending:
            if admin:
                batch = _batch(pending)
                if not self._affordable(1):
                    break
                try:
                    found.update(self._workspace_permissions(ws, batch))
                except CredentialError:
                    # Not a workspace admin: read each repository's explicit permissions.
                    self.counts["warnings"].append(
                        "workspace permissions need an admin; read per repository"
                    )
                    admin = False
                    continue
            else:
                batch = pending[:1]
                if not self._affordable(PER_REPOSITORY_CALLS):
                    break
                found.update(self._repository_permissions(ws, batch[0]))
            read.update(r.id for r in batch)
            pending = pending[len(batch) :]
        self.counts["permission_calls"] = self.client.ledger.total - started
        self.counts["permission_repositories"] = len(read)
        self.counts["permissions_deferred"] = len(pending)
        now = utcnow()
        for repo in repos:
            if repo.id in read:
                repo.permissions_read_at = now
        return found, read

    def _workspace_permissions(
        self, ws: Workspace, batch: list[Repository]
    ) -> dict[tuple[int, str, str], str]:
        ids = {r.full_name: r.id for r in batch}
        query = " OR ".join(f'repository.full_name="{name}"' for name in ids)
        found: dict[tuple[int, str, str], str] = {}
        for item in self.client.paginate(
            api_path("workspaces", ws.slug, "permissions", "repositories"), {"q": query}
        ):
            repo_id = ids.get(str((item.get("repository") or {}).get("full_name")))
            account = (item.get("user") or {}).get("account_id")
            if repo_id and account and item.get("permission"):
                found[(repo_id, "user", str(account))] = str(item["permission"])
        return found

    def _repository_permissions(
        self, ws: Workspace, repo: Repository
    ) -> dict[tuple[int, str, str], str]:
        found: dict[tuple[int, str, str], str] = {}
        base = api_path("repositories", ws.slug, repo.slug, "permissions-config")
        for item in self.client.paginate(f"{base}/users"):
            account = (item.get("user") or {}).get("account_id")
            if account:
                found[(repo.id, "user", str(account))] = str(item["permission"])
        for item in self.client.paginate(f"{base}/groups"):
            group = (item.get("group") or {}).get("slug")
            if group:
                found[(repo.id, "group", str(group))] = str(item["permission"])
        return found

    # -- applying ---------------------------------------------------------------------

    def _refuse(self, what: str, removing: int, total: int) -> str | None:
        return guard_removal(
            removing,
            total,
            self.settings.max_delete_share,
            refusal=what + " sweep refused: {removing} of {total} would be removed, more "
            "than {share} at once",
            event="people sweep refused",
            what=what,
        )

    def _retire(
        self,
        model: type[WorkspaceMember | BitbucketGroup | RepositoryPermission],
        rows: list[Any],
        now: datetime,
    ) -> list[int]:
        """Mark `rows` (held by this session) removed, in one statement per chunk."""
        return retire(
            self.session,
            model,
            ids=[r.id for r in rows],
            column="removed_at",
            at=now,
            synchronize=True,
        )

    def _apply_members(self, ws: Workspace, members: list[dict[str, Any]]) -> str | None:
        now = utcnow()
        existing = {
            m.account_id: m
            for m in self.session.scalars(
                select(WorkspaceMember).where(WorkspaceMember.workspace_id == ws.id)
            )
        }
        live = {k for k, m in existing.items() if m.removed_at is None}
        seen = {m["account_id"] for m in members}
        refused = self._refuse("member", len(live - seen), len(live))
        for data in members:
            row = existing.get(data["account_id"])
            if row is None:
                row = WorkspaceMember(
                    workspace_id=ws.id, account_id=data["account_id"], first_seen_at=now
                )
                self.session.add(row)
                audit(
                    self.session,
                    ws.slug,
                    "member_added",
                    data["account_id"],
                    display_name=data["display_name"],
                )
            elif row.removed_at is not None:
                audit(
                    self.session,
                    ws.slug,
                    "member_added",
                    data["account_id"],
                    display_name=data["display_name"],
                    returned=True,
                )
            for key in ("uuid", "nickname", "display_name", "avatar_url", "email"):
                setattr(row, key, data[key])
            row.last_seen_at, row.removed_at = now, None
        self.counts["members"] = len(members)
        if refused:
            return refused
        gone = [existing[account] for account in live - seen]
        self.counts["removed_members"] += len(self._retire(WorkspaceMember, gone, now))
        for row in gone:
            audit(
                self.session,
                ws.slug,
                "member_removed",
                row.account_id,
                display_name=row.display_name,
                first_seen_at=row.first_seen_at.isoformat(),
                last_seen_at=row.last_seen_at.isoformat(),
            )
        self._revoke_leavers(ws, live - seen, now)
        return None

    def _revoke_leavers(self, ws: Workspace, accounts: set[str], now: datetime) -> None:
        """Leaving the workspace takes every repository permission with it (Bitbucket drops
        them): revoked now, not when the permissions walk next reaches each repository."""
        if not accounts:
            return
        for row in self.session.scalars(
            select(RepositoryPermission)
            .join(Repository, RepositoryPermission.repository_id == Repository.id)
            .where(
                Repository.workspace_id.in_(self._repository_workspaces(ws)),
                RepositoryPermission.principal_type == "user",
                RepositoryPermission.principal.in_(sorted(accounts)),
                RepositoryPermission.removed_at.is_(None),
            )
        ):
            row.removed_at = now
            self.counts["revoked_permissions"] += 1
            audit(
                self.session,
                ws.slug,
                "permission_revoked",
                row.principal,
                repository_id=row.repository_id,
                principal_type=row.principal_type,
                permission=row.permission,
                reason="member_removed",
            )

    def _apply_groups(self, ws: Workspace, groups: list[dict[str, Any]] | None) -> str | None:
        if groups is None:
            return None  # unknown is not empty: keep what we knew
        now = utcnow()
        existing = {
            g.slug: g
            for g in self.session.scalars(
                select(BitbucketGroup).where(BitbucketGroup.workspace_id == ws.id)
            )
        }
        for data in groups:
            row = existing.get(data["slug"]) or BitbucketGroup(
                workspace_id=ws.id, slug=data["slug"]
            )
            before = set(row.members or []) if row.removed_at is None else set()
            for account in sorted(before - set(data["members"])):
                audit(self.session, ws.slug, "group_member_removed", account, group=data["slug"])
            row.name, row.permission, row.members = (
                data["name"],
                data["permission"],
                data["members"],
            )
            row.last_seen_at, row.removed_at = now, None
            self.session.add(row)
        live = {slug for slug, g in existing.items() if g.removed_at is None}
        gone = live - {g["slug"] for g in groups}
        refused = self._refuse("group", len(gone), len(live))
        if refused:
            return refused
        self._retire(BitbucketGroup, [existing[slug] for slug in gone], now)
        for slug in sorted(gone):
            audit(self.session, ws.slug, "group_removed", slug)
        return None

    def _repository_workspaces(self, ws: Workspace) -> list[int]:
        """The workspaces whose repositories' grants this people sync owns."""
        return [ws.id]

    def _apply_permissions(self, ws: Workspace) -> str | None:
        """Store what was read; revoke only within repositories read in full by this run (a
        repository the walk did not reach keeps its permissions) and in deleted ones."""
        now = utcnow()
        found, read = self._permissions(ws)
        existing: dict[tuple[int, str, str], RepositoryPermission] = {}
        gone: set[int] = set()
        for p, deleted_at in self.session.execute(
            select(RepositoryPermission, Repository.deleted_at)
            .join(Repository, RepositoryPermission.repository_id == Repository.id)
            .where(Repository.workspace_id.in_(self._repository_workspaces(ws)))
        ):
            existing[(p.repository_id, p.principal_type, p.principal)] = p
            if deleted_at is not None:
                gone.add(p.repository_id)
        # Only repositories read in full this run (or gone) can lose a grant: one the walk has
        # not reached, or whose permissions were refused, keeps what was known.
        unknown = self.unknown_repositories
        live = {
            k
            for k, p in existing.items()
            if p.removed_at is None and k[0] not in unknown and (k[0] in read or k[0] in gone)
        }
        refused = self._refuse("permission", len(live - set(found)), len(live))
        for key, permission in found.items():
            row = existing.get(key)
            if row is None:
                row = RepositoryPermission(
                    repository_id=key[0], principal_type=key[1], principal=key[2], first_seen_at=now
                )
                self.session.add(row)
            elif row.permission != permission and row.removed_at is None:
                audit(
                    self.session,
                    ws.slug,
                    "permission_changed",
                    key[2],
                    repository_id=key[0],
                    old=row.permission,
                    new=permission,
                )
            row.permission, row.last_seen_at, row.removed_at = permission, now, None
        self.counts["permissions"] = len(found)
        if refused:
            return refused
        revoked = [(key, existing[key]) for key in live - set(found)]
        self.counts["revoked_permissions"] += len(
            self._retire(RepositoryPermission, [row for _, row in revoked], now)
        )
        for key, row in revoked:
            audit(
                self.session,
                ws.slug,
                "permission_revoked",
                key[2],
                repository_id=key[0],
                principal_type=key[1],
                permission=row.permission,
            )
        return None

    def _entities(self, ws: Workspace, groups: list[dict[str, Any]] | None) -> None:
        members = list(
            self.session.scalars(
                select(WorkspaceMember).where(
                    WorkspaceMember.workspace_id == ws.id, WorkspaceMember.removed_at.is_(None)
                )
            )
        )
        known_groups = list(
            self.session.scalars(
                select(BitbucketGroup).where(
                    BitbucketGroup.workspace_id == ws.id, BitbucketGroup.removed_at.is_(None)
                )
            )
        )
        by_account = {m.account_id: self._user_name(m) for m in members}
        member_of: dict[str, list[str]] = {m.account_id: [] for m in members}
        writer, outcome, keep = EntityWriter(self.session, ws.slug), WriteOutcome(), set()
        for group in known_groups:
            users = [by_account[a] for a in group.members or [] if a in by_account]
            entity = self._group_entity(ws, group, users)
            for account in group.members or []:
                if account in member_of:
                    member_of[account].append(entity.ref)
            if writer.write(entity, EntitySource.PEOPLE, outcome=outcome):
                keep.add(entity.ref)
        for member in members:
            entity = self._user_entity(ws, member, member_of[member.account_id])
            if writer.write(entity, EntitySource.PEOPLE, outcome=outcome):
                keep.add(entity.ref)
        stale = [
            CatalogEntity.workspace == ws.slug,
            CatalogEntity.source == EntitySource.PEOPLE.value,
        ]
        if keep:
            stale.append(CatalogEntity.entity_ref.not_in(keep))
        self.counts["entities_deleted"] = retire_entities(self.session, *stale)
        self.counts["entities_written"] = outcome.written
        self.counts["warnings"].extend(outcome.conflicts[:20])

    # -- entities (a Data Center source names and annotates them its own way) -------------

    def _user_name(self, member: WorkspaceMember) -> str:
        return user_name(member.nickname, member.account_id)

    def _user_entity(
        self, ws: Workspace, member: WorkspaceMember, groups: list[str]
    ) -> BuiltEntity:
        data = {
            k: getattr(member, k)
            for k in ("account_id", "uuid", "nickname", "display_name", "avatar_url", "email")
        }
        return user_entity(ws.slug, data, groups)

    def _group_entity(self, ws: Workspace, group: BitbucketGroup, users: list[str]) -> BuiltEntity:
        return group_entity(ws.slug, group.slug, group.name, users, self.mapping)


def people_calls_left(session: Session, workspace: str, settings: Settings) -> int:
    """The next scheduled people sync's cap: `BBSYNC_PEOPLE_SHARE` of the window per run,
    never above what people syncs left of it in the current window (members and groups are
    read whatever the cap; the permissions walk stops when it is spent)."""
    return run_calls_left(
        session,
        workspace,
        KIND,
        settings,
        share=settings.people_share,
        interval_seconds=settings.members_interval_seconds,
        floor=1,
    )


@dataclass(frozen=True)
class PeopleCoverage:
    repositories: int
    never_read: int
    oldest: datetime | None  # the oldest full read of a repository's permissions
    sweep_hours: float  # a full pass over every repository's permissions at the current share


def people_coverage(session: Session, workspace: str, settings: Settings) -> PeopleCoverage:
    """How far behind the permissions walk is, and how long a full sweep takes at the share.

    A sweep's cost comes from the last run that read permissions (calls per repository read:
    ~1/40 with an admin credential, 2 without); what members and groups cost each run is
    taken off the share first."""
    ws = session.scalars(select(Workspace).where(Workspace.slug == workspace)).first()
    live = (Repository.workspace_id == (ws.id if ws else -1), Repository.deleted_at.is_(None))
    total, never, oldest = session.execute(
        select(
            func.count(),
            func.count().filter(Repository.permissions_read_at.is_(None)),
            func.min(Repository.permissions_read_at),
        ).where(*live)
    ).one()
    per_repository, overhead = float(PER_REPOSITORY_CALLS), 0.0
    last = session.scalars(
        select(SyncRun)
        .where(SyncRun.kind == KIND, SyncRun.workspace == workspace)
        .order_by(SyncRun.started_at.desc())
        .limit(20)
    ).all()
    for past in last:
        counts = past.counts or {}
        read = int(counts.get("permission_repositories") or 0)
        if read:
            per_repository = int(counts.get("permission_calls") or 0) / read
            overhead = max(0, (past.api_calls or 0) - int(counts.get("permission_calls") or 0))
            break
    per_hour = share_per_hour(settings, settings.people_share)
    per_hour -= overhead * 3600 / settings.members_interval_seconds
    sweep = total * per_repository / per_hour if per_hour > 0 else float("inf")
    return PeopleCoverage(int(total), int(never), oldest, sweep)
