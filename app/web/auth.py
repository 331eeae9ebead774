"""Who may call what: bearer service tokens for `/api/*` (`BBSYNC_API_TOKENS`), and the
optional locks on the catalog (`BBSYNC_CATALOG_TOKENS`), `/metrics` (`BBSYNC_METRICS_TOKEN`)
and the status page (`BBSYNC_STATUS_BASIC_AUTH`). A lock that is not set leaves its endpoints
open, as the zero-config demo needs. Every comparison takes the same time whatever was sent
(digests compared with `hmac.compare_digest`, against every configured value). A refusal is a
401 JSON answer with `WWW-Authenticate`, counted in `/metrics` and never stored.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from collections.abc import Iterable
from typing import Any

from flask import Response, jsonify, request

from app.ops.telemetry import record_unauthenticated
from app.web import runtime

PUBLIC = {"/api/openapi.json"}
# Endpoints that act for a Backstage user prove the user with the user's own token instead.
USER_TOKEN_ENDPOINTS = {"access_api.trigger_pipeline"}
BEARER_CHALLENGE = 'Bearer realm="bbsync"'
BASIC_CHALLENGE = 'Basic realm="bbsync", charset="UTF-8"'


def _digest(value: str) -> bytes:
    # Any header text hashes (no UnicodeError); equal lengths leak nothing to compare_digest.
    return hashlib.sha256(value.encode("utf-8", "surrogatepass")).digest()


def matches(given: str, accepted: Iterable[str]) -> bool:
    """Whether `given` is one of `accepted`, in time independent of where they differ."""
    given_digest = _digest(given)
    found = False
    for value in accepted:
        found |= hmac.compare_digest(_digest(value), given_digest)
    return found


def bearer_token() -> str:
    header = request.headers.get("Authorization", "")
    return header[7:].strip() if header[:7].lower() == "bearer " else ""


def basic_login() -> str:
    """`user:password` from a Basic `Authorization` header, or "" for anything malformed
    (werkzeug's own parser raises on non-ASCII, which would be a 500)."""
    scheme, _, value = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "basic":
        return ""
    try:
        raw = base64.b64decode(value.strip().encode("ascii"), validate=True)
    except (ValueError, binascii.Error):
        return ""
    return raw.decode("utf-8", "replace") if b":" in raw else ""


def unauthorized(endpoint: str, message: str, challenge: str = BEARER_CHALLENGE) -> Response:
    """A 401 JSON answer, counted under `endpoint` (missing or wrong credential)."""
    reason = "wrong_credential" if request.headers.get("Authorization") else "missing_credential"
    record_unauthenticated(runtime().redis, endpoint, reason)
    response = jsonify(error="unauthorized", message=message)
    response.status_code = 401
    response.headers["WWW-Authenticate"] = challenge
    return response


def require_api_token() -> Any:
    """A `before_request` hook: None to let the request through, else a 401 answer."""
    if request.path in PUBLIC or request.endpoint in USER_TOKEN_ENDPOINTS:
        return None
    tokens = [t.reveal() for t in runtime().settings.api_tokens]
    if matches(bearer_token(), tokens) and tokens:
        return None
    message = (
        "missing or wrong bearer token"
        if tokens
        else "the API is closed: set BBSYNC_API_TOKENS to give Backstage a service token"
    )
    return unauthorized("api", message)


def require_catalog_token() -> Response | None:
    """`/catalog/*` (every route of the blueprint): open unless `BBSYNC_CATALOG_TOKENS`."""
    tokens = [t.reveal() for t in runtime().settings.catalog_tokens]
    if not tokens or matches(bearer_token(), tokens):
        return None
    return unauthorized("catalog", "the catalog needs a bearer token (BBSYNC_CATALOG_TOKENS)")


def require_metrics_token() -> Response | None:
    """`/metrics`: open unless `BBSYNC_METRICS_TOKEN`."""
    tokens = [t.reveal() for t in runtime().settings.metrics_tokens]
    if not tokens or matches(bearer_token(), tokens):
        return None
    return unauthorized("metrics", "metrics need a bearer token (BBSYNC_METRICS_TOKEN)")


def require_status_login() -> Response | None:
    """The status page: open unless `BBSYNC_STATUS_BASIC_AUTH` (`user:password`, like Flower)."""
    logins = [
        f"{user}:{password.reveal()}" for user, password in runtime().settings.status_basic_auth
    ]
    if not logins:
        return None
    sent = basic_login()
    if sent and matches(sent, logins):
        return None
    return unauthorized(
        "status", "the status page needs a login (BBSYNC_STATUS_BASIC_AUTH)", BASIC_CHALLENGE
    )
