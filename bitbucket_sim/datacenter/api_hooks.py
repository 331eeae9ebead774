"""Webhooks: repository-level and project-level CRUD, and the test (ping) call.

Project-level hooks answer 404 with `--no-project-webhooks` (older servers).
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, request

from bitbucket_sim.api.context import current_sim, json_response, request_body
from bitbucket_sim.datacenter.errors import NO_WEBHOOK, dc_bad_request, dc_not_found
from bitbucket_sim.datacenter.guards import require_admin
from bitbucket_sim.datacenter.lookup import find_project, find_repo
from bitbucket_sim.datacenter.paging import dc_state, paged
from bitbucket_sim.datacenter.render_activity import webhook_json
from bitbucket_sim.model import Hook

blueprint = Blueprint("dc_hooks", __name__)
REPO_HOOKS = "/projects/<key>/repos/<slug>/webhooks"
PROJECT_HOOKS = "/projects/<key>/webhooks"
MAX_HOOKS_PER_SCOPE = 100


def _scope(key: str, slug: str | None) -> tuple[str | None, str | None]:
    """`(repository_uuid, project_key)` of the hooks named by the URL."""
    require_admin()
    sim = current_sim()
    if slug is None:
        if not sim.config.project_webhooks:
            raise dc_not_found("Resource not found")
        return None, find_project(sim.workspace, key).key
    return find_repo(sim.workspace, key, slug).uuid, None


def _hooks(repository_uuid: str | None, project_key: str | None) -> list[Hook]:
    # The --webhook-url subscription has neither scope, so it never shows here.
    return [
        h
        for h in current_sim().workspace.hooks
        if h.repository_uuid == repository_uuid and h.project_key == project_key
    ]


def _find(scope: tuple[str | None, str | None], hook_id: int) -> Hook:
    for hook in _hooks(*scope):
        if hook.uuid == str(hook_id):
            return hook
    raise dc_not_found(f"No webhook with id {hook_id} exists.", NO_WEBHOOK)


def _apply(hook: Hook, body: dict[str, Any], creating: bool) -> None:
    name, url, events = body.get("name"), body.get("url"), body.get("events")
    if creating or name is not None:
        if not isinstance(name, str) or not name.strip():
            raise dc_bad_request("A webhook needs a name.", "name")
        hook.name = name
    if creating or url is not None:
        if not isinstance(url, str) or not url.startswith(("http://", "https://")):
            raise dc_bad_request("The URL must be an http or https URL.", "url")
        hook.url = url
    if creating or events is not None:
        if (
            not isinstance(events, list)
            or not events
            or not all(isinstance(e, str) for e in events)
        ):
            raise dc_bad_request("Choose at least one event.", "events")
        hook.events = list(events)
    active = body.get("active", hook.active)
    if not isinstance(active, bool):
        raise dc_bad_request("active must be true or false", "active")
    hook.active = active
    configuration = body.get("configuration") or {}
    if not isinstance(configuration, dict):
        raise dc_bad_request("configuration must be an object", "configuration")
    secret = configuration.get("secret")
    if secret is not None:
        if not isinstance(secret, str):
            raise dc_bad_request("secret must be a string", "configuration")
        hook.secret = secret or None


def _list(key: str, slug: str | None) -> Response:
    return paged(_hooks(*_scope(key, slug)), webhook_json)


def _create(key: str, slug: str | None) -> Response:
    sim = current_sim()
    repository_uuid, project_key = _scope(key, slug)
    if len(_hooks(repository_uuid, project_key)) >= MAX_HOOKS_PER_SCOPE:
        raise dc_bad_request("Too many webhooks in this scope.")
    now = sim.clock.now()
    hook = Hook(
        uuid=str(dc_state().next_hook_id()),
        url="",
        description="",
        active=True,
        events=[],
        secret=None,
        created_at=now,
        repository_uuid=repository_uuid,
        project_key=project_key,
        updated_at=now,
    )
    _apply(hook, request_body(), creating=True)
    sim.workspace.hooks.append(hook)
    return json_response(webhook_json(hook), 201)


def _one(key: str, slug: str | None, hook_id: int) -> Response:
    sim = current_sim()
    scope = _scope(key, slug)
    hook = _find(scope, hook_id)
    if request.method == "DELETE":
        sim.workspace.hooks.remove(hook)
        return Response(status=204)
    if request.method == "PUT":
        _apply(hook, request_body(), creating=False)
        hook.updated_at = sim.clock.now()
    return json_response(webhook_json(hook))


def _test(key: str, slug: str | None) -> Response:
    """Send `diagnostics:ping` to `?webhookId=` (or to `?url=` unsigned)."""
    scope = _scope(key, slug)
    raw_id = request.args.get("webhookId")
    if raw_id is not None:
        if not raw_id.isdigit():
            raise dc_bad_request("webhookId must be a number", "webhookId")
        hook = _find(scope, int(raw_id))
    else:
        url = request.args.get("url") or ""
        if not url.startswith(("http://", "https://")):
            raise dc_bad_request("Give a webhookId or an http(s) url.", "url")
        hook = Hook("0", url, "", True, [], None, current_sim().clock.now())
    dc = dc_state()
    request_id = dc.events.ping(hook)
    return json_response({"request": {"url": hook.url, "method": "POST", "id": request_id}})


@blueprint.get(REPO_HOOKS)
def list_repo_hooks(key: str, slug: str) -> Response:
    return _list(key, slug)


@blueprint.post(REPO_HOOKS)
def create_repo_hook(key: str, slug: str) -> Response:
    return _create(key, slug)


@blueprint.post(f"{REPO_HOOKS}/test")
def test_repo_hook(key: str, slug: str) -> Response:
    return _test(key, slug)


@blueprint.route(f"{REPO_HOOKS}/<int:hook_id>", methods=["GET", "PUT", "DELETE"])
def repo_hook(key: str, slug: str, hook_id: int) -> Response:
    return _one(key, slug, hook_id)


@blueprint.get(PROJECT_HOOKS)
def list_project_hooks(key: str) -> Response:
    return _list(key, None)


@blueprint.post(PROJECT_HOOKS)
def create_project_hook(key: str) -> Response:
    return _create(key, None)


@blueprint.post(f"{PROJECT_HOOKS}/test")
def test_project_hook(key: str) -> Response:
    return _test(key, None)


@blueprint.route(f"{PROJECT_HOOKS}/<int:hook_id>", methods=["GET", "PUT", "DELETE"])
def project_hook(key: str, hook_id: int) -> Response:
    return _one(key, None, hook_id)
