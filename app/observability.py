"""Sentry: errors from every process, with secrets scrubbed before an event leaves."""

from __future__ import annotations

from typing import Any

import sentry_sdk

from app.config import Settings
from app.logs import secret_values


def scrub(value: Any, secrets: tuple[str, ...]) -> Any:
    """Replace every occurrence of a secret in nested event data."""
    if isinstance(value, str):
        for secret in secrets:
            value = value.replace(secret, "***")
        return value
    if isinstance(value, dict):
        return {k: scrub(v, secrets) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(scrub(v, secrets) for v in value)
    return value


def init_sentry(settings: Settings, component: str, **options: Any) -> bool:
    """Start Sentry when `SENTRY_DSN` is set; returns whether it was started."""
    if settings.sentry_dsn is None:
        return False
    secrets = tuple(s for s in secret_values(settings) if len(s) >= 4)

    def before_send(event: Any, _hint: Any) -> Any:
        return scrub(event, secrets)

    sentry_sdk.init(
        dsn=settings.sentry_dsn.reveal(),
        send_default_pii=False,
        before_send=before_send,
        server_name=component,
        **options,
    )
    sentry_sdk.set_tag("component", component)
    return True
