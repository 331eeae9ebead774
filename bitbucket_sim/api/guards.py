"""What happens around every API call: credentials, rate limits, stats and error bodies."""

from __future__ import annotations

import json
from dataclasses import dataclass

from flask import Flask, Response, g, request
from werkzeug.exceptions import HTTPException

from bitbucket_sim.api.context import current_sim, error_response, json_response
from bitbucket_sim.credentials import Caller
from bitbucket_sim.errors import SimError
from bitbucket_sim.faults import Fault, move_next_link
from bitbucket_sim.ratelimit import RAW, REPOSITORIES, Admission
from bitbucket_sim.stats import family_of

DELAY_KEY = "bitbucket_sim.answer_delay"
RATE_LIMITED_BODY = "Rate limit for this resource has been exceeded"
NEAR_LIMIT_SHARE = 0.2


@dataclass(frozen=True)
class AdmittedCall:
    """A call that passed the gate and was counted (kept on `flask.g`)."""

    caller: Caller
    resource: str
    admission: Admission
    family: str


def _rate_headers(response: Response, caller: Caller, resource: str, admission: Admission) -> None:
    # Bitbucket sends these only for access tokens; the limit is the window's total.
    if not caller.uses_bearer:
        return
    response.headers["X-RateLimit-Limit"] = str(admission.limit.limit)
    response.headers["X-RateLimit-Resource"] = resource
    if admission.remaining < admission.limit.limit * NEAR_LIMIT_SHARE:
        response.headers["X-RateLimit-NearLimit"] = "true"


def admit() -> Response | None:
    """Authenticate, rate-limit and count an API call; answer 401/429 here when needed."""
    family = family_of(request.path)
    if family is None:
        return None
    sim = current_sim()
    if family == "oauth":
        sim.stats.count(family)
        return None
    caller = sim.gate.identify(request.headers.get("Authorization"))
    if caller is None:
        sim.stats.count(family)
        response = error_response(SimError(401, "Access denied: invalid or missing credentials"))
        response.headers["WWW-Authenticate"] = 'Basic realm="Bitbucket.org HTTP"'
        return response
    resource = RAW if family == "src" else REPOSITORIES
    admission = sim.limiter.try_acquire(caller.bucket, resource)
    if not admission.allowed:
        sim.stats.count_rate_limited()
        response = Response(RATE_LIMITED_BODY, status=429, content_type="text/plain")
        if sim.config.retry_after is not None:
            response.headers["Retry-After"] = str(sim.config.retry_after)
        _rate_headers(response, caller, resource, admission)
        return response
    sim.stats.count(family)
    g.admitted_call = AdmittedCall(caller, resource, admission, family)
    fault = sim.faults.take(request.path, request.method)
    g.fault = fault
    if fault is not None and fault.status is not None:
        # An outage answer still cost the caller a call, as it does at Bitbucket.
        return error_response(SimError(fault.status, "Something went wrong (injected fault)"))
    return None


def settle(response: Response) -> Response:
    """Refund a 304 when it must not cost a call; add rate-limit headers."""
    call: AdmittedCall | None = g.get("admitted_call")
    if call is None:
        return response
    sim = current_sim()
    if response.status_code == 304 and not sim.config.not_modified_costs_call:
        sim.limiter.release(call.caller.bucket, call.resource, call.admission.stamp)
        sim.stats.count(call.family, -1)
    fault: Fault | None = g.get("fault")
    if fault is not None and fault.next_origin and response.mimetype == "application/json":
        body = json.loads(response.get_data())
        if isinstance(body, dict):
            response.set_data(json.dumps(move_next_link(body, fault.next_origin)))
    _rate_headers(response, call.caller, call.resource, call.admission)
    if fault is not None and fault.delay_seconds:
        # A slow Bitbucket: the work is done, only the answer is late (waited out of the lock).
        request.environ[DELAY_KEY] = fault.delay_seconds
    return response


def handle_sim_error(error: SimError) -> Response:
    return error_response(error)


def handle_http_error(error: HTTPException) -> Response:
    """Werkzeug errors (unknown route, wrong method) in Bitbucket's error shape."""
    status = error.code or 500
    message = {404: "Resource not found", 405: "Method not allowed"}.get(
        status, error.name or "Error"
    )
    return json_response({"type": "error", "error": {"message": message}}, status)


def install(app: Flask) -> None:
    """Register the hooks and error handlers on `app`."""
    app.before_request(admit)
    app.after_request(settle)
    app.register_error_handler(SimError, handle_sim_error)
    app.register_error_handler(HTTPException, handle_http_error)
