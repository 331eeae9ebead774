"""Settings of who may use which endpoint: how Backstage user tokens are verified, how long
a call made for a web request may take, and the optional locks on the catalog, metrics and
status page (unset: open, as a zero-config demo needs)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypedDict

from app.settings_values import (
    Secret,
    SettingsError,
    basic_auth,
    positive_number,
    tokens,
    url,
)


class EndpointAccess(TypedDict):
    backstage_jwks_url: str
    backstage_issuer: str
    backstage_audience: str
    action_timeout_seconds: float
    catalog_tokens: tuple[Secret, ...]
    metrics_tokens: tuple[Secret, ...]
    status_basic_auth: tuple[tuple[str, Secret], ...]


def endpoint_access(get: Callable[..., str]) -> EndpointAccess:
    """The `Settings` fields of who may use which endpoint, validated."""
    jwks_url = get("BBSYNC_BACKSTAGE_JWKS_URL")
    if jwks_url:
        url("BBSYNC_BACKSTAGE_JWKS_URL", jwks_url, ("https", "http"))
        if not get("BBSYNC_BACKSTAGE_ISSUER"):
            raise SettingsError(
                "BBSYNC_BACKSTAGE_ISSUER: required with BBSYNC_BACKSTAGE_JWKS_URL "
                "(Backstage's is <backend base URL>/api/auth)"
            )
    timeout = positive_number(
        "BBSYNC_ACTION_TIMEOUT_SECONDS", get("BBSYNC_ACTION_TIMEOUT_SECONDS", "10")
    )
    # Connecting and reading each get this long: twice it stays inside gunicorn's 30 s.
    if timeout > 12:
        raise SettingsError(
            f"BBSYNC_ACTION_TIMEOUT_SECONDS: must be at most 12 (the web process answers "
            f"within 30 s), got {timeout:g}"
        )
    return {
        "backstage_jwks_url": jwks_url,
        "backstage_issuer": get("BBSYNC_BACKSTAGE_ISSUER"),
        "backstage_audience": get("BBSYNC_BACKSTAGE_AUDIENCE", "backstage"),
        "action_timeout_seconds": timeout,
        "catalog_tokens": tuple(Secret(t) for t in tokens(get("BBSYNC_CATALOG_TOKENS"))),
        "metrics_tokens": tuple(Secret(t) for t in tokens(get("BBSYNC_METRICS_TOKEN"))),
        "status_basic_auth": tuple(
            (user, Secret(password))
            for user, password in basic_auth(
                "BBSYNC_STATUS_BASIC_AUTH", get("BBSYNC_STATUS_BASIC_AUTH")
            )
        ),
    }
