"""The Flask application of the simulator."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING

from flask import Flask

from bitbucket_sim.api import (
    admin,
    admin_repos,
    guards,
    hooks,
    oauth,
    people,
    pipelines,
    pullrequests,
    repositories,
    source,
    workspaces,
)
from bitbucket_sim.runtime import Simulator

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment


class SerializedRequests:
    """WSGI middleware running one request at a time under the simulator's lock.

    Answers are built eagerly, so the lock is released before the bytes go out. An answer an
    injected fault delays (`DELAY_KEY` in the environ) waits here, outside the lock, so a slow
    call does not hold up the others.
    """

    def __init__(self, app: WSGIApplication, lock: threading.RLock) -> None:
        self.app = app
        self.lock = lock

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        with self.lock:
            result = self.app(environ, start_response)
            try:
                body = [b"".join(result)]
            finally:
                close = getattr(result, "close", None)
                if close is not None:
                    close()
        delay = float(environ.get(guards.DELAY_KEY) or 0)
        if delay:
            time.sleep(delay)
        return body


def create_app(sim: Simulator) -> Flask:
    """A Flask app serving `sim`."""
    app = Flask("bitbucket_sim")
    app.extensions["bitbucket_sim"] = sim
    app.url_map.strict_slashes = False
    if sim.config.is_datacenter:
        from bitbucket_sim.datacenter.app import register

        register(app)
        app.wsgi_app = SerializedRequests(app.wsgi_app, sim.lock)  # type: ignore[method-assign]
        return app
    guards.install(app)
    for module in (
        repositories,
        source,
        pullrequests,
        pipelines,
        workspaces,
        people,
        hooks,
        oauth,
        admin,
        admin_repos,
    ):
        app.register_blueprint(module.blueprint)
    app.wsgi_app = SerializedRequests(app.wsgi_app, sim.lock)  # type: ignore[method-assign]
    return app
