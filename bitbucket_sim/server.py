"""Serving the simulator over HTTP from Python: `SimServer(SimConfig(...)).start()`."""

from __future__ import annotations

import logging
import threading

from werkzeug.serving import BaseWSGIServer, WSGIRequestHandler, make_server

from bitbucket_sim.app import create_app
from bitbucket_sim.config import RateSpec, SimConfig
from bitbucket_sim.runtime import Simulator

__all__ = ["RateSpec", "SimConfig", "SimServer"]


class KeepAliveHandler(WSGIRequestHandler):
    """HTTP/1.1 with persistent connections, as Bitbucket serves: clients reuse sockets."""

    protocol_version = "HTTP/1.1"


class SimServer:
    """A simulator bound to `config.host:config.port` (0 picks a free port).

    `start()` serves from a daemon thread; `serve_forever()` blocks (the CLI uses it).
    """

    def __init__(self, config: SimConfig) -> None:
        self.config = config
        self.simulator = Simulator(config)
        self._server: BaseWSGIServer | None = None
        self._thread: threading.Thread | None = None

    def _bind(self) -> BaseWSGIServer:
        if self._server is None:
            if not self.config.log_requests:
                logging.getLogger("werkzeug").setLevel(logging.WARNING)
            app = create_app(self.simulator)
            self._server = make_server(
                self.config.host,
                self.config.port,
                app,
                threaded=True,
                request_handler=KeepAliveHandler,
            )
            self.simulator.public_url = self.url
            self.simulator.start()
        return self._server

    @property
    def port(self) -> int:
        """The bound port (after `start()`), else the configured one."""
        return self._server.server_port if self._server else self.config.port

    @property
    def url(self) -> str:
        """E.g. `http://127.0.0.1:54321`."""
        return f"http://{self.config.host}:{self.port}"

    @property
    def api_url(self) -> str:
        """Cloud: `url + "/2.0"`; Data Center: `rest_url`."""
        if self.config.is_datacenter:
            return self.rest_url
        return self.url + "/2.0"

    @property
    def rest_url(self) -> str:
        """Data Center's REST base, `url + "/rest/api/latest"`."""
        return self.url + "/rest/api/latest"

    def start(self) -> SimServer:
        """Bind and serve from a daemon thread; returns self."""
        server = self._bind()
        if self._thread is None:
            self._thread = threading.Thread(
                target=server.serve_forever, name="bitbucket-sim-http", daemon=True
            )
            self._thread.start()
        return self

    def serve_forever(self) -> None:
        """Bind and serve on the calling thread until `stop()` or an interrupt."""
        self._bind().serve_forever()

    def stop(self) -> None:
        """Stop serving and stop webhook deliveries."""
        if self._server is not None and self._thread is not None:
            # shutdown() waits for serve_forever(): only call it when a thread runs it.
            self._server.shutdown()
            self._thread.join(timeout=5)
        self._thread = None
        if self._server is not None:
            self._server.server_close()
            self._server = None
        self.simulator.stop()

    def __enter__(self) -> SimServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
