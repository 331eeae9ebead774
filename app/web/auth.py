"""Bearer service tokens for `/api/*` (`BBSYNC_API_TOKENS`), compared in constant time."""

from __future__ import annotations

import hmac
from typing import Any

from flask import jsonify, request

from app.web import runtime

PUBLIC = {"/api/openapi.json"}
# Endpoints that act for a Backstage user prove the user with the user's own token instead.
USER_TOKEN_ENDPOINTS = {"access_api.trigger_pipeline"}


def require_api_token() -> Any:
    """A `before_request` hook: None to let the request through, else a 401 answer."""
    if request.path in PUBLIC or request.endpoint in USER_TOKEN_ENDPOINTS:
        return None
    tokens = [t.reveal() for t in runtime().settings.api_tokens]
    header = request.headers.get("Authorization", "")
    given = header[7:].strip() if header[:7].lower() == "bearer " else ""
    valid = False
    for token in tokens:
        valid |= hmac.compare_digest(token.encode(), given.encode())
    if valid:
        return None
    message = (
        "missing or wrong bearer token"
        if tokens
        else "the API is closed: set BBSYNC_API_TOKENS to give Backstage a service token"
    )
    response = jsonify(error="unauthorized", message=message)
    response.status_code = 401
    response.headers["WWW-Authenticate"] = 'Bearer realm="bbsync"'
    return response
