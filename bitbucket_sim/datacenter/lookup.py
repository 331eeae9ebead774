"""Finding projects, repositories, refs and commits named in Data Center URLs."""

from __future__ import annotations

from bitbucket_sim.datacenter.errors import NO_COMMIT, NO_PROJECT, NO_REPOSITORY, dc_not_found
from bitbucket_sim.model import Commit, Project, Repository, Workspace

ZERO_HASH = "0" * 40


def find_project(ws: Workspace, key: str) -> Project:
    """A project by key (case-insensitive), or a Data Center 404."""
    project = ws.projects.get(key) or ws.projects.get(key.upper())
    if project is None:
        raise dc_not_found(f"Project {key} does not exist.", NO_PROJECT)
    return project


def find_repo(ws: Workspace, key: str, slug: str) -> Repository:
    """A repository of project `key` by slug, or a Data Center 404."""
    project = find_project(ws, key)
    repo = ws.repositories.get(slug.lower())
    if repo is None or repo.project_key != project.key:
        raise dc_not_found(f"Repository {project.key}/{slug} does not exist.", NO_REPOSITORY)
    return repo


def resolve_at(repo: Repository, at: str | None) -> tuple[str, Commit]:
    """`(ref id or hash, commit)` for an `at=`/`until=` value; the default branch when empty.

    Accepts `refs/heads/x`, `refs/tags/x`, a bare branch or tag name, and full or abbreviated
    (7+ digits) commit hashes.
    """
    value = (at or "").strip() or f"refs/heads/{repo.mainbranch}"
    sha: str | None = None
    if value.startswith("refs/heads/"):
        sha = repo.branches.get(value[len("refs/heads/") :])
    elif value.startswith("refs/tags/"):
        sha = repo.tags.get(value[len("refs/tags/") :])
    elif value in repo.branches:
        sha = repo.branches[value]
    elif value in repo.tags:
        sha = repo.tags[value]
    else:
        commit = repo.find_commit(value)
        sha = commit.hash if commit else None
    if sha is None or sha not in repo.commits:
        message = f"Commit '{value}' does not exist in repository '{repo.slug}'."
        raise dc_not_found(message, NO_COMMIT)
    return value, repo.commits[sha]


def history(repo: Repository, head: Commit, path: str | None) -> list[Commit]:
    """Commits reachable from `head`, newest first; with `path`, only those that changed it.

    A commit changed `path` when the file differs from every parent's (a root commit: when
    the file exists), which is git's default history simplification for merges.
    """
    seen: set[str] = set()
    stack = [head.hash]
    reachable: list[Commit] = []
    while stack:
        sha = stack.pop()
        if sha in seen or sha not in repo.commits:
            continue
        seen.add(sha)
        commit = repo.commits[sha]
        reachable.append(commit)
        stack.extend(commit.parents)
    reachable.sort(key=lambda c: (c.date, c.hash), reverse=True)
    if not path:
        return reachable
    return [commit for commit in reachable if _touches(repo, commit, path)]


def _touches(repo: Repository, commit: Commit, path: str) -> bool:
    mine = _path_state(commit, path)
    parents = [repo.commits[p] for p in commit.parents if p in repo.commits]
    if not parents:
        return bool(mine)
    return all(_path_state(parent, path) != mine for parent in parents)


def _path_state(commit: Commit, path: str) -> tuple[tuple[str, bytes], ...]:
    """The file at `path`, or every file under the directory `path`."""
    if path in commit.files:
        return ((path, commit.files[path]),)
    prefix = path.rstrip("/") + "/"
    return tuple(sorted((p, data) for p, data in commit.files.items() if p.startswith(prefix)))
