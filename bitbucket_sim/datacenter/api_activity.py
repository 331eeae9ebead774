"""Pull requests and build statuses."""

from __future__ import annotations

from flask import Blueprint, Response, request

from bitbucket_sim.api.context import current_sim, json_response, origin
from bitbucket_sim.datacenter.errors import NO_PULL_REQUEST, dc_bad_request, dc_not_found
from bitbucket_sim.datacenter.lookup import find_repo
from bitbucket_sim.datacenter.paging import dc_state, paged
from bitbucket_sim.datacenter.render_activity import (
    build_json,
    legacy_build_json,
    pr_state,
    pullrequest_json,
)
from bitbucket_sim.model import CommitStatus, Repository, Workspace

REPO = "/projects/<key>/repos/<slug>"
PR_STATE_FILTERS = ("ALL", "OPEN", "MERGED", "DECLINED")

blueprint = Blueprint("dc_activity", __name__)
build_status = Blueprint("dc_build_status", __name__)


@blueprint.get(f"{REPO}/pull-requests")
def list_pullrequests(key: str, slug: str) -> Response:
    """`?state=OPEN` (default) | MERGED | DECLINED | ALL; `?order=NEWEST` (default) | OLDEST."""
    sim, dc = current_sim(), dc_state()
    repo = find_repo(sim.workspace, key, slug)
    state = (request.args.get("state") or "OPEN").upper()
    if state not in PR_STATE_FILTERS:
        raise dc_bad_request(f"state must be one of {', '.join(PR_STATE_FILTERS)}", "state")
    order = (request.args.get("order") or "NEWEST").upper()
    if order not in ("NEWEST", "OLDEST"):
        raise dc_bad_request("order must be NEWEST or OLDEST", "order")
    prs = [pr for pr in repo.pullrequests.values() if state in ("ALL", pr_state(pr))]
    if sim.config.pr_newest_by == "created":
        prs.sort(key=lambda pr: (pr.created_on, pr.id), reverse=order == "NEWEST")
    else:
        prs.sort(key=lambda pr: (pr.updated_on, pr.id), reverse=order == "NEWEST")
    base, ws = origin(), sim.workspace
    return paged(prs, lambda pr: pullrequest_json(base, dc, ws, repo, pr))


@blueprint.get(f"{REPO}/pull-requests/<int:pr_id>")
def get_pullrequest(key: str, slug: str, pr_id: int) -> Response:
    sim = current_sim()
    repo = find_repo(sim.workspace, key, slug)
    pr = repo.pullrequests.get(pr_id)
    if pr is None:
        message = f"Pull request {pr_id} does not exist in {repo.project_key}/{repo.slug}."
        raise dc_not_found(message, NO_PULL_REQUEST)
    return json_response(pullrequest_json(origin(), dc_state(), sim.workspace, repo, pr))


def _statuses(ws: Workspace, commit_id: str, repo: Repository | None) -> list[CommitStatus]:
    """Statuses on a commit (full hash), newest first; across every repository if none given."""
    repos = [repo] if repo is not None else list(ws.repositories.values())
    found = [s for r in repos for s in r.statuses if s.commit == commit_id]
    return sorted(found, key=lambda s: (s.updated_on, s.key), reverse=True)


@blueprint.get(f"{REPO}/commits/<commit_id>/builds")
def builds(key: str, slug: str, commit_id: str) -> Response:
    ws = current_sim().workspace
    repo = find_repo(ws, key, slug)
    return paged(_statuses(ws, commit_id, repo), build_json)


@build_status.get("/commits/<commit_id>")
def legacy_builds(commit_id: str) -> Response:
    """Build statuses by commit alone (not tied to a repository)."""
    return paged(_statuses(current_sim().workspace, commit_id, None), legacy_build_json)


@build_status.get("/commits/stats/<commit_id>")
def legacy_build_stats(commit_id: str) -> Response:
    states = [
        legacy_build_json(s)["state"] for s in _statuses(current_sim().workspace, commit_id, None)
    ]
    return json_response(
        {
            "successful": states.count("SUCCESSFUL"),
            "inProgress": states.count("INPROGRESS"),
            "failed": states.count("FAILED"),
        }
    )
