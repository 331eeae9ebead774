"""Sentry: errors from every process, with secrets scrubbed before an event leaves."""

from __future__ import annotations

from typing import Any

import sentry_sdk
from sentry_sdk.integrations.celery import CeleryIntegration
from sentry_sdk.integrations.flask import FlaskIntegration

from app.config import Settings
from app.ops.logs import secret_values


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
        environment=settings.sentry_environment,
        release=settings.sentry_release or None,
        traces_sample_rate=settings.sentry_traces_sample_rate,
        # Beat tasks become Sentry cron monitors: a schedule that stops running alerts.
        integrations=[FlaskIntegration(), CeleryIntegration(monitor_beat_tasks=True)],
        **options,
    )
    sentry_sdk.set_tag("component", component)
    return True
