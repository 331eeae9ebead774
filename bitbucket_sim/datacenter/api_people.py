"""Users, groups and project / repository permissions (the latter need admin rights)."""

from __future__ import annotations

from flask import Blueprint, Response, request

from bitbucket_sim.api.context import current_sim, json_response, origin
from bitbucket_sim.datacenter.errors import NO_USER, dc_bad_request, dc_not_found
from bitbucket_sim.datacenter.guards import require_admin, require_admin_read
from bitbucket_sim.datacenter.lookup import find_project, find_repo
from bitbucket_sim.datacenter.paging import dc_state, name_filter, paged
from bitbucket_sim.datacenter.render import (
    DC_PERMISSIONS,
    detailed_user_json,
    group_json,
    user_json,
)
from bitbucket_sim.model import Account, Workspace

blueprint = Blueprint("dc_people", __name__)


def _members(ws: Workspace, wanted: str) -> list[Account]:
    accounts = [
        a
        for a in ws.members
        if wanted in a.nickname.lower()
        or wanted in a.display_name.lower()
        or wanted in a.email.lower()
    ]
    return sorted(accounts, key=lambda a: a.nickname)


@blueprint.get("/users")
def list_users() -> Response:
    """Every licensed user, by username; `?filter=` on username, name or email."""
    sim, dc, base = current_sim(), dc_state(), origin()
    return paged(_members(sim.workspace, name_filter()), lambda a: user_json(base, dc, a))


@blueprint.get("/users/<user_slug>")
def get_user(user_slug: str) -> Response:
    ws = current_sim().workspace
    for account in ws.members:
        if account.nickname == user_slug:
            return json_response(user_json(origin(), dc_state(), account))
    raise dc_not_found(f"User {user_slug} does not exist.", NO_USER)


@blueprint.get("/admin/users")
def admin_users() -> Response:
    require_admin_read()
    sim, dc, base = current_sim(), dc_state(), origin()
    ws = sim.workspace
    return paged(_members(ws, name_filter()), lambda a: detailed_user_json(base, dc, a))


@blueprint.get("/admin/groups")
def admin_groups() -> Response:
    """Every group, by name; `?filter=`."""
    require_admin_read()
    ws = current_sim().workspace
    wanted = name_filter()
    groups = sorted((g for g in ws.groups.values() if wanted in g.slug), key=lambda g: g.slug)
    return paged(groups, group_json)


@blueprint.get("/groups")
def group_names() -> Response:
    """A page of group names (plain strings); `?filter=`. Any licensed user may call it."""
    ws = current_sim().workspace
    wanted = name_filter()
    return paged(sorted(g for g in ws.groups if wanted in g), lambda name: name)


@blueprint.get("/admin/groups/more-members")
def group_members() -> Response:
    """Members of the group `?context=`; `?filter=` on them."""
    require_admin_read()
    sim, dc, base = current_sim(), dc_state(), origin()
    ws = sim.workspace
    context = request.args.get("context") or ""
    group = ws.groups.get(context)
    if group is None:
        raise dc_bad_request(f"Group {context!r} does not exist.", "context")
    wanted = name_filter()
    members = [a for a in _members(ws, wanted) if a.account_id in group.member_ids]
    return paged(members, lambda a: detailed_user_json(base, dc, a))


def _project_user_permissions(ws: Workspace) -> list[tuple[Account, str]]:
    """The simulator's rule: the first member administers every project."""
    return [(ws.members[0], "PROJECT_ADMIN")] if ws.member_ids else []


@blueprint.get("/projects/<key>/permissions/users")
def project_user_permissions(key: str) -> Response:
    require_admin()
    sim, dc, base = current_sim(), dc_state(), origin()
    find_project(sim.workspace, key)
    rows = _project_user_permissions(sim.workspace)
    return paged(rows, lambda row: {"user": user_json(base, dc, row[0]), "permission": row[1]})


@blueprint.get("/projects/<key>/permissions/groups")
def project_group_permissions(key: str) -> Response:
    """Every group, with its workspace permission as a project permission."""
    require_admin()
    ws = current_sim().workspace
    find_project(ws, key)
    rows = sorted(ws.groups.values(), key=lambda g: g.slug)
    return paged(
        rows,
        lambda g: {
            "group": {"name": g.slug},
            "permission": "PROJECT_" + DC_PERMISSIONS[g.permission],
        },
    )


@blueprint.get("/projects/<key>/repos/<slug>/permissions/users")
def repo_user_permissions(key: str, slug: str) -> Response:
    require_admin()
    sim, dc, base = current_sim(), dc_state(), origin()
    ws = sim.workspace
    repo = find_repo(ws, key, slug)
    rows = sorted(
        ((ws.accounts[a], p) for a, p in repo.user_permissions.items() if a in ws.accounts),
        key=lambda row: row[0].nickname,
    )
    return paged(
        rows,
        lambda row: {
            "user": user_json(base, dc, row[0]),
            "permission": "REPO_" + DC_PERMISSIONS[row[1]],
        },
    )


@blueprint.get("/projects/<key>/repos/<slug>/permissions/groups")
def repo_group_permissions(key: str, slug: str) -> Response:
    require_admin()
    ws = current_sim().workspace
    repo = find_repo(ws, key, slug)
    rows = sorted((g, p) for g, p in repo.group_permissions.items() if g in ws.groups)
    return paged(
        rows,
        lambda row: {"group": {"name": row[0]}, "permission": "REPO_" + DC_PERMISSIONS[row[1]]},
    )
