"""The `/_sim/` admin API: stats, runtime config, deliveries, members, repository summaries.

Admin calls are never authenticated, counted or rate-limited.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, request

from bitbucket_sim.activity_changes import add_member, remove_group, remove_member
from bitbucket_sim.api.context import current_sim, json_response, origin, request_body
from bitbucket_sim.errors import SimError
from bitbucket_sim.faults import Fault
from bitbucket_sim.ids import iso
from bitbucket_sim.model import Repository
from bitbucket_sim.render import account_json

blueprint = Blueprint("admin", __name__, url_prefix="/_sim")


@blueprint.get("/stats")
def stats() -> Response:
    """`{calls_total, calls: {family: n}, rate_limited}`."""
    return json_response(current_sim().stats.snapshot())


@blueprint.post("/stats/reset")
def reset_stats() -> Response:
    """Zero the counters and forget every rate-limit window."""
    sim = current_sim()
    sim.stats.reset()
    sim.reset_limits()
    return json_response(sim.stats.snapshot())


@blueprint.get("/config")
def get_config() -> Response:
    return json_response(current_sim().config.public_view())


@blueprint.post("/config")
def change_config() -> Response:
    """Flip behaviour flags at runtime, e.g. `{"retry_after": 7, "rate_limit": "5/m"}`."""
    sim = current_sim()
    sim.update_config(request_body())
    return json_response(sim.config.public_view())


@blueprint.post("/faults")
def add_fault() -> Response:
    """Inject a fault: `{"status": 503, "times": 2, "path_contains": "/repositories/"}` answers
    the next two matching calls with 503; `{"next_origin": "http://127.0.0.1:9"}` moves the
    `next` link of the next matching page to another origin; `{"delay_seconds": 5,
    "method": "POST"}` answers the next POST 5 s late (after doing it)."""
    body = request_body()
    try:
        fault = Fault(
            path_contains=str(body.get("path_contains", "")),
            times=int(body.get("times", 1)),
            status=int(body["status"]) if body.get("status") is not None else None,
            next_origin=str(body["next_origin"]) if body.get("next_origin") else None,
            delay_seconds=float(body.get("delay_seconds") or 0),
            method=str(body["method"]) if body.get("method") else None,
        )
    except (TypeError, ValueError) as exc:
        raise SimError(400, f"invalid fault: {exc}") from exc
    sim = current_sim()
    sim.faults.add(fault)
    return json_response(sim.faults.pending(), 201)


@blueprint.delete("/faults")
def clear_faults() -> Response:
    current_sim().faults.clear()
    return Response(status=204)


@blueprint.get("/deliveries")
def deliveries() -> Response:
    """Every webhook delivery attempt; `?payload=1` includes the JSON bodies."""
    with_payload = request.args.get("payload", "").lower() in ("1", "true", "yes")
    return json_response(current_sim().dispatcher.attempts(with_payload))


@blueprint.delete("/deliveries")
def clear_deliveries() -> Response:
    current_sim().dispatcher.clear()
    return Response(status=204)


@blueprint.post("/members")
def create_member() -> Response:
    """`{display_name, nickname?, email?}` → the new user."""
    sim = current_sim()
    account = add_member(sim, request_body())
    return json_response(account_json(origin(), account), 201)


@blueprint.delete("/members/<account_id>")
def delete_member(account_id: str) -> Response:
    sim = current_sim()
    account = remove_member(sim, account_id)
    return json_response(account_json(origin(), account))


@blueprint.delete("/groups/<slug>")
def delete_group(slug: str) -> Response:
    remove_group(current_sim(), slug)
    return Response(status=204)


def repository_summary(sim_slug: str, repo: Repository) -> dict[str, Any]:
    """What tests need to know about a repository, including where its descriptor is."""
    head = repo.head
    return {
        "slug": repo.slug,
        "full_name": f"{sim_slug}/{repo.slug}",
        "name": repo.name,
        "uuid": repo.uuid,
        "project_key": repo.project_key,
        "mainbranch": repo.mainbranch,
        "head": head.hash,
        "branches": dict(repo.branches),
        "updated_on": iso(repo.updated_on),
        "catalog_layout": repo.catalog_layout,
        "catalog_paths": sorted(p for p in head.files if p.endswith("catalog-info.yaml")),
        "files": sorted(head.files),
        "user_permissions": dict(repo.user_permissions),
        "group_permissions": dict(repo.group_permissions),
    }


@blueprint.get("/repos")
def list_repository_summaries() -> Response:
    sim = current_sim()
    ws = sim.workspace
    return json_response([repository_summary(ws.slug, repo) for repo in ws.repositories.values()])


@blueprint.get("/repos/<slug>")
def repository_summary_of(slug: str) -> Response:
    sim = current_sim()
    return json_response(repository_summary(sim.workspace.slug, sim.repository(slug)))
