"""Data Center JSON shapes of the shared model: users, projects, repositories, refs, commits."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

from bitbucket_sim.datacenter.state import DcState, hierarchy_id
from bitbucket_sim.model import Account, Commit, Group, Project, Repository, Workspace

Json = dict[str, Any]
DC_PERMISSIONS = {"admin": "ADMIN", "write": "WRITE", "read": "READ"}
_AUTHOR = re.compile(r"^(.*?)\s*<([^>]*)>\s*$")


def millis(moment: datetime) -> int:
    """Data Center's timestamps: milliseconds since the epoch."""
    return int(moment.timestamp() * 1000)


def links(href: str) -> Json:
    return {"self": [{"href": href}]}


def user_json(base: str, dc: DcState, account: Account) -> Json:
    """A user (`ApplicationUser`): `name` and `slug` are the username."""
    return {
        "name": account.nickname,
        "emailAddress": account.email,
        "active": True,
        "displayName": account.display_name,
        "id": dc.ids.of("user", account.account_id),
        "slug": account.nickname,
        "type": "NORMAL",
        "links": links(f"{base}/users/{account.nickname}"),
    }


def detailed_user_json(base: str, dc: DcState, account: Account) -> Json:
    """An admin view of a user (`/admin/users`, `/admin/groups/more-members`)."""
    return {
        **user_json(base, dc, account),
        "directoryName": "Bitbucket Internal Directory",
        "deletable": True,
        "lastAuthenticationTimestamp": millis(account.created_on),
        "mutableDetails": True,
        "mutableGroups": True,
    }


def group_json(group: Group) -> Json:
    return {"name": group.slug, "deletable": True}


def project_json(base: str, dc: DcState, project: Project) -> Json:
    doc: Json = {
        "key": project.key,
        "id": dc.ids.of("project", project.key),
        "name": project.name,
    }
    if project.description:
        doc["description"] = project.description
    doc.update(
        {
            "public": not project.is_private,
            "type": "NORMAL",
            "links": links(f"{base}/projects/{project.key}"),
        }
    )
    return doc


def repository_json(base: str, dc: DcState, ws: Workspace, repo: Repository) -> Json:
    project = ws.projects[repo.project_key]
    key = project.key.lower()
    host = urlsplit(base).hostname or "localhost"
    doc: Json = {
        "slug": repo.slug,
        "id": dc.ids.of("repo", repo.uuid),
        "name": repo.name,
    }
    if repo.description:
        doc["description"] = repo.description
    doc.update(
        {
            "hierarchyId": hierarchy_id(repo.uuid),
            "scmId": "git",
            "state": "AVAILABLE",
            "statusMessage": "Available",
            "forkable": True,
            "project": project_json(base, dc, project),
            "public": not repo.is_private,
            "archived": False,
            **({"defaultBranch": repo.mainbranch} if dc.sim.config.repo_default_branch else {}),
            "links": {
                "clone": [
                    {"href": f"{base}/scm/{key}/{repo.slug}.git", "name": "http"},
                    {"href": f"ssh://git@{host}:7999/{key}/{repo.slug}.git", "name": "ssh"},
                ],
                "self": [{"href": f"{base}/projects/{project.key}/repos/{repo.slug}/browse"}],
            },
        }
    )
    return doc


def ref_json(repo: Repository, name: str, sha: str, kind: str = "BRANCH") -> Json:
    """A branch (`refs/heads/...`, with `isDefault`) or a tag (`refs/tags/...`)."""
    if kind == "TAG":
        return {
            "id": f"refs/tags/{name}",
            "displayId": name,
            "type": "TAG",
            "latestCommit": sha,
            "latestChangeset": sha,
            "hash": None,  # lightweight tags have no tag object
        }
    return {
        "id": f"refs/heads/{name}",
        "displayId": name,
        "type": "BRANCH",
        "latestCommit": sha,
        "latestChangeset": sha,
        "isDefault": name == repo.mainbranch,
    }


def person_json(base: str, dc: DcState, ws: Workspace, raw: str, account_id: str | None) -> Json:
    """A commit author: the linked user, or just `{name, emailAddress}`."""
    account = ws.accounts.get(account_id) if account_id else None
    if account is not None:
        return user_json(base, dc, account)
    match = _AUTHOR.match(raw)
    name, email = (match.group(1), match.group(2)) if match else (raw, "")
    return {"name": name, "emailAddress": email}


def commit_json(base: str, dc: DcState, ws: Workspace, commit: Commit) -> Json:
    person = person_json(base, dc, ws, commit.author_raw, commit.author_account_id)
    stamp = millis(commit.date)
    return {
        "id": commit.hash,
        "displayId": commit.hash[:11],
        "author": person,
        "authorTimestamp": stamp,
        "committer": person,
        "committerTimestamp": stamp,
        "message": commit.message,
        "parents": [{"id": sha, "displayId": sha[:11]} for sha in commit.parents],
    }
