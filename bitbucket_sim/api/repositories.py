"""Repositories, branches and tags."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, request

from bitbucket_sim.api.context import origin, workspace_guard
from bitbucket_sim.api.listing import fielded, paginated
from bitbucket_sim.errors import bad_request, not_found
from bitbucket_sim.model import Repository
from bitbucket_sim.render import ref_json, repository_json
from bitbucket_sim.runtime import Simulator

blueprint = Blueprint("repositories", __name__)

VALID_ROLES = ("member", "contributor", "admin", "owner")


def cached_repository_json(sim: Simulator, base: str, repo: Repository) -> dict[str, Any]:
    """`repository_json`, memoised on everything the object shows (never mutate the result)."""
    project = sim.workspace.projects[repo.project_key]
    signature = (
        repo.slug,
        repo.name,
        repo.description,
        repo.is_private,
        repo.language,
        repo.updated_on,
        repo.mainbranch,
        repo.branches.get(repo.mainbranch),
        project.key,
        project.name,
        sim.workspace.name,
    )
    key = (base, repo.uuid)
    cached = sim.render_cache.get(key)
    if cached is not None and cached[0] == signature:
        return cached[1]
    doc = repository_json(base, sim.workspace, repo)
    sim.render_cache[key] = (signature, doc)
    return doc


@blueprint.get("/2.0/repositories/<workspace>")
@blueprint.get("/2.0/repositories/<workspace>/")
def list_repositories(workspace: str) -> Response:
    """`GET /2.0/repositories/{ws}` with `q`, `sort`, `role`, `fields`, `pagelen`."""
    sim = workspace_guard(workspace)
    base = origin()
    role = request.args.get("role")
    if role is not None and role not in VALID_ROLES:
        raise bad_request(f"Invalid role {role!r}", f"role must be one of {', '.join(VALID_ROLES)}")
    # `role=` narrows to repositories the caller has that role on: the simulated caller
    # administers the whole workspace, so every role sees every repository.
    repos = list(sim.workspace.repositories.values())
    return paginated(repos, lambda repo: cached_repository_json(sim, base, repo))


@blueprint.get("/2.0/repositories/<workspace>/<slug>")
@blueprint.get("/2.0/repositories/<workspace>/<slug>/")
def get_repository(workspace: str, slug: str) -> Response:
    sim = workspace_guard(workspace)
    repo = sim.repository(slug)
    return fielded(repository_json(origin(), sim.workspace, repo))


def _refs(repo: Repository, kind: str) -> list[tuple[str, str, str]]:
    table = repo.branches if kind == "branch" else repo.tags
    return [(name, sha, kind) for name, sha in sorted(table.items())]


def _list_refs(workspace: str, slug: str, kinds: tuple[str, ...]) -> Response:
    sim = workspace_guard(workspace)
    repo = sim.repository(slug)
    ws, base = sim.workspace, origin()
    refs = [ref for kind in kinds for ref in _refs(repo, kind)]
    return paginated(refs, lambda ref: ref_json(base, ws, repo, ref[0], ref[1], ref[2]))


@blueprint.get("/2.0/repositories/<workspace>/<slug>/refs")
@blueprint.get("/2.0/repositories/<workspace>/<slug>/refs/")
def list_refs(workspace: str, slug: str) -> Response:
    return _list_refs(workspace, slug, ("branch", "tag"))


@blueprint.get("/2.0/repositories/<workspace>/<slug>/refs/branches")
@blueprint.get("/2.0/repositories/<workspace>/<slug>/refs/branches/")
def list_branches(workspace: str, slug: str) -> Response:
    return _list_refs(workspace, slug, ("branch",))


@blueprint.get("/2.0/repositories/<workspace>/<slug>/refs/tags")
@blueprint.get("/2.0/repositories/<workspace>/<slug>/refs/tags/")
def list_tags(workspace: str, slug: str) -> Response:
    return _list_refs(workspace, slug, ("tag",))


@blueprint.get("/2.0/repositories/<workspace>/<slug>/refs/branches/<path:name>")
def get_branch(workspace: str, slug: str, name: str) -> Response:
    """A branch with its head commit as `target.hash`."""
    sim = workspace_guard(workspace)
    repo = sim.repository(slug)
    if name not in repo.branches:
        raise not_found(f"Branch {name!r} not found")
    return fielded(ref_json(origin(), sim.workspace, repo, name, repo.branches[name]))


@blueprint.get("/2.0/repositories/<workspace>/<slug>/refs/tags/<path:name>")
def get_tag(workspace: str, slug: str, name: str) -> Response:
    sim = workspace_guard(workspace)
    repo = sim.repository(slug)
    if name not in repo.tags:
        raise not_found(f"Tag {name!r} not found")
    return fielded(ref_json(origin(), sim.workspace, repo, name, repo.tags[name], "tag"))
