"""Data Center additions to the `/_sim/` admin API (never authenticated or counted).

The shared admin API (push, branches, tags, PRs, statuses, members, repository create /
rename / delete, stats, deliveries) works unchanged and fires Data Center webhooks; these
add what only Data Center has: reviewer "needs work", deleting a pull request, renaming a
project, and pinging a webhook.
"""

from __future__ import annotations

from flask import Blueprint, Response, request

from bitbucket_sim import body as fields
from bitbucket_sim.activity_changes import participant_of
from bitbucket_sim.api.context import current_sim, json_response, origin, request_body
from bitbucket_sim.datacenter.paging import dc_state
from bitbucket_sim.datacenter.render import project_json
from bitbucket_sim.datacenter.render_activity import pullrequest_json
from bitbucket_sim.errors import bad_request, not_found
from bitbucket_sim.model import PullRequest, Repository

blueprint = Blueprint("dc_admin", __name__, url_prefix="/_sim")


def _pullrequest(slug: str, pr_id: int) -> tuple[Repository, PullRequest]:
    repo = current_sim().repository(slug)
    pr = repo.pullrequests.get(pr_id)
    if pr is None:
        raise not_found(f"Pull request {pr_id} not found")
    return repo, pr


@blueprint.post("/repos/<slug>/pullrequests/<int:pr_id>/needs_work")
def needs_work(slug: str, pr_id: int) -> Response:
    """`{actor?}`: the actor marks the pull request "needs work" (the needs-work event)."""
    sim = current_sim()
    repo, pr = _pullrequest(slug, pr_id)
    if pr.state != "OPEN":
        raise bad_request(f"Pull request {pr_id} is {pr.state}, not OPEN")
    body = request_body()
    actor = sim.actor(fields.text(body, "actor") or fields.text(body, "user"))
    previous = {"participants": {p.account_id: (p.approved, p.state) for p in pr.participants}}
    participant = participant_of(pr, actor)
    participant.approved, participant.state = False, "changes_requested"
    participant.participated_on = pr.updated_on = sim.clock.now()
    sim.events.pullrequest_changed("needs_work", repo, pr, actor, None, previous)
    return json_response(pullrequest_json(origin(), dc_state(), sim.workspace, repo, pr))


@blueprint.delete("/repos/<slug>/pullrequests/<int:pr_id>")
def delete_pullrequest(slug: str, pr_id: int) -> Response:
    """Delete a pull request (`pr:deleted`); `?actor=` names who did."""
    sim = current_sim()
    repo, pr = _pullrequest(slug, pr_id)
    actor = sim.actor(request.args.get("actor"))
    doc = pullrequest_json(origin(), dc_state(), sim.workspace, repo, pr)
    sim.events.pullrequest_changed("delete", repo, pr, actor)
    del repo.pullrequests[pr_id]
    return json_response(doc)


@blueprint.patch("/projects/<key>")
def modify_project(key: str) -> Response:
    """`{name?, description?, actor?}`; a new name fires the project-modified event."""
    sim, dc = current_sim(), dc_state()
    project = sim.workspace.projects.get(key)
    if project is None:
        raise not_found(f"Project {key} not found")
    body = request_body()
    old_name = project.name
    project.name = fields.text(body, "name") or project.name
    project.description = fields.text(body, "description", project.description) or ""
    project.updated_on = sim.clock.now()
    if project.name != old_name:
        actor = sim.actor(fields.text(body, "actor"))
        dc.events.project_modified(project, old_name, actor)
    return json_response(project_json(origin(), dc, project))


@blueprint.post("/hooks/<hook_id>/ping")
def ping(hook_id: str) -> Response:
    """Send `diagnostics:ping` to a webhook (by id; `webhook-url` for the configured one)."""
    sim = current_sim()
    for hook in sim.workspace.hooks:
        if hook.uuid == hook_id or hook.name == hook_id:
            return json_response({"request_id": dc_state().events.ping(hook)}, 202)
    raise not_found(f"Webhook {hook_id} not found")
