"""Live changes to repositories and refs (admin API), each firing its webhook.

Callers hold `Simulator.lock`.
"""

from __future__ import annotations

import re
from typing import Any

from bitbucket_sim import body as fields
from bitbucket_sim.errors import bad_request, not_found
from bitbucket_sim.ids import iso
from bitbucket_sim.model import Account, Commit, Repository, Workspace
from bitbucket_sim.render import project_ref_json
from bitbucket_sim.runtime import Simulator
from bitbucket_sim.webhook_payloads import RefChange

_SLUG = re.compile(r"^[a-z0-9][a-z0-9._-]*$")
_REF_NAME = re.compile(r"^[^\s~^:?*\[\\]+$")
MAX_COMMITS_PER_PUSH = 1000


def slugify(name: str) -> str:
    """Bitbucket's slug for a display name: lowercase, runs of other characters become `-`."""
    return re.sub(r"[^a-z0-9._]+", "-", name.lower()).strip("-")


def resolve_author(ws: Workspace, value: Any, actor: Account) -> tuple[str, str | None]:
    """`(raw, account_id)` for a push author: an account key, `Name <email>`, or the actor."""
    if value is None:
        return f"{actor.display_name} <{actor.email}>", actor.account_id
    if not isinstance(value, str) or not value.strip():
        raise bad_request("author must be a non-empty string")
    account = ws.find_account(value)
    if account is not None:
        return f"{account.display_name} <{account.email}>", account.account_id
    match = re.match(r"^(.*)<([^>]+)>\s*$", value)
    if match is not None:
        email = match.group(2).strip().lower()
        for candidate in ws.accounts.values():
            if candidate.email.lower() == email:
                return value.strip(), candidate.account_id
    return value.strip(), None  # an email linked to no account: no `author.user`


def resolve_ref(repo: Repository, ref: str) -> str | None:
    """The commit hash a branch, tag or (short) hash names."""
    if ref in repo.branches:
        return repo.branches[ref]
    if ref in repo.tags:
        return repo.tags[ref]
    commit = repo.find_commit(ref)
    return commit.hash if commit else None


def _file_changes(body: dict[str, Any]) -> dict[str, bytes | None]:
    raw = body.get("files", {})
    if not isinstance(raw, dict):
        raise bad_request("files must map paths to contents (or null to delete)")
    changes: dict[str, bytes | None] = {}
    for path, content in raw.items():
        parts = path.split("/")
        if not path or path.startswith("/") or any(p in ("", ".", "..") for p in parts):
            raise bad_request(f"Invalid file path {path!r}")
        if content is not None and not isinstance(content, str):
            raise bad_request(f"Content of {path!r} must be a string or null")
        changes[path] = None if content is None else content.encode()
    return changes


def push(sim: Simulator, slug: str, body: dict[str, Any]) -> tuple[Repository, str, Commit]:
    """Push `commits` new commits to a branch (created if missing); fires `repo:push`."""
    ws = sim.workspace
    repo = sim.repository(slug)
    branch = fields.text(body, "branch") or repo.mainbranch
    if not _REF_NAME.match(branch):
        raise bad_request(f"Invalid branch name {branch!r}")
    changes = _file_changes(body)
    message = fields.text(body, "message") or "Update files"
    forced = fields.flag(body, "forced", False)
    count = fields.integer(body, "commits", 1)
    if not 1 <= count <= MAX_COMMITS_PER_PUSH:
        raise bad_request(f"commits must be between 1 and {MAX_COMMITS_PER_PUSH}")
    actor = sim.actor(fields.text(body, "actor"))
    author_raw, author_id = resolve_author(ws, body.get("author"), actor)

    old_hash = repo.branches.get(branch)
    parent = repo.commits[old_hash or repo.branches[repo.mainbranch]]
    if forced and old_hash is not None and parent.parents:
        parent = repo.commits[parent.parents[0]]  # history rewritten: the old head is dropped
    tree = dict(parent.files)
    for path, content in changes.items():
        if content is None:
            tree.pop(path, None)
        else:
            tree[path] = content
    new_commits: list[Commit] = []
    for number in range(1, count + 1):
        text = message if count == 1 else f"{message} ({number}/{count})"
        files = tree if number == count else parent.files
        sha, date = sim.ids.commit_hash(), sim.clock.now()
        commit = Commit(sha, (parent.hash,), date, text, author_raw, author_id, files)
        repo.commits[commit.hash] = commit
        new_commits.append(commit)
        parent = commit
    head = parent
    repo.branches[branch] = head.hash
    if sim.config.push_updates_updated_on:
        repo.updated_on = head.date
    for pr in repo.pullrequests.values():
        if pr.state == "OPEN" and pr.source_branch == branch:
            pr.source_commit, pr.updated_on = head.hash, head.date
    rewritten = forced and old_hash is not None
    change = RefChange("branch", branch, old_hash, head.hash, rewritten, new_commits[::-1])
    sim.events.pushed(repo, [change], actor)
    return repo, branch, head


def create_ref(
    sim: Simulator, slug: str, body: dict[str, Any], kind: str
) -> tuple[Repository, str]:
    """Create a branch or tag at `target` (default: head of the main branch); fires `repo:push`."""
    repo = sim.repository(slug)
    name = fields.required_text(body, "name")
    if not _REF_NAME.match(name):
        raise bad_request(f"Invalid {kind} name {name!r}")
    table = repo.branches if kind == "branch" else repo.tags
    if name in table:
        raise bad_request(f"{kind.capitalize()} {name!r} already exists")
    target = fields.text(body, "target") or repo.mainbranch
    sha = resolve_ref(repo, target)
    if sha is None:
        raise bad_request(f"Unknown target {target!r}")
    table[name] = sha
    actor = sim.actor(fields.text(body, "actor"))
    change = RefChange(kind, name, None, sha)
    sim.events.pushed(repo, [change], actor)
    return repo, name


def delete_ref(sim: Simulator, slug: str, name: str, kind: str, actor_key: str | None) -> str:
    """Delete a branch or tag; fires `repo:push` with `new: null, closed: true`."""
    repo = sim.repository(slug)
    table = repo.branches if kind == "branch" else repo.tags
    if name not in table:
        raise not_found(f"{kind.capitalize()} {name!r} not found")
    if kind == "branch" and name == repo.mainbranch:
        raise bad_request("The main branch cannot be deleted")
    actor = sim.actor(actor_key)
    old_hash = table.pop(name)
    change = RefChange(kind, name, old_hash, None)
    sim.events.pushed(repo, [change], actor)
    return old_hash


def create_repository(sim: Simulator, body: dict[str, Any]) -> Repository:
    """A new repository with one commit; fires `repo:created`."""
    ws = sim.workspace
    name = fields.text(body, "name")
    slug = fields.text(body, "slug") or (slugify(name) if name else None)
    if not slug or not _SLUG.match(slug):
        raise bad_request("A valid slug (or a name to derive it from) is required")
    if slug in ws.repositories:
        raise bad_request("Repository with this Slug and Owner already exists.")
    project_key = fields.text(body, "project_key") or next(iter(ws.projects))
    if project_key not in ws.projects:
        raise bad_request(f"Unknown project {project_key!r}")
    mainbranch = fields.text(body, "mainbranch") or "main"
    actor = sim.actor(fields.text(body, "actor"))
    tree = {"README.md": f"# {name or slug}\n".encode()}
    for path, content in _file_changes(body).items():
        if content is not None:
            tree[path] = content
    now = sim.clock.now()
    raw, author_id = resolve_author(ws, body.get("author"), actor)
    commit = Commit(sim.ids.commit_hash(), (), now, "Initial commit", raw, author_id, tree)
    repo = Repository(
        uuid=sim.ids.uuid(),
        slug=slug,
        name=name or slug,
        description=fields.text(body, "description") or "",
        is_private=fields.flag(body, "is_private", True),
        language=fields.text(body, "language") or "",
        base_size=0,
        created_on=now,
        updated_on=now,
        mainbranch=mainbranch,
        project_key=project_key,
        commits={commit.hash: commit},
        branches={mainbranch: commit.hash},
        catalog_layout="custom",
    )
    ws.repositories[slug] = repo
    sim.events.repository_created(repo, actor)
    return repo


def rename_repository(sim: Simulator, slug: str, body: dict[str, Any]) -> Repository:
    """Change the display name (and optionally the slug); fires `repo:updated`."""
    ws = sim.workspace
    repo = sim.repository(slug)
    name = fields.required_text(body, "name")
    new_slug = fields.text(body, "slug") or repo.slug
    if not _SLUG.match(new_slug):
        raise bad_request(f"Invalid slug {new_slug!r}")
    if new_slug != repo.slug and new_slug in ws.repositories:
        raise bad_request("Repository with this Slug and Owner already exists.")
    changes: dict[str, Any] = {}
    if name != repo.name:
        changes["name"] = {"old": repo.name, "new": name}
    if new_slug != repo.slug:
        changes["full_name"] = {"old": f"{ws.slug}/{repo.slug}", "new": f"{ws.slug}/{new_slug}"}
        changes["slug"] = {"old": repo.slug, "new": new_slug}
        old_slug = repo.slug
        ws.repositories = {
            (new_slug if key == old_slug else key): value for key, value in ws.repositories.items()
        }
    repo.name, repo.slug = name, new_slug
    if changes:
        repo.updated_on = sim.clock.now()
        actor = sim.actor(fields.text(body, "actor"))
        sim.events.repository_updated(repo, actor, changes)
    return repo


def update_repository(sim: Simulator, slug: str, body: dict[str, Any]) -> Repository:
    """Change description, mainbranch, project, privacy or language; fires `repo:updated`."""
    ws = sim.workspace
    repo = sim.repository(slug)
    allowed = {"description", "mainbranch", "project_key", "is_private", "language", "actor"}
    unknown = set(body) - allowed
    if unknown:
        raise bad_request(f"Cannot change {', '.join(sorted(unknown))} here")
    changes: dict[str, Any] = {}
    for key in ("description", "language"):
        value = fields.text(body, key)
        if value is not None and value != getattr(repo, key):
            changes[key] = {"old": getattr(repo, key), "new": value}
            setattr(repo, key, value)
    if "is_private" in body:
        private = fields.flag(body, "is_private", repo.is_private)
        if private != repo.is_private:
            changes["is_private"] = {"old": repo.is_private, "new": private}
            repo.is_private = private
    branch = fields.text(body, "mainbranch")
    if branch is not None and branch != repo.mainbranch:
        if branch not in repo.branches:
            raise bad_request(f"Branch {branch!r} does not exist")
        changes["mainbranch"] = {
            "old": {"type": "branch", "name": repo.mainbranch},
            "new": {"type": "branch", "name": branch},
        }
        repo.mainbranch = branch
    project_key = fields.text(body, "project_key")
    if project_key is not None and project_key != repo.project_key:
        if project_key not in ws.projects:
            raise bad_request(f"Unknown project {project_key!r}")
        old = project_ref_json(sim.public_url, ws, ws.projects[repo.project_key])
        changes["project"] = {
            "old": old,
            "new": project_ref_json(sim.public_url, ws, ws.projects[project_key]),
        }
        repo.project_key = project_key
    if changes:
        repo.updated_on = sim.clock.now()
        actor = sim.actor(fields.text(body, "actor"))
        sim.events.repository_updated(repo, actor, changes)
    return repo


def touch_repository(sim: Simulator, slug: str, actor_key: str | None) -> Repository:
    """Move `updated_on` only; fires `repo:updated` carrying just `changes.updated_on`."""
    repo = sim.repository(slug)
    old, repo.updated_on = repo.updated_on, sim.clock.now()
    changes = {"updated_on": {"old": iso(old), "new": iso(repo.updated_on)}}
    actor = sim.actor(actor_key)
    sim.events.repository_updated(repo, actor, changes)
    return repo


def delete_repository(sim: Simulator, slug: str, actor_key: str | None) -> Repository:
    """Remove a repository and its hooks; fires `repo:deleted` (to its own hooks too)."""
    ws = sim.workspace
    repo = sim.repository(slug)
    actor = sim.actor(actor_key)
    sim.events.repository_deleted(repo, actor)
    del ws.repositories[repo.slug]
    ws.hooks = [hook for hook in ws.hooks if hook.repository_uuid != repo.uuid]
    return repo
