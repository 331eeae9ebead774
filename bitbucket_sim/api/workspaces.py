"""Workspace, projects, code search and the current user."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, request

from bitbucket_sim.api.context import current_sim, origin, workspace_guard
from bitbucket_sim.api.listing import ListOptions, fielded, paginated
from bitbucket_sim.errors import SimError, bad_request, not_found
from bitbucket_sim.render import (
    account_json,
    commit_ref_json,
    href,
    project_json,
    project_ref_json,
    repo_api,
    repository_ref_json,
    workspace_json,
)
from bitbucket_sim.search import (
    MAX_REACHABLE_RESULTS,
    SearchHit,
    SearchQuery,
    SearchQueryError,
    content_matches,
    find,
    path_segments,
)

blueprint = Blueprint("workspaces", __name__)


@blueprint.get("/2.0/workspaces")
@blueprint.get("/2.0/workspaces/")
def list_workspaces() -> Response:
    sim = current_sim()
    return paginated([sim.workspace], lambda ws: workspace_json(origin(), ws))


@blueprint.get("/2.0/workspaces/<workspace>")
@blueprint.get("/2.0/workspaces/<workspace>/")
def get_workspace(workspace: str) -> Response:
    sim = workspace_guard(workspace)
    return fielded(workspace_json(origin(), sim.workspace))


@blueprint.get("/2.0/workspaces/<workspace>/projects")
@blueprint.get("/2.0/workspaces/<workspace>/projects/")
def list_projects(workspace: str) -> Response:
    sim = workspace_guard(workspace)
    ws, base = sim.workspace, origin()
    return paginated(list(ws.projects.values()), lambda p: project_json(base, ws, p))


@blueprint.get("/2.0/workspaces/<workspace>/projects/<key>")
def get_project(workspace: str, key: str) -> Response:
    sim = workspace_guard(workspace)
    project = sim.workspace.projects.get(key.upper())
    if project is None:
        raise not_found(f"Project {key} not found")
    return fielded(project_json(origin(), sim.workspace, project))


@blueprint.get("/2.0/user")
@blueprint.get("/2.0/user/")
def current_user() -> Response:
    """The calling account (the workspace's first member)."""
    sim = current_sim()
    return fielded(account_json(origin(), sim.actor(None)))


@blueprint.get("/2.0/workspaces/<workspace>/search/code")
def search_code(workspace: str) -> Response:
    """Code search: at most 1,000 results reachable, `size` is the true count."""
    sim = workspace_guard(workspace)
    if not sim.config.code_search:
        raise SimError(
            403,
            "Search is not enabled for this workspace",
            "Code search must be enabled by a workspace administrator.",
        )
    text = request.args.get("search_query")
    if not text or not text.strip():
        raise bad_request("search_query is required")
    try:
        query = SearchQuery.parse(text)
    except SearchQueryError as exc:
        raise bad_request(str(exc)) from exc
    ws, base = sim.workspace, origin()
    hits = list(find(query, list(ws.repositories.values())))

    def render(hit: SearchHit) -> dict[str, Any]:
        count, matches = content_matches(hit, query.terms)
        commit = commit_ref_json(base, ws, hit.repo, hit.commit.hash)
        repository = repository_ref_json(base, ws, hit.repo)
        # Hidden unless asked for (`+values.file.commit.repository.mainbranch.name`…), as
        # Backstage's Bitbucket Cloud provider does.
        repository["slug"] = hit.repo.slug
        repository["mainbranch"] = {"type": "branch", "name": hit.repo.mainbranch}
        repository["project"] = project_ref_json(base, ws, ws.projects[hit.repo.project_key])
        commit["repository"] = repository
        api = repo_api(base, ws, hit.repo)
        return {
            "type": "code_search_result",
            "content_match_count": count,
            "content_matches": matches,
            "path_matches": path_segments(hit, query.terms),
            "file": {
                "path": hit.path,
                "type": "commit_file",
                "commit": commit,
                "links": {"self": href(f"{api}/src/{hit.commit.hash}/{hit.path}")},
            },
        }

    options = ListOptions(
        hidden=(
            "file.commit.repository",
            *(f"file.commit.repository.{extra}" for extra in ("slug", "mainbranch", "project")),
        ),
        reachable=MAX_REACHABLE_RESULTS,
        repeat_items=sim.config.search_repeats_items,
    )
    return paginated(hits, render, options)
