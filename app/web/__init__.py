"""The Flask app factory: ingress, catalog, JSON API, health and metrics blueprints."""

from __future__ import annotations

from typing import Any

from flask import Flask, current_app, jsonify
from werkzeug.exceptions import HTTPException

from app.config import Settings, load_settings
from app.logs import configure_logging
from app.observability import init_sentry
from app.runtime import Runtime


def create_app(settings: Settings | None = None, runtime: Runtime | None = None) -> Flask:
    """Build the web app. Settings are read from the environment when not given."""
    settings = settings or (runtime.settings if runtime else load_settings())
    runtime = runtime or Runtime(settings)
    configure_logging(settings)
    init_sentry(settings, component="web")

    app = Flask(__name__)
    app.json.sort_keys = False  # type: ignore[attr-defined]
    app.extensions["bbsync"] = runtime

    from app.web.api import api
    from app.web.catalog import catalog
    from app.web.health import health
    from app.web.metrics import metrics

    app.register_blueprint(health)
    app.register_blueprint(metrics)
    app.register_blueprint(api)
    app.register_blueprint(catalog)

    @app.errorhandler(HTTPException)
    def _http_error(exc: HTTPException) -> Any:
        # Every error at the edge is JSON naming what is wrong.
        response = jsonify(error=exc.name.lower().replace(" ", "_"), message=exc.description)
        return response, exc.code or 500

    return app


def runtime() -> Runtime:
    """The runtime of the app handling this request."""
    value: Runtime = current_app.extensions["bbsync"]
    return value
