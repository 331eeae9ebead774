"""Pipelines and commit statuses."""

from __future__ import annotations

from flask import Blueprint, Response

from bitbucket_sim.activity_changes import create_pipeline, find_pipeline, set_commit_status
from bitbucket_sim.api.context import json_response, origin, request_body, workspace_guard
from bitbucket_sim.api.listing import fielded, paginated
from bitbucket_sim.errors import not_found
from bitbucket_sim.render_activity import pipeline_json, status_json

blueprint = Blueprint("pipelines", __name__)

REPO = "/2.0/repositories/<workspace>/<slug>"


@blueprint.get(f"{REPO}/pipelines/")
@blueprint.get(f"{REPO}/pipelines")
def list_pipelines(workspace: str, slug: str) -> Response:
    """Oldest first by default; `sort=-created_on` for newest first."""
    sim = workspace_guard(workspace)
    repo = sim.repository(slug)
    ws, base = sim.workspace, origin()
    return paginated(list(repo.pipelines), lambda p: pipeline_json(base, ws, repo, p))


@blueprint.post(f"{REPO}/pipelines/")
@blueprint.post(f"{REPO}/pipelines")
def run_pipeline(workspace: str, slug: str) -> Response:
    """Start a pipeline on a `pipeline_ref_target`: 201 with the PENDING pipeline."""
    sim = workspace_guard(workspace)
    body = request_body()
    pipeline = create_pipeline(sim, slug, body, sim.actor(None))
    repo = sim.repository(slug)
    return json_response(pipeline_json(origin(), sim.workspace, repo, pipeline), 201)


@blueprint.get(f"{REPO}/pipelines/<key>")
def get_pipeline(workspace: str, slug: str, key: str) -> Response:
    sim = workspace_guard(workspace)
    repo = sim.repository(slug)
    pipeline = find_pipeline(repo, key)
    return fielded(pipeline_json(origin(), sim.workspace, repo, pipeline))


@blueprint.get(f"{REPO}/commit/<commit>/statuses")
@blueprint.get(f"{REPO}/commit/<commit>/statuses/")
def list_statuses(workspace: str, slug: str, commit: str) -> Response:
    """The statuses of one commit (full or short hash)."""
    sim = workspace_guard(workspace)
    repo = sim.repository(slug)
    found = repo.find_commit(commit)
    if found is None:
        raise not_found(f"Commit {commit!r} not found")
    ws, base = sim.workspace, origin()
    statuses = [s for s in repo.statuses if s.commit == found.hash]
    return paginated(statuses, lambda s: status_json(base, ws, repo, s))


@blueprint.get(f"{REPO}/commit/<commit>/statuses/build/<path:key>")
def get_status(workspace: str, slug: str, commit: str, key: str) -> Response:
    sim = workspace_guard(workspace)
    repo = sim.repository(slug)
    found = repo.find_commit(commit)
    status = next(
        (s for s in repo.statuses if found and s.commit == found.hash and s.key == key), None
    )
    if status is None:
        raise not_found(f"No status {key!r} on commit {commit!r}")
    return fielded(status_json(origin(), sim.workspace, repo, status))


@blueprint.post(f"{REPO}/commit/<commit>/statuses/build")
@blueprint.post(f"{REPO}/commit/<commit>/statuses/build/")
def post_status(workspace: str, slug: str, commit: str) -> Response:
    """Create or update a build status, as a CI system would."""
    sim = workspace_guard(workspace)
    repo, status, created = set_commit_status(sim, slug, request_body(), commit_ref=commit)
    return json_response(
        status_json(origin(), sim.workspace, repo, status), 201 if created else 200
    )
