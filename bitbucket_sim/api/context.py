"""Request-scoped helpers shared by every route module."""

from __future__ import annotations

import json
from typing import Any

from flask import Response, current_app, request

from bitbucket_sim.body import as_object
from bitbucket_sim.errors import SimError
from bitbucket_sim.runtime import Simulator


def current_sim() -> Simulator:
    """The simulator serving this request."""
    sim = current_app.extensions["bitbucket_sim"]
    assert isinstance(sim, Simulator)
    return sim


def origin() -> str:
    """This server's origin as the client reached it, e.g. `http://127.0.0.1:5000`."""
    return request.host_url.rstrip("/")


def json_response(doc: Any, status: int = 200) -> Response:
    """A JSON answer that keeps key order as built."""
    return Response(json.dumps(doc), status=status, mimetype="application/json")


def error_response(error: SimError) -> Response:
    return json_response(error.body(), error.status)


def request_body() -> dict[str, Any]:
    """The JSON object sent with the request (`{}` when there is none); 400 if not JSON."""
    if not request.get_data():
        return {}
    try:
        payload = json.loads(request.get_data())
    except ValueError as exc:
        raise SimError(400, "The request body is not valid JSON") from exc
    return as_object(payload)


def workspace_guard(workspace: str) -> Simulator:
    """The simulator, after checking the workspace in the URL (404 otherwise)."""
    sim = current_sim()
    sim.check_workspace(workspace)
    return sim
