"""JSON shapes of workspaces, accounts, projects, repositories, refs and commits.

Every function takes `base`, the simulator's own origin (e.g. `http://127.0.0.1:5000`): API
links point there, `html` links point at bitbucket.org as on the real service.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from bitbucket_sim.ids import iso, short_hash
from bitbucket_sim.model import Account, Commit, Project, Repository, Workspace

HTML = "https://bitbucket.org"
Json = dict[str, Any]


def href(url: str) -> dict[str, str]:
    return {"href": url}


def enc(value: str) -> str:
    """URL-encode a path segment (UUIDs become `%7B…%7D`)."""
    return quote(value, safe="")


def account_json(base: str, account: Account) -> Json:
    """A user: no `username`, keyed by `account_id` and `uuid`."""
    initials = "".join(part[0] for part in account.display_name.split()[:2]).upper()
    return {
        "type": "user",
        "display_name": account.display_name,
        "uuid": account.uuid,
        "account_id": account.account_id,
        "nickname": account.nickname,
        "links": {
            "self": href(f"{base}/2.0/users/{enc(account.uuid)}"),
            "avatar": href(
                "https://avatar-management--avatars.us-west-2.prod.public.atl-paas.net/"
                f"initials/{initials}-0.png"
            ),
            "html": href(f"{HTML}/{enc(account.uuid)}/"),
        },
    }


def workspace_ref_json(base: str, ws: Workspace) -> Json:
    return {
        "type": "workspace",
        "uuid": ws.uuid,
        "slug": ws.slug,
        "name": ws.name,
        "links": {
            "self": href(f"{base}/2.0/workspaces/{ws.slug}"),
            "html": href(f"{HTML}/{ws.slug}/"),
            "avatar": href(f"{HTML}/workspaces/{ws.slug}/avatar/"),
        },
    }


def workspace_json(base: str, ws: Workspace) -> Json:
    """The full workspace object."""
    doc = workspace_ref_json(base, ws)
    doc["links"].update(
        {
            "members": href(f"{base}/2.0/workspaces/{ws.slug}/members"),
            "projects": href(f"{base}/2.0/workspaces/{ws.slug}/projects"),
            "repositories": href(f"{base}/2.0/repositories/{ws.slug}"),
            "hooks": href(f"{base}/2.0/workspaces/{ws.slug}/hooks"),
        }
    )
    doc.update({"is_private": True, "created_on": iso(ws.created_on), "updated_on": None})
    return doc


def team_json(base: str, ws: Workspace) -> Json:
    """The workspace as a repository `owner` (type `team`)."""
    return {
        "type": "team",
        "display_name": ws.name,
        "uuid": ws.uuid,
        "username": ws.slug,
        "links": {
            "self": href(f"{base}/2.0/workspaces/{enc(ws.uuid)}"),
            "html": href(f"{HTML}/{enc(ws.uuid)}/"),
            "avatar": href(f"{HTML}/account/{ws.slug}/avatar/"),
        },
    }


def project_ref_json(base: str, ws: Workspace, project: Project) -> Json:
    return {
        "type": "project",
        "key": project.key,
        "uuid": project.uuid,
        "name": project.name,
        "links": {
            "self": href(f"{base}/2.0/workspaces/{ws.slug}/projects/{project.key}"),
            "html": href(f"{HTML}/{ws.slug}/workspace/projects/{project.key}"),
            "avatar": href(f"{HTML}/{ws.slug}/workspace/projects/{project.key}/avatar/32"),
        },
    }


def project_json(base: str, ws: Workspace, project: Project) -> Json:
    """The full project object."""
    doc = project_ref_json(base, ws, project)
    doc.update(
        {
            "description": project.description,
            "is_private": project.is_private,
            "created_on": iso(project.created_on),
            "updated_on": iso(project.updated_on),
            "owner": team_json(base, ws),
            "workspace": workspace_ref_json(base, ws),
            "has_publicly_visible_repos": False,
        }
    )
    return doc


def repo_api(base: str, ws: Workspace, repo: Repository) -> str:
    return f"{base}/2.0/repositories/{ws.slug}/{repo.slug}"


def repository_links(base: str, ws: Workspace, repo: Repository) -> Json:
    api = repo_api(base, ws, repo)
    html = f"{HTML}/{ws.slug}/{repo.slug}"
    return {
        "self": href(api),
        "html": href(html),
        "avatar": href(f"https://bytebucket.org/ravatar/{enc(repo.uuid)}?ts=default"),
        "pullrequests": href(f"{api}/pullrequests"),
        "commits": href(f"{api}/commits"),
        "forks": href(f"{api}/forks"),
        "watchers": href(f"{api}/watchers"),
        "branches": href(f"{api}/refs/branches"),
        "tags": href(f"{api}/refs/tags"),
        "downloads": href(f"{api}/downloads"),
        "source": href(f"{api}/src"),
        "clone": [
            {"name": "https", "href": f"https://bitbucket.org/{ws.slug}/{repo.slug}.git"},
            {"name": "ssh", "href": f"git@bitbucket.org:{ws.slug}/{repo.slug}.git"},
        ],
        "hooks": href(f"{api}/hooks"),
    }


def repository_ref_json(base: str, ws: Workspace, repo: Repository) -> Json:
    """The short repository object embedded in other objects."""
    return {
        "type": "repository",
        "full_name": f"{ws.slug}/{repo.slug}",
        "name": repo.name,
        "uuid": repo.uuid,
        "links": {
            "self": href(repo_api(base, ws, repo)),
            "html": href(f"{HTML}/{ws.slug}/{repo.slug}"),
            "avatar": href(f"https://bytebucket.org/ravatar/{enc(repo.uuid)}?ts=default"),
        },
    }


def repository_json(base: str, ws: Workspace, repo: Repository) -> Json:
    """The repository as `GET /2.0/repositories/...` answers it."""
    project = ws.projects[repo.project_key]
    return {
        "type": "repository",
        "uuid": repo.uuid,
        "full_name": f"{ws.slug}/{repo.slug}",
        "slug": repo.slug,
        "name": repo.name,
        "description": repo.description,
        "scm": "git",
        "website": None,
        "is_private": repo.is_private,
        "fork_policy": "no_public_forks",
        "language": repo.language,
        "size": repo.size,
        "has_issues": False,
        "has_wiki": False,
        "created_on": iso(repo.created_on),
        "updated_on": iso(repo.updated_on),
        "mainbranch": {"type": "branch", "name": repo.mainbranch},
        "project": project_ref_json(base, ws, project),
        "owner": team_json(base, ws),
        "workspace": workspace_ref_json(base, ws),
        "parent": None,
        "override_settings": {"default_merge_strategy": True, "branching_model": True},
        "links": repository_links(base, ws, repo),
    }


def webhook_repository_json(base: str, ws: Workspace, repo: Repository) -> Json:
    """The repository inside webhook payloads: no slug, mainbranch, description or language."""
    project = ws.projects[repo.project_key]
    return {
        "type": "repository",
        "full_name": f"{ws.slug}/{repo.slug}",
        "name": repo.name,
        "uuid": repo.uuid,
        "is_private": repo.is_private,
        "scm": "git",
        "website": None,
        "links": {
            "self": href(repo_api(base, ws, repo)),
            "html": href(f"{HTML}/{ws.slug}/{repo.slug}"),
            "avatar": href(f"https://bytebucket.org/ravatar/{enc(repo.uuid)}?ts=default"),
        },
        "owner": team_json(base, ws),
        "project": project_ref_json(base, ws, project),
        "workspace": workspace_ref_json(base, ws),
    }


def commit_ref_json(
    base: str, ws: Workspace, repo: Repository, sha: str, short: bool = False
) -> Json:
    """`{type: commit, hash, links}`; `short` gives the 12-character form of pull requests."""
    return {
        "type": "commit",
        "hash": short_hash(sha) if short else sha,
        "links": {
            "self": href(f"{repo_api(base, ws, repo)}/commit/{sha}"),
            "html": href(f"{HTML}/{ws.slug}/{repo.slug}/commits/{sha}"),
        },
    }


def author_json(base: str, ws: Workspace, commit: Commit) -> Json:
    """A commit author; `user` only when the email belongs to an account."""
    author: Json = {"type": "author", "raw": commit.author_raw}
    if commit.author_account_id is not None:
        account = ws.accounts.get(commit.author_account_id)
        if account is not None:
            author["user"] = account_json(base, account)
    return author


def commit_json(base: str, ws: Workspace, repo: Repository, commit: Commit) -> Json:
    """The full commit object (branch targets, push payloads)."""
    doc = commit_ref_json(base, ws, repo, commit.hash)
    doc.update(
        {
            "date": iso(commit.date),
            "message": commit.message + "\n",
            "summary": {"type": "rendered", "raw": commit.message + "\n", "markup": "markdown"},
            "author": author_json(base, ws, commit),
            "parents": [commit_ref_json(base, ws, repo, parent) for parent in commit.parents],
            "repository": repository_ref_json(base, ws, repo),
        }
    )
    return doc


def ref_json(
    base: str, ws: Workspace, repo: Repository, name: str, sha: str, kind: str = "branch"
) -> Json:
    """A branch or tag pointing at commit `sha` (its `target`)."""
    commit = repo.commits[sha]
    api = repo_api(base, ws, repo)
    plural = "branches" if kind == "branch" else "tags"
    doc: Json = {
        "type": kind,
        "name": name,
        "target": commit_json(base, ws, repo, commit),
        "links": {
            "self": href(f"{api}/refs/{plural}/{quote(name, safe='/')}"),
            "commits": href(f"{api}/commits/{quote(name, safe='')}"),
            "html": href(f"{HTML}/{ws.slug}/{repo.slug}/branch/{quote(name, safe='/')}"),
        },
    }
    if kind == "branch":
        doc["merge_strategies"] = ["merge_commit", "squash", "fast_forward"]
        doc["default_merge_strategy"] = "merge_commit"
    else:
        doc.update({"message": None, "date": None, "tagger": None})
    return doc
