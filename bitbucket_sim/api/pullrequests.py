"""Pull requests: lists without reviewers/participants, the single PR with them."""

from __future__ import annotations

from flask import Blueprint, Response, request

from bitbucket_sim.api.context import origin, workspace_guard
from bitbucket_sim.api.listing import ListOptions, fielded, paginated
from bitbucket_sim.errors import bad_request, not_found
from bitbucket_sim.model import PR_STATES, PullRequest
from bitbucket_sim.render_activity import pullrequest_json

blueprint = Blueprint("pullrequests", __name__)

MAX_PR_PAGELEN = 50


def requested_states() -> list[str]:
    """The repeated `state=` parameters; OPEN when none is given."""
    states = [value.upper() for value in request.args.getlist("state") if value.strip()]
    for state in states:
        if state not in PR_STATES:
            raise bad_request(
                f"Invalid state {state!r}", f"state must be one of {', '.join(PR_STATES)}"
            )
    return states or ["OPEN"]


@blueprint.get("/2.0/repositories/<workspace>/<slug>/pullrequests")
@blueprint.get("/2.0/repositories/<workspace>/<slug>/pullrequests/")
def list_pullrequests(workspace: str, slug: str) -> Response:
    """`?state=OPEN&state=MERGED...`, `q`, `sort`; pagelen at most 50."""
    sim = workspace_guard(workspace)
    repo = sim.repository(slug)
    ws, base = sim.workspace, origin()
    states = requested_states()
    prs: list[PullRequest] = sorted(
        (pr for pr in repo.pullrequests.values() if pr.state in states),
        key=lambda pr: pr.id,
        reverse=True,
    )
    return paginated(
        prs,
        lambda pr: pullrequest_json(base, ws, repo, pr, detailed=False),
        ListOptions(max_pagelen=MAX_PR_PAGELEN),
    )


@blueprint.get("/2.0/repositories/<workspace>/<slug>/pullrequests/<int:pr_id>")
def get_pullrequest(workspace: str, slug: str, pr_id: int) -> Response:
    """One pull request with `reviewers` and `participants`."""
    sim = workspace_guard(workspace)
    repo = sim.repository(slug)
    pr = repo.pullrequests.get(pr_id)
    if pr is None:
        raise not_found(f"Pull request {pr_id} not found")
    return fielded(pullrequest_json(origin(), sim.workspace, repo, pr, detailed=True))
