"""Raw file contents and directory listings: `GET .../src/{commit_or_branch}/{path}`."""

from __future__ import annotations

import hashlib
from typing import Any
from urllib.parse import quote

from flask import Blueprint, Response, request

from bitbucket_sim.api.context import origin, workspace_guard
from bitbucket_sim.api.listing import fielded, paginated
from bitbucket_sim.errors import not_found
from bitbucket_sim.model import Commit, Repository, Workspace
from bitbucket_sim.render import commit_ref_json, href, repo_api

blueprint = Blueprint("source", __name__)


def content_etag(data: bytes) -> str:
    """The ETag of file contents: it follows the bytes, not the commit."""
    return '"' + hashlib.sha1(data).hexdigest() + '"'


def etag_matches(header: str | None, etag: str) -> bool:
    """Whether an `If-None-Match` header names `etag` (weak or strong) or is `*`."""
    if not header:
        return False
    bare = etag.strip('"')
    for candidate in header.split(","):
        value = candidate.strip()
        if value == "*":
            return True
        if value.startswith("W/"):
            value = value[2:]
        if value.strip('"') == bare:
            return True
    return False


def split_ref(repo: Repository, rest: str) -> tuple[Commit, str]:
    """`(commit, path)` from `{commit_or_branch}/{path}`; branch names may contain slashes."""
    names = [
        name for name in (*repo.branches, *repo.tags) if rest == name or rest.startswith(name + "/")
    ]
    if names:
        name = max(names, key=len)
        sha = repo.branches.get(name) or repo.tags[name]
        return repo.commits[sha], rest[len(name) + 1 :]
    ref, _, path = rest.partition("/")
    commit = repo.find_commit(ref)
    if commit is None:
        raise not_found(f"Commit {ref!r} not found")
    return commit, path


def _src_url(base: str, ws: Workspace, repo: Repository, sha: str, path: str) -> str:
    return f"{repo_api(base, ws, repo)}/src/{sha}/{quote(path)}"


def _file_entry(base: str, ws: Workspace, repo: Repository, commit: Commit, path: str) -> Any:
    url = _src_url(base, ws, repo, commit.hash, path)
    return {
        "type": "commit_file",
        "path": path,
        "commit": commit_ref_json(base, ws, repo, commit.hash),
        "attributes": [],
        "escaped_path": path,
        "size": len(commit.files[path]),
        "mimetype": None,
        "links": {
            "self": href(url),
            "meta": href(f"{url}?format=meta"),
            "history": href(f"{repo_api(base, ws, repo)}/filehistory/{commit.hash}/{quote(path)}"),
        },
    }


def _directory_entry(base: str, ws: Workspace, repo: Repository, commit: Commit, path: str) -> Any:
    url = _src_url(base, ws, repo, commit.hash, path) + "/"
    return {
        "type": "commit_directory",
        "path": path,
        "commit": commit_ref_json(base, ws, repo, commit.hash),
        "links": {"self": href(url), "meta": href(f"{url}?format=meta")},
    }


def _children(commit: Commit, directory: str) -> list[tuple[str, bool]]:
    prefix = directory + "/" if directory else ""
    entries: dict[str, bool] = {}
    for path in commit.files:
        if not path.startswith(prefix):
            continue
        head, sep, _ = path[len(prefix) :].partition("/")
        entries[prefix + head] = bool(sep)
    return sorted(entries.items())


def _serve(workspace: str, slug: str, rest: str, wants_directory: bool) -> Response:
    sim = workspace_guard(workspace)
    ws, base = sim.workspace, origin()
    repo = sim.repository(slug)
    commit, path = split_ref(repo, rest) if rest else (repo.head, "")
    path = path.strip("/")
    meta = request.args.get("format") == "meta"
    if path in commit.files and not wants_directory:
        if meta:
            return fielded(_file_entry(base, ws, repo, commit, path))
        return _raw_file(commit.files[path])
    is_directory = path == "" or any(p.startswith(path + "/") for p in commit.files)
    if not is_directory:
        raise not_found(f"No such file or directory: {path}")
    if meta:
        return fielded(_directory_entry(base, ws, repo, commit, path))
    children = _children(commit, path)

    def render(entry: tuple[str, bool]) -> Any:
        child, directory = entry
        if directory:
            return _directory_entry(base, ws, repo, commit, child)
        return _file_entry(base, ws, repo, commit, child)

    return paginated(children, render)


def _raw_file(data: bytes) -> Response:
    etag = content_etag(data)
    if etag_matches(request.headers.get("If-None-Match"), etag):
        response = Response(status=304)
    else:
        try:
            data.decode("utf-8")
            content_type = "text/plain"
        except UnicodeDecodeError:
            content_type = "application/octet-stream"
        response = Response(data, content_type=content_type)
    response.headers["ETag"] = etag
    response.headers["Cache-Control"] = "max-age=900"
    return response


@blueprint.get("/2.0/repositories/<workspace>/<slug>/src")
@blueprint.get("/2.0/repositories/<workspace>/<slug>/src/")
def source_root(workspace: str, slug: str) -> Response:
    """The root of the main branch head."""
    return _serve(workspace, slug, "", True)


@blueprint.get("/2.0/repositories/<workspace>/<slug>/src/<path:rest>")
def source(workspace: str, slug: str, rest: str) -> Response:
    """A raw file, or a listing when the path is a directory."""
    return _serve(workspace, slug, rest, request.path.endswith("/"))
