"""Projects, repositories, refs, raw files, file lists and commits (`/rest/api/latest/...`)."""

from __future__ import annotations

import hashlib
from email.utils import format_datetime

from flask import Blueprint, Response, request

from bitbucket_sim.api.context import current_sim, json_response, origin
from bitbucket_sim.api.source import etag_matches
from bitbucket_sim.datacenter.errors import NO_PATH, DcError, dc_not_found
from bitbucket_sim.datacenter.lookup import find_project, find_repo, history, resolve_at
from bitbucket_sim.datacenter.paging import dc_state, name_filter, paged
from bitbucket_sim.datacenter.render import commit_json, project_json, ref_json, repository_json
from bitbucket_sim.model import Repository

blueprint = Blueprint("dc_repos", __name__)
REPO = "/projects/<key>/repos/<slug>"


@blueprint.get("/projects")
def list_projects() -> Response:
    """Every project, by key; `?name=` filters on the name."""
    sim, dc = current_sim(), dc_state()
    wanted = name_filter("name")
    projects = sorted(
        (p for p in sim.workspace.projects.values() if wanted in p.name.lower()),
        key=lambda p: p.key,
    )
    base = origin()
    return paged(projects, lambda p: project_json(base, dc, p))


@blueprint.get("/projects/<key>")
def get_project(key: str) -> Response:
    sim = current_sim()
    return json_response(project_json(origin(), dc_state(), find_project(sim.workspace, key)))


def _repos_page(repos: list[Repository]) -> Response:
    sim, dc, base = current_sim(), dc_state(), origin()
    ws = sim.workspace
    return paged(repos, lambda repo: repository_json(base, dc, ws, repo))


@blueprint.get("/projects/<key>/repos")
def list_project_repos(key: str) -> Response:
    """The project's repositories, by name."""
    ws = current_sim().workspace
    project = find_project(ws, key)
    repos = [r for r in ws.repositories.values() if r.project_key == project.key]
    return _repos_page(sorted(repos, key=lambda r: (r.name.lower(), r.slug)))


@blueprint.get("/repos")
def list_all_repos() -> Response:
    """Every visible repository, by project key then name; `?name=`, `?projectname=`."""
    ws = current_sim().workspace
    name, project_name = name_filter("name"), name_filter("projectname")
    repos = [
        r
        for r in ws.repositories.values()
        if name in r.name.lower() and project_name in ws.projects[r.project_key].name.lower()
    ]
    repos.sort(key=lambda r: (r.project_key, r.name.lower(), r.slug))
    return _repos_page(repos)


@blueprint.get(REPO)
def get_repo(key: str, slug: str) -> Response:
    sim = current_sim()
    repo = find_repo(sim.workspace, key, slug)
    return json_response(repository_json(origin(), dc_state(), sim.workspace, repo))


def _default_branch(key: str, slug: str) -> Response:
    repo = find_repo(current_sim().workspace, key, slug)
    return json_response(ref_json(repo, repo.mainbranch, repo.branches[repo.mainbranch]))


@blueprint.get(f"{REPO}/default-branch")
def default_branch(key: str, slug: str) -> Response:
    return _default_branch(key, slug)


@blueprint.get(f"{REPO}/branches/default")
def legacy_default_branch(key: str, slug: str) -> Response:
    """The older (deprecated) form; 404 with `--no-legacy-default-branch`."""
    if not current_sim().config.legacy_default_branch:
        raise dc_not_found("Resource not found")
    return _default_branch(key, slug)


def _refs(repo: Repository, kind: str) -> Response:
    table = repo.branches if kind == "BRANCH" else repo.tags
    wanted = name_filter("filterText")
    names = [name for name in table if wanted in name.lower()]
    if request.args.get("orderBy", "").upper() == "MODIFICATION":
        names.sort(key=lambda n: (repo.commits[table[n]].date, n), reverse=True)
    else:
        names.sort()
    return paged(names, lambda name: ref_json(repo, name, table[name], kind))


@blueprint.get(f"{REPO}/branches")
def branches(key: str, slug: str) -> Response:
    """Branches with `latestCommit`; `?filterText=`, `?orderBy=ALPHABETICAL|MODIFICATION`."""
    return _refs(find_repo(current_sim().workspace, key, slug), "BRANCH")


@blueprint.get(f"{REPO}/tags")
def tags(key: str, slug: str) -> Response:
    return _refs(find_repo(current_sim().workspace, key, slug), "TAG")


@blueprint.get(f"{REPO}/raw/<path:path>")
def raw(key: str, slug: str, path: str) -> Response:
    """The file's bytes at `?at=` (default branch when absent); 404 when absent there."""
    sim = current_sim()
    repo = find_repo(sim.workspace, key, slug)
    at, commit = resolve_at(repo, request.args.get("at"))
    data = commit.files.get(path.strip("/"))
    if data is None:
        message = f'The path "{path}" does not exist at revision "{at}"'
        raise DcError(404, message, NO_PATH)
    etag = '"' + hashlib.sha1(data).hexdigest() + '"'
    if sim.config.raw_etag and etag_matches(request.headers.get("If-None-Match"), etag):
        response = Response(status=304)
    else:
        try:
            data.decode("utf-8")
            content_type = "text/plain;charset=UTF-8"
        except UnicodeDecodeError:
            content_type = "application/octet-stream"
        response = Response(data, content_type=content_type)
    if sim.config.raw_etag:
        response.headers["ETag"] = etag
        response.headers["Last-Modified"] = format_datetime(commit.date, usegmt=True)
    return response


@blueprint.get(f"{REPO}/files")
@blueprint.get(f"{REPO}/files/<path:path>")
def files(key: str, slug: str, path: str = "") -> Response:
    """Paths of every file under `path` at `?at=` (a paged list of strings)."""
    repo = find_repo(current_sim().workspace, key, slug)
    _, commit = resolve_at(repo, request.args.get("at"))
    prefix = path.strip("/") + "/" if path.strip("/") else ""
    found = sorted(p[len(prefix) :] for p in commit.files if p.startswith(prefix))
    return paged(found, lambda p: p)


@blueprint.get(f"{REPO}/commits")
def commits(key: str, slug: str) -> Response:
    """Commits reachable from `?until=` (default branch), newest first; `?path=` keeps only
    those that changed it (`?limit=1` gives the last-modified commit)."""
    sim, dc = current_sim(), dc_state()
    repo = find_repo(sim.workspace, key, slug)
    _, head = resolve_at(repo, request.args.get("until"))
    found = history(repo, head, (request.args.get("path") or "").strip("/") or None)
    since = request.args.get("since")
    if since:
        _, stop = resolve_at(repo, since)
        excluded = {c.hash for c in history(repo, stop, None)}
        found = [c for c in found if c.hash not in excluded]
    base, ws = origin(), sim.workspace
    return paged(found, lambda commit: commit_json(base, dc, ws, commit))


@blueprint.get(f"{REPO}/commits/<commit_id>")
def commit(key: str, slug: str, commit_id: str) -> Response:
    sim = current_sim()
    repo = find_repo(sim.workspace, key, slug)
    _, found = resolve_at(repo, commit_id)
    return json_response(commit_json(origin(), dc_state(), sim.workspace, found))
