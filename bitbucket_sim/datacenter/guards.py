"""Around every Data Center REST call: credentials, the token bucket, stats and error bodies.

Credentials (`Authorization`):
- `Bearer <--access-token>`: an HTTP access token (its bot user is an admin);
- `Bearer <--api-token>` or `Basic <--username>:<--api-token>`: a personal access token;
- `Bearer <--non-admin-token>`: a user without admin rights (permissions and webhooks: 401;
  `/admin/*` reads too with `--admin-reads-need-admin`).
With no credential flag, anyone is accepted (anonymous callers are never rate limited, as
Data Center limits only basic and bearer authenticated requests).
"""

from __future__ import annotations

import hashlib
import hmac
import re
from dataclasses import dataclass

from flask import Flask, Response, g, request
from werkzeug.exceptions import HTTPException

from bitbucket_sim.api.context import current_sim, error_response, json_response
from bitbucket_sim.config import SimConfig
from bitbucket_sim.credentials import decode_basic
from bitbucket_sim.datacenter.errors import BAD_CREDENTIALS, NOT_PERMITTED, DcError
from bitbucket_sim.errors import SimError

RATE_LIMITED_MESSAGE = "You have been rate limited. Please wait before making more requests."

_RULES: tuple[tuple[re.Pattern[str], str], ...] = tuple(
    (re.compile(pattern), family)
    for pattern, family in (
        (r"^/rest/build-status/", "builds"),
        (r"/repos/[^/]+/commits/[^/]+/builds", "builds"),
        (r"/repos/[^/]+/raw(/|$)", "raw"),
        (r"/repos/[^/]+/files(/|$)", "files"),
        (r"/repos/[^/]+/commits(/|$)", "commits"),
        (r"/repos/[^/]+/(branches|tags|default-branch)(/|$)", "refs"),
        (r"/repos/[^/]+/pull-requests(/|$)", "pullrequests"),
        (r"/permissions/", "permissions"),
        (r"/webhooks(/|$)", "webhooks"),
        (r"^/rest/api/[^/]+/(admin/)?groups", "groups"),
        (r"^/rest/api/[^/]+/(admin/)?users", "users"),
        (r"^/rest/api/[^/]+/(projects/[^/]+/repos|repos)(/|$)", "repos"),
        (r"^/rest/api/[^/]+/projects(/|$)", "projects"),
        (r"^/rest/", "other"),
    )
)


def family_of(path: str) -> str | None:
    """The stats family of a Data Center REST path; None outside `/rest/` (the `/_sim/`
    admin API's `/_sim/repos/{slug}/branches` must not read as a REST call)."""
    if not path.startswith("/rest/"):
        return None
    for pattern, family in _RULES:
        if pattern.search(path):
            return family
    return None


@dataclass(frozen=True)
class DcCaller:
    user: str
    scheme: str  # bearer | basic | anonymous
    admin: bool


def _same(given: str, expected: str | None) -> bool:
    return expected is not None and hmac.compare_digest(given.encode(), expected.encode())


def identify(config: SimConfig, authorization: str | None) -> DcCaller | None:
    """The caller behind `Authorization`, or None for a 401."""
    header = (authorization or "").strip()
    scheme, _, value = header.partition(" ")
    value = value.strip()
    required = config.credentials_required or config.non_admin_token is not None
    if scheme.lower() == "bearer" and value:
        if _same(value, config.access_token):
            return DcCaller("access-token-bot", "bearer", True)
        if _same(value, config.api_token):
            return DcCaller(config.username or "token-owner", "bearer", True)
        if _same(value, config.non_admin_token):
            return DcCaller("non-admin", "bearer", False)
        if required:
            return None
        return DcCaller("token:" + hashlib.sha256(value.encode()).hexdigest()[:12], "bearer", True)
    basic = decode_basic(header) if scheme.lower() == "basic" else None
    if basic is not None:
        username, token = basic
        if _same(username, config.username) and _same(token, config.api_token):
            return DcCaller(username, "basic", True)
        return None if required else DcCaller(username, "basic", True)
    return None if required else DcCaller("anonymous", "anonymous", True)


def admit() -> Response | None:
    """Authenticate, rate-limit and count a Data Center REST call."""
    family = family_of(request.path)
    if family is None:
        return None
    sim = current_sim()
    dc = sim.dc
    assert dc is not None
    caller = identify(sim.config, request.headers.get("Authorization"))
    if caller is None:
        sim.stats.count(family)
        message = "Authentication failed. Please check your credentials and try again."
        response = error_response(DcError(401, message, BAD_CREDENTIALS))
        response.headers["WWW-Authenticate"] = 'Basic realm="Bitbucket"'
        return response
    if caller.scheme != "anonymous":
        admission = dc.buckets.try_take(caller.user)
        if not admission.allowed:
            sim.stats.count_rate_limited()
            response = error_response(DcError(429, RATE_LIMITED_MESSAGE))
            response.headers["Retry-After"] = str(admission.retry_after)
            return response
    sim.stats.count(family)
    g.dc_caller = caller
    fault = sim.faults.take(request.path)
    if fault is not None and fault.status is not None:
        return error_response(DcError(fault.status, "Something went wrong (injected fault)"))
    return None


def require_admin() -> None:
    """401 (or `--admin-denied-status`) unless the caller has admin rights."""
    caller: DcCaller | None = g.get("dc_caller")
    if caller is not None and not caller.admin:
        status = current_sim().config.admin_denied_status
        message = "You are not permitted to access this resource"
        raise DcError(status, message, NOT_PERMITTED)


def require_admin_read() -> None:
    """`/admin/groups`, `.../more-members`, `/admin/users`: documented as open to any licensed
    user; refused to non-admins only with `--admin-reads-need-admin`."""
    if current_sim().config.admin_reads_need_admin:
        require_admin()


def handle_sim_error(error: SimError) -> Response:
    if isinstance(error, DcError) or not request.path.startswith("/rest/"):
        return error_response(error)
    return error_response(DcError(error.status, error.message))


def handle_http_error(error: HTTPException) -> Response:
    """Unknown routes and wrong methods, in Data Center's error shape."""
    status = error.code or 500
    if not request.path.startswith("/rest/"):
        return json_response({"type": "error", "error": {"message": error.name}}, status)
    messages = {404: "Resource not found", 405: "Method not allowed"}
    return error_response(DcError(status, messages.get(status, error.name or "Error")))


def install(app: Flask) -> None:
    app.before_request(admit)
    app.register_error_handler(SimError, handle_sim_error)
    app.register_error_handler(HTTPException, handle_http_error)
