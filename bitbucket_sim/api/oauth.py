"""OAuth 2.0 client credentials: `POST /site/oauth2/access_token`."""

from __future__ import annotations

from flask import Blueprint, Response, request

from bitbucket_sim.api.context import current_sim, json_response
from bitbucket_sim.credentials import OAUTH_SCOPES, decode_basic

blueprint = Blueprint("oauth", __name__)


def _oauth_error(status: int, error: str, description: str) -> Response:
    return json_response({"error": error, "error_description": description}, status)


@blueprint.post("/site/oauth2/access_token")
def access_token() -> Response:
    """A bearer token for a consumer (Basic `client_id:secret`, or form fields); no refresh."""
    sim = current_sim()
    grant_type = request.form.get("grant_type")
    if grant_type != "client_credentials":
        return _oauth_error(
            400, "unsupported_grant_type", f"Unsupported grant type: {grant_type or 'none'}"
        )
    basic = decode_basic(request.headers.get("Authorization", ""))
    if basic is not None:
        client_id, client_secret = basic
    else:
        client_id = request.form.get("client_id", "")
        client_secret = request.form.get("client_secret", "")
    if not client_id or not sim.gate.client_accepted(client_id, client_secret):
        return _oauth_error(401, "invalid_client", "Invalid OAuth client credentials")
    token = sim.gate.issue(client_id)
    return json_response(
        {
            "access_token": token.access_token,
            "scopes": OAUTH_SCOPES,
            "expires_in": token.expires_in,
            "token_type": "bearer",
            "state": "client_credentials",
        }
    )
