"""`/_sim/repos/...`: change repositories, refs, pull requests, statuses and pipelines.

Each call answers with the changed object and fires the matching webhook.
"""

from __future__ import annotations

from flask import Blueprint, Response, request

from bitbucket_sim import activity_changes, repo_changes
from bitbucket_sim.api.context import current_sim, json_response, origin, request_body
from bitbucket_sim.body import text
from bitbucket_sim.errors import not_found
from bitbucket_sim.render import commit_json, ref_json, repository_json
from bitbucket_sim.render_activity import pipeline_json, pullrequest_json, status_json

blueprint = Blueprint("admin_repos", __name__, url_prefix="/_sim/repos")


def _repository_response(slug: str, status: int = 200) -> Response:
    sim = current_sim()
    repo = sim.repository(slug)
    return json_response(repository_json(origin(), sim.workspace, repo), status)


@blueprint.post("")
def create_repository() -> Response:
    """`{name?, slug?, project_key?, description?, is_private?, mainbranch?, files?}`."""
    sim = current_sim()
    repo = repo_changes.create_repository(sim, request_body())
    return _repository_response(repo.slug, 201)


@blueprint.post("/<slug>/push")
def push(slug: str) -> Response:
    """`{branch?, files?, message?, author?, forced?, commits?}` → the new head commit."""
    sim = current_sim()
    repo, branch, head = repo_changes.push(sim, slug, request_body())
    doc = commit_json(origin(), sim.workspace, repo, head)
    doc["branch"] = branch
    return json_response(doc, 201)


@blueprint.delete("/<slug>/permissions/users/<account_id>")
def delete_user_permission(slug: str, account_id: str) -> Response:
    """Take one user's explicit permission on a repository away (no webhook: Bitbucket sends
    none for permission changes)."""
    repo = current_sim().repository(slug)
    permission = repo.user_permissions.pop(account_id, None)
    if permission is None:
        raise not_found(f"{account_id} has no explicit permission on {slug}")
    return json_response({"account_id": account_id, "permission": permission, "deleted": True})


@blueprint.post("/<slug>/branches")
def create_branch(slug: str) -> Response:
    """`{name, target?}` → the new branch."""
    sim = current_sim()
    repo, name = repo_changes.create_ref(sim, slug, request_body(), "branch")
    return json_response(ref_json(origin(), sim.workspace, repo, name, repo.branches[name]), 201)


@blueprint.delete("/<slug>/branches/<path:name>")
def delete_branch(slug: str, name: str) -> Response:
    sim = current_sim()
    old = repo_changes.delete_ref(sim, slug, name, "branch", request.args.get("actor"))
    return json_response({"type": "branch", "name": name, "deleted": True, "old_hash": old})


@blueprint.post("/<slug>/tags")
def create_tag(slug: str) -> Response:
    """`{name, target?}` → the new tag (a `repo:push` with `new.type: tag`)."""
    sim = current_sim()
    repo, name = repo_changes.create_ref(sim, slug, request_body(), "tag")
    doc = ref_json(origin(), sim.workspace, repo, name, repo.tags[name], "tag")
    return json_response(doc, 201)


@blueprint.delete("/<slug>/tags/<path:name>")
def delete_tag(slug: str, name: str) -> Response:
    sim = current_sim()
    old = repo_changes.delete_ref(sim, slug, name, "tag", request.args.get("actor"))
    return json_response({"type": "tag", "name": name, "deleted": True, "old_hash": old})


@blueprint.post("/<slug>/rename")
def rename(slug: str) -> Response:
    """`{name, slug?}`; a new slug makes the old one 404."""
    sim = current_sim()
    repo = repo_changes.rename_repository(sim, slug, request_body())
    return _repository_response(repo.slug)


@blueprint.patch("/<slug>")
def update(slug: str) -> Response:
    """`{description?, mainbranch?, project_key?, is_private?, language?}`."""
    sim = current_sim()
    repo = repo_changes.update_repository(sim, slug, request_body())
    return _repository_response(repo.slug)


@blueprint.post("/<slug>/touch")
def touch(slug: str) -> Response:
    """Move `updated_on` alone (a `repo:updated` carrying only `changes.updated_on`)."""
    sim = current_sim()
    repo = repo_changes.touch_repository(sim, slug, text(request_body(), "actor"))
    return _repository_response(repo.slug)


@blueprint.delete("/<slug>")
def delete(slug: str) -> Response:
    sim = current_sim()
    repo = sim.repository(slug)
    doc = repository_json(origin(), sim.workspace, repo)
    repo_changes.delete_repository(sim, slug, request.args.get("actor"))
    return json_response(doc)


@blueprint.post("/<slug>/pullrequests")
def open_pullrequest(slug: str) -> Response:
    """`{source, destination?, title?, description?, author?, reviewers?: [account_id]}`."""
    sim = current_sim()
    pr = activity_changes.open_pullrequest(sim, slug, request_body())
    repo = sim.repository(slug)
    return json_response(pullrequest_json(origin(), sim.workspace, repo, pr), 201)


@blueprint.post("/<slug>/pullrequests/<int:pr_id>/<action>")
def act_on_pullrequest(slug: str, pr_id: int, action: str) -> Response:
    """update | approve | unapprove | merge | decline (`{actor?}` or `{user?}`)."""
    sim = current_sim()
    pr = activity_changes.act_on_pullrequest(sim, slug, pr_id, action, request_body())
    repo = sim.repository(slug)
    return json_response(pullrequest_json(origin(), sim.workspace, repo, pr))


@blueprint.post("/<slug>/statuses")
def set_status(slug: str) -> Response:
    """`{commit?, key, state, name?, refname?, url?, description?}`."""
    sim = current_sim()
    repo, status, created = activity_changes.set_commit_status(sim, slug, request_body())
    return json_response(
        status_json(origin(), sim.workspace, repo, status), 201 if created else 200
    )


@blueprint.post("/<slug>/pipelines/<key>/start")
def start_pipeline(slug: str, key: str) -> Response:
    sim = current_sim()
    pipeline = activity_changes.advance_pipeline(sim, slug, key, None)
    repo = sim.repository(slug)
    return json_response(pipeline_json(origin(), sim.workspace, repo, pipeline))


@blueprint.post("/<slug>/pipelines/<key>/finish")
def finish_pipeline(slug: str, key: str) -> Response:
    """`{result: SUCCESSFUL|FAILED|ERROR|STOPPED|EXPIRED}` (default SUCCESSFUL)."""
    sim = current_sim()
    result = text(request_body(), "result") or "SUCCESSFUL"
    pipeline = activity_changes.advance_pipeline(sim, slug, key, result)
    repo = sim.repository(slug)
    return json_response(pipeline_json(origin(), sim.workspace, repo, pipeline))
