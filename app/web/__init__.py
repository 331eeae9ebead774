"""The Flask app factory: ingress, catalog, JSON API, health and metrics blueprints."""

from __future__ import annotations

import logging
from typing import Any

from flask import Flask, current_app, jsonify, request
from werkzeug.exceptions import HTTPException

from app.config import Settings, SettingsError, load_settings
from app.ops.logs import configure_logging
from app.ops.observability import init_sentry
from app.runtime import Runtime
from app.task_names import producer

log = logging.getLogger(__name__)


def check_web_settings(settings: Settings) -> None:
    """What the web process needs beyond valid settings; `SettingsError` names the variable."""
    if not settings.webhook_secrets and not settings.allow_unsigned_webhooks:
        raise SettingsError(
            "BITBUCKET_WEBHOOK_SECRET: required by the web process to verify webhooks "
            "(set BBSYNC_ALLOW_UNSIGNED_WEBHOOKS=true only for development)"
        )


def create_app(settings: Settings | None = None, runtime: Runtime | None = None) -> Flask:
    """Build the web app. Settings are read from the environment when not given."""
    settings = settings or (runtime.settings if runtime else load_settings())
    runtime = runtime or Runtime(settings)
    check_web_settings(settings)
    configure_logging(settings)
    if not settings.webhook_secrets:
        log.warning(
            "webhooks are accepted unsigned (BBSYNC_ALLOW_UNSIGNED_WEBHOOKS): development only"
        )
    init_sentry(settings, component="web")

    app = Flask(__name__)
    app.json.sort_keys = False  # type: ignore[attr-defined]
    app.extensions["bbsync"] = runtime
    # Sends tasks by name; connects to the broker only when a delivery is enqueued.
    app.extensions["bbsync.producer"] = producer(settings.broker_url)
    from app.web.ingress import SpoolWatch

    app.extensions["bbsync.spool_watch"] = SpoolWatch()
    app.config["MAX_CONTENT_LENGTH"] = settings.webhook_max_bytes + 64 * 1024

    from app.web.api import api
    from app.web.api_access import access_api
    from app.web.api_activity import activity_api
    from app.web.catalog import catalog
    from app.web.converters import WorkspaceConverter
    from app.web.health import health
    from app.web.metrics import metrics
    from app.web.openapi import openapi
    from app.web.status import status_page
    from app.web.webhooks import webhooks
    from app.web.webhooks_dc import webhooks_dc

    # Before the blueprints: their rules read it (a Data Center workspace holds a '/').
    app.url_map.converters["workspace"] = WorkspaceConverter
    app.register_blueprint(health)
    app.register_blueprint(metrics)
    app.register_blueprint(api)
    app.register_blueprint(activity_api)
    app.register_blueprint(access_api)
    app.register_blueprint(openapi)
    app.register_blueprint(status_page)
    app.register_blueprint(catalog)
    app.register_blueprint(webhooks)
    app.register_blueprint(webhooks_dc)

    @app.before_request
    def _refuse_nul() -> Any:
        # No text column takes NUL (PostgreSQL refuses it: a 500); no name or filter has one.
        if "\x00" in request.path or any(
            "\x00" in key or "\x00" in value for key, value in request.args.items(multi=True)
        ):
            response = jsonify(
                error="invalid_request", message="NUL characters are not accepted in the URL"
            )
            response.status_code = 400
            return response
        return None

    @app.errorhandler(HTTPException)
    def _http_error(exc: HTTPException) -> Any:
        if exc.response is not None:  # a view aborted with its own (JSON) answer
            return exc.response
        # Every error at the edge is JSON naming what is wrong.
        response = jsonify(error=exc.name.lower().replace(" ", "_"), message=exc.description)
        return response, exc.code or 500

    return app


def runtime() -> Runtime:
    """The runtime of the app handling this request."""
    value: Runtime = current_app.extensions["bbsync"]
    return value
