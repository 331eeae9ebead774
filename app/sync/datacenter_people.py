"""People and access of a Bitbucket Data Center source, with Cloud's machinery
(`app.sync.people.PeopleSync`: the same tables, audit rows, guards and `/api/permissions`).

Users and groups are server-wide in Data Center, so they belong to one bbsync workspace named
after the server (`{host}`, next to the project workspaces `{host}/{KEY}`): users become
`workspace_members` (account id: the user's numeric id, which survives a rename; nickname:
the username), groups `bitbucket_groups` with their members. Project and repository grants,
for users and groups, are folded into each repository's effective permission (the highest of
the project's and the repository's) in `repository_permissions`, as Cloud's are.

The users, groups and permission endpoints may be refused to the credential (401/403): what
could not be read is kept as it was, with a warning: a refusal never revokes anything.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.bitbucket.datacenter import DataCenterClient
from app.catalog.datacenter_entities import DataCenterEntityBuilder
from app.catalog.entities import BuiltEntity
from app.config import Settings
from app.datacenter_settings import DataCenterSettings
from app.models import BitbucketGroup, Repository, SyncRun, Workspace, WorkspaceMember, utcnow
from app.sync.datacenter import stable_uuid
from app.sync.people import KIND, PeopleSync
from app.sync.repositories import ensure_workspace
from app.sync.runs import recorded_run

log = logging.getLogger(__name__)

RANK = {"read": 1, "write": 2, "admin": 3}


def permission_of(value: Any) -> str | None:
    """`PROJECT_WRITE`, `REPO_ADMIN`, … as Cloud's `read | write | admin`; None otherwise."""
    level = str(value or "").rsplit("_", 1)[-1].lower()
    return level if level in RANK else None


def dc_member(server: DataCenterSettings, user: dict[str, Any]) -> dict[str, Any] | None:
    """A Data Center user in the shape of a workspace member; None when it has no id."""
    if user.get("id") is None or not (user.get("slug") or user.get("name")):
        return None
    username = str(user.get("slug") or user.get("name"))
    return {
        "account_id": str(user["id"]),
        "uuid": stable_uuid(server, "user", user["id"]),
        "nickname": username,
        "display_name": str(user.get("displayName") or username),
        "avatar_url": None,
        "email": user.get("emailAddress") or None,
    }


class DataCenterPeopleSync(PeopleSync):
    def __init__(
        self,
        client: DataCenterClient,
        session: Session,
        commit: Callable[[], None],
        settings: Settings,
        server: DataCenterSettings,
    ) -> None:
        super().__init__(client.calls, session, commit, settings)
        self.dc = client
        self.server = server
        self.builder = DataCenterEntityBuilder(settings, server)

    @property
    def workspace(self) -> str:
        return self.server.host

    def run(self, workspace: str = "") -> SyncRun:
        self.counts = {
            "members": 0,
            "removed_members": 0,
            "groups": "none",
            "permissions": 0,
            "revoked_permissions": 0,
            "entities_written": 0,
            "entities_deleted": 0,
            "warnings": [],
        }
        self.unknown_repositories = set()
        seen_warnings = len(self.dc.warnings)
        run = SyncRun(kind=KIND, workspace=self.workspace)
        with recorded_run(self.session, self.commit, self.client, run, lambda: self.counts):
            ws = ensure_workspace(
                self.session,
                self.client,
                self.workspace,
                {
                    "uuid": stable_uuid(self.server, "server", self.workspace),
                    "name": self.workspace,
                },
            )
            users = self.dc.users()
            refused: list[str | None] = []
            if users is None:
                self.counts["members"] = "unavailable"
            else:
                members = [
                    m for u in users if isinstance(u, dict) if (m := dc_member(self.server, u))
                ]
                refused.append(self._apply_members(ws, members))
            groups = self._dc_groups(ws)
            refused.append(self._apply_groups(ws, groups))
            refused.append(self._apply_permissions(ws))
            self._entities(ws, groups)
            self.counts["warnings"].extend(self.dc.warnings[seen_warnings:])
            run.error = "; ".join(r for r in refused if r) or None
        return run

    # -- fetching ---------------------------------------------------------------------

    def _dc_groups(self, ws: Workspace) -> list[dict[str, Any]] | None:
        listed = self.dc.groups()
        if listed is None:
            self.counts["groups"] = "unavailable"
            return None
        known = {
            g.slug: g
            for g in self.session.scalars(
                select(BitbucketGroup).where(BitbucketGroup.workspace_id == ws.id)
            )
        }
        groups = []
        for item in listed:
            name = item.get("name") if isinstance(item, dict) else None
            if not name:
                continue
            users = self.dc.group_members(str(name))
            if users is None:  # refused: keep the members we knew
                members = list((known[name].members or []) if name in known else [])
            else:
                members = sorted(
                    str(u["id"]) for u in users if isinstance(u, dict) and u.get("id") is not None
                )
            groups.append(
                {"slug": str(name), "name": str(name), "permission": None, "members": members}
            )
        self.counts["groups"] = len(groups)
        return groups

    def _project_workspaces(self) -> list[Workspace]:
        prefix = f"{self.workspace}/"
        return list(
            self.session.scalars(
                select(Workspace).where(Workspace.slug.startswith(prefix, autoescape=True))
            )
        )

    def _repository_workspaces(self, ws: Workspace) -> list[int]:
        return [w.id for w in self._project_workspaces()]

    def _permissions(self, ws: Workspace) -> tuple[dict[tuple[int, str, str], str], set[int]]:
        """Effective grants `{(repository id, user|group, user id or group name): level}`:
        the highest of the project's and the repository's; and the repositories read in full
        (every one whose grants were not refused: the Data Center walk has no share yet)."""
        found: dict[tuple[int, str, str], str] = {}
        read: set[int] = set()
        now = utcnow()

        def grant(repo_id: int, rows: list[dict[str, Any]]) -> None:
            for row in rows:
                level = permission_of(row.get("permission"))
                user, group = row.get("user") or {}, row.get("group") or {}
                if level is None:
                    continue
                if user.get("id") is not None:
                    key = (repo_id, "user", str(user["id"]))
                elif group.get("name"):
                    key = (repo_id, "group", str(group["name"]))
                else:
                    continue
                if RANK[level] > RANK.get(found.get(key, ""), 0):
                    found[key] = level

        for project_ws in self._project_workspaces():
            key = project_ws.slug.split("/", 1)[1]
            repos = list(
                self.session.scalars(
                    select(Repository).where(
                        Repository.workspace_id == project_ws.id, Repository.deleted_at.is_(None)
                    )
                )
            )
            if not repos:
                continue
            users = self.dc.project_permissions(key, "users")
            groups = self.dc.project_permissions(key, "groups") if users is not None else None
            if users is None or groups is None:
                self.unknown_repositories.update(r.id for r in repos)
                continue
            for repo in repos:
                repo_users = self.dc.repository_permissions(key, repo.slug, "users")
                repo_groups = (
                    self.dc.repository_permissions(key, repo.slug, "groups")
                    if repo_users is not None
                    else None
                )
                if repo_users is None or repo_groups is None:
                    self.unknown_repositories.add(repo.id)
                    continue
                grant(repo.id, users + groups + repo_users + repo_groups)
                read.add(repo.id)
                repo.permissions_read_at = now
        return found, read

    # -- entities -----------------------------------------------------------------------

    def _user_name(self, member: WorkspaceMember) -> str:
        return self.builder.user_name(member.nickname, member.account_id)

    def _user_entity(
        self, ws: Workspace, member: WorkspaceMember, groups: list[str]
    ) -> BuiltEntity:
        data = {
            "account_id": member.account_id,
            "nickname": member.nickname,
            "display_name": member.display_name,
            "email": member.email,
        }
        return self.builder.user(ws.slug, data, groups)

    def _group_entity(self, ws: Workspace, group: BitbucketGroup, users: list[str]) -> BuiltEntity:
        return self.builder.team_group(ws.slug, group.slug, users)
