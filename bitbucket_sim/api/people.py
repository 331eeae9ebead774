"""Members, permissions and groups."""

from __future__ import annotations

import re

from flask import Blueprint, Response, request

from bitbucket_sim.api.context import json_response, origin, workspace_guard
from bitbucket_sim.api.listing import fielded, paginated
from bitbucket_sim.errors import SimError, not_found
from bitbucket_sim.model import Repository, Workspace
from bitbucket_sim.render_activity import (
    group_v1_json,
    membership_json,
    repository_group_permission_json,
    repository_permission_json,
    repository_user_permission_json,
    workspace_permission_json,
)

blueprint = Blueprint("people", __name__)

REPO = "/2.0/repositories/<workspace>/<slug>"


@blueprint.get("/2.0/workspaces/<workspace>/members")
@blueprint.get("/2.0/workspaces/<workspace>/members/")
def list_members(workspace: str) -> Response:
    """`workspace_membership` objects; users have no `username`."""
    sim = workspace_guard(workspace)
    ws, base = sim.workspace, origin()
    return paginated(list(ws.member_ids), lambda account_id: membership_json(base, ws, account_id))


@blueprint.get("/2.0/workspaces/<workspace>/members/<member>")
def get_member(workspace: str, member: str) -> Response:
    sim = workspace_guard(workspace)
    account = sim.workspace.find_account(member)
    if account is None or account.account_id not in sim.workspace.member_ids:
        raise not_found(f"{member} is not a member of {workspace}")
    return fielded(membership_json(origin(), sim.workspace, account.account_id))


@blueprint.get("/2.0/workspaces/<workspace>/permissions")
@blueprint.get("/2.0/workspaces/<workspace>/permissions/")
def workspace_permissions(workspace: str) -> Response:
    sim = workspace_guard(workspace)
    ws, base = sim.workspace, origin()
    return paginated(list(ws.member_ids), lambda a: workspace_permission_json(base, ws, a))


def _user_permissions(repos: list[Repository]) -> list[tuple[Repository, str, str]]:
    return [
        (repo, account_id, permission)
        for repo in repos
        for account_id, permission in repo.user_permissions.items()
    ]


@blueprint.get("/2.0/workspaces/<workspace>/permissions/repositories")
@blueprint.get("/2.0/workspaces/<workspace>/permissions/repositories/")
def repository_permissions(workspace: str) -> Response:
    """Explicit user permissions on every repository (`repository_permission`)."""
    sim = workspace_guard(workspace)
    ws, base = sim.workspace, origin()
    repos = _named(ws, request.args.get("q") or "")
    if repos is None:
        repos = list(ws.repositories.values())
    rows = _user_permissions(repos)
    return paginated(rows, lambda row: repository_permission_json(base, ws, *row))


_FULL_NAME = re.compile(r'\s*\(?\s*repository\.full_name\s*=\s*"([^"\\]+)"\s*\)?\s*')


def _named(ws: Workspace, query: str) -> list[Repository] | None:
    """The repositories a `repository.full_name="…" OR …` query names, so that only their
    rows are rendered before the query is applied (the same answer, without rendering every
    permission of the workspace for each query); None for any other query."""
    if not query.strip():
        return None
    repos: dict[str, Repository] = {}
    for part in query.split(" OR "):
        match = _FULL_NAME.fullmatch(part)
        if match is None:
            return None
        owner, _, slug = match.group(1).partition("/")
        repo = ws.repositories.get(slug) if owner == ws.slug else None
        if repo is not None:
            repos[repo.slug] = repo
    return list(repos.values())


@blueprint.get("/2.0/workspaces/<workspace>/permissions/repositories/<slug>")
def one_repository_permissions(workspace: str, slug: str) -> Response:
    sim = workspace_guard(workspace)
    ws, base = sim.workspace, origin()
    rows = _user_permissions([sim.repository(slug)])
    return paginated(rows, lambda row: repository_permission_json(base, ws, *row))


@blueprint.get(f"{REPO}/permissions-config/users")
@blueprint.get(f"{REPO}/permissions-config/users/")
def repository_user_permissions(workspace: str, slug: str) -> Response:
    sim = workspace_guard(workspace)
    ws, base = sim.workspace, origin()
    repo = sim.repository(slug)
    rows = list(repo.user_permissions.items())
    return paginated(rows, lambda row: repository_user_permission_json(base, ws, repo, *row))


@blueprint.get(f"{REPO}/permissions-config/groups")
@blueprint.get(f"{REPO}/permissions-config/groups/")
def repository_group_permissions(workspace: str, slug: str) -> Response:
    sim = workspace_guard(workspace)
    ws, base = sim.workspace, origin()
    repo = sim.repository(slug)
    rows = [(ws.groups[g], p) for g, p in repo.group_permissions.items() if g in ws.groups]
    return paginated(rows, lambda row: repository_group_permission_json(base, ws, repo, *row))


@blueprint.get("/1.0/groups/<workspace>")
@blueprint.get("/1.0/groups/<workspace>/")
def groups_v1(workspace: str) -> Response:
    """The 1.0 groups list (a plain JSON list); 410 when `--no-groups-api`."""
    sim = workspace_guard(workspace)
    if not sim.config.groups_api:
        raise SimError(410, "This API is no longer supported.", "Use the 2.0 API instead.")
    ws, base = sim.workspace, origin()
    return json_response([group_v1_json(base, ws, group) for group in ws.groups.values()])
