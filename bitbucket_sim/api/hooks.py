"""Webhook subscriptions on the workspace and on repositories."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response

from bitbucket_sim import body as fields
from bitbucket_sim.api.context import json_response, origin, request_body, workspace_guard
from bitbucket_sim.api.listing import fielded, paginated
from bitbucket_sim.errors import bad_request, not_found
from bitbucket_sim.model import Hook
from bitbucket_sim.render_activity import hook_json
from bitbucket_sim.runtime import Simulator

blueprint = Blueprint("hooks", __name__)

# fmt: off
EVENT_KEYS = (
    "repo:push", "repo:fork", "repo:updated", "repo:transfer", "repo:created", "repo:deleted",
    "repo:imported", "repo:commit_comment_created", "repo:commit_status_created",
    "repo:commit_status_updated", "pullrequest:created", "pullrequest:updated",
    "pullrequest:approved", "pullrequest:unapproved", "pullrequest:fulfilled",
    "pullrequest:rejected", "pullrequest:changes_request_created",
    "pullrequest:changes_request_removed", "pullrequest:comment_created",
    "pullrequest:comment_updated", "pullrequest:comment_deleted",
    "pullrequest:comment_resolved", "pullrequest:comment_reopened",
)
# fmt: on
WORKSPACE_HOOKS = "/2.0/workspaces/<workspace>/hooks"
REPO_HOOKS = "/2.0/repositories/<workspace>/<slug>/hooks"


def _subscription(body: dict[str, Any], hook: Hook | None) -> dict[str, Any]:
    url = fields.text(body, "url", hook.url if hook else None)
    if not url or not url.startswith(("http://", "https://")):
        raise bad_request("url must be an http(s) URL")
    events = fields.text_list(body, "events") if "events" in body else (hook.events if hook else [])
    if not events:
        raise bad_request("events must name at least one event")
    unknown = sorted(set(events) - set(EVENT_KEYS))
    if unknown:
        raise bad_request(f"Unknown events: {', '.join(unknown)}")
    return {
        "url": url,
        "events": sorted(set(events)),
        "description": fields.text(body, "description", hook.description if hook else "") or "",
        "active": fields.flag(body, "active", hook.active if hook else True),
    }


def _scope(sim: Simulator, slug: str | None) -> str | None:
    return None if slug is None else sim.repository(slug).uuid


def _find(sim: Simulator, scope: str | None, uid: str) -> Hook:
    bare = uid.strip("{}")
    for hook in sim.workspace.hooks:
        if hook.uuid.strip("{}") == bare and hook.repository_uuid == scope and not hook.all_events:
            return hook
    raise not_found(f"Webhook {uid} not found")


def _list(workspace: str, slug: str | None) -> Response:
    sim = workspace_guard(workspace)
    scope = _scope(sim, slug)
    hooks = [h for h in sim.workspace.hooks if h.repository_uuid == scope and not h.all_events]
    ws, base = sim.workspace, origin()
    return paginated(hooks, lambda hook: hook_json(base, ws, hook))


def _create(workspace: str, slug: str | None) -> Response:
    sim = workspace_guard(workspace)
    scope = _scope(sim, slug)
    body = request_body()
    settings = _subscription(body, None)
    secret = fields.text(body, "secret")
    hook = Hook(
        uuid=sim.ids.uuid(),
        secret=secret or None,
        created_at=sim.clock.now(),
        repository_uuid=scope,
        **settings,
    )
    sim.workspace.hooks.append(hook)
    return json_response(hook_json(origin(), sim.workspace, hook), 201)


def _update(workspace: str, slug: str | None, uid: str) -> Response:
    sim = workspace_guard(workspace)
    hook = _find(sim, _scope(sim, slug), uid)
    body = request_body()
    for key, value in _subscription(body, hook).items():
        setattr(hook, key, value)
    if "secret" in body:
        hook.secret = fields.text(body, "secret") or None
    return json_response(hook_json(origin(), sim.workspace, hook))


def _delete(workspace: str, slug: str | None, uid: str) -> Response:
    sim = workspace_guard(workspace)
    hook = _find(sim, _scope(sim, slug), uid)
    sim.workspace.hooks.remove(hook)
    return Response(status=204)


def _get(workspace: str, slug: str | None, uid: str) -> Response:
    sim = workspace_guard(workspace)
    return fielded(hook_json(origin(), sim.workspace, _find(sim, _scope(sim, slug), uid)))


@blueprint.get(WORKSPACE_HOOKS)
def list_workspace_hooks(workspace: str) -> Response:
    return _list(workspace, None)


@blueprint.post(WORKSPACE_HOOKS)
def create_workspace_hook(workspace: str) -> Response:
    return _create(workspace, None)


@blueprint.get(f"{WORKSPACE_HOOKS}/<uid>")
def get_workspace_hook(workspace: str, uid: str) -> Response:
    return _get(workspace, None, uid)


@blueprint.put(f"{WORKSPACE_HOOKS}/<uid>")
def update_workspace_hook(workspace: str, uid: str) -> Response:
    return _update(workspace, None, uid)


@blueprint.delete(f"{WORKSPACE_HOOKS}/<uid>")
def delete_workspace_hook(workspace: str, uid: str) -> Response:
    return _delete(workspace, None, uid)


@blueprint.get(REPO_HOOKS)
def list_repository_hooks(workspace: str, slug: str) -> Response:
    return _list(workspace, slug)


@blueprint.post(REPO_HOOKS)
def create_repository_hook(workspace: str, slug: str) -> Response:
    return _create(workspace, slug)


@blueprint.get(f"{REPO_HOOKS}/<uid>")
def get_repository_hook(workspace: str, slug: str, uid: str) -> Response:
    return _get(workspace, slug, uid)


@blueprint.put(f"{REPO_HOOKS}/<uid>")
def update_repository_hook(workspace: str, slug: str, uid: str) -> Response:
    return _update(workspace, slug, uid)


@blueprint.delete(f"{REPO_HOOKS}/<uid>")
def delete_repository_hook(workspace: str, slug: str, uid: str) -> Response:
    return _delete(workspace, slug, uid)
