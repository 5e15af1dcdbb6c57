"""The REST listener: the app on uvicorn (uvloop, httptools), in the foreground (``streamscore
serve``) or on a thread beside the stream (``streamscore run --serve``), over an already loaded
model runner, so both share one set of loaded models."""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Callable

import uvicorn

from streamscore.config import Settings
from streamscore.core.model import ModelRunner
from streamscore.core.scorer import Scorer, ScoringSpec
from streamscore.errors import ConfigError
from streamscore.metrics import Metrics
from streamscore.serving.app import RestApp
from streamscore.serving.catalog import ConfiguredCatalog

log = logging.getLogger(__name__)

START_TIMEOUT = 30.0


class RestServer:
    """Binds at construction (a taken port is a ConfigError naming ``serve.port``); serves on
    ``run`` (foreground, stops on SIGTERM/SIGINT) or ``start`` (a thread, stopped by ``stop``)."""

    def __init__(self, app: RestApp, host: str, port: int) -> None:
        self.app = app
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            sock.close()
            raise ConfigError(f"serve.port: cannot listen on {host}:{port} ({exc.strerror})") from None
        sock.listen(2048)
        self._socket = sock
        # log_config=None: uvicorn leaves the service's logging as the CLI configured it
        # proxy_headers=False: nothing reads the client address, so no X-Forwarded-* rewriting per request
        config = uvicorn.Config(app.asgi, log_config=None, access_log=False, lifespan="on",
                                timeout_graceful_shutdown=5, server_header=False, proxy_headers=False)
        self._server = uvicorn.Server(config)
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return int(self._socket.getsockname()[1])

    def run(self) -> None:
        """Serve until SIGTERM/SIGINT (in the main thread) or ``stop``; in-flight requests finish."""
        log.info("REST on port %d (Open Inference Protocol /v2, /v1/score, /openapi.json)", self.port)
        self._server.run(sockets=[self._socket])

    def start(self) -> None:
        """Serve on a thread (it installs no signal handlers); returns once the server listens."""
        self._thread = threading.Thread(target=self.run, name="rest", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + START_TIMEOUT
        while not self._server.started and self._thread.is_alive() and time.monotonic() < deadline:
            time.sleep(0.01)
        if not self._server.started:
            raise ConfigError(f"serve.port: the REST server did not start on port {self.port}")

    def stop(self) -> None:
        self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(10)
            self._thread = None
        self._socket.close()


def rest_server(settings: Settings, runner: ModelRunner, metrics: Metrics,
                current: Callable[[], ModelRunner] | None = None) -> RestServer:
    """The REST server over a loaded runner: the same scoring spec, graph and decisions as the stream.
    ``current``: the runner serving now, when a hot reload may replace ``runner``."""
    serve = settings.serve
    try:
        token = serve.bearer_token()
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    catalog = ConfiguredCatalog(Scorer(ScoringSpec.from_settings(settings), runner), settings, current)
    return RestServer(RestApp(catalog, serve, metrics, token), serve.host, serve.port)
