"""The HTTP listener: /metrics for Prometheus, /healthz (liveness), /readyz (readiness), and the live
status page at / (plain HTML and JavaScript polling /status.json; no build step, nothing fetched from
elsewhere, for the embedded default where no Grafana runs)."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib.resources import files
from typing import Any

import orjson
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from streamscore.errors import ConfigError

log = logging.getLogger(__name__)


class Health:
    """What the probes report. The pipeline beats on every loop; a stalled loop is not live."""

    def __init__(self, stall_timeout: float = 120.0) -> None:
        self.stall_timeout = stall_timeout
        self.ready = False
        self._last_beat = time.monotonic()

    def beat(self) -> None:
        self._last_beat = time.monotonic()

    @property
    def live(self) -> bool:
        return time.monotonic() - self._last_beat < self.stall_timeout


class HttpServer:
    def __init__(self, host: str, port: int, registry: CollectorRegistry, health: Health,
                 status: Callable[[], dict[str, Any]] | None = None) -> None:
        try:
            self._server = ThreadingHTTPServer((host, port), _handler(registry, health, status))
        except OSError as exc:
            raise ConfigError(f"metrics.port: cannot listen on {host}:{port} ({exc.strerror})") from None
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="http", daemon=True)

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def start(self) -> None:
        self._thread.start()
        log.info("metrics and health on port %d (/metrics, /healthz, /readyz, the status page at /)", self.port)

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def _handler(registry: CollectorRegistry, health: Health,
             status: Callable[[], dict[str, Any]] | None) -> type[BaseHTTPRequestHandler]:
    page = files("streamscore.monitoring").joinpath("status.html").read_bytes() if status is not None else b""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            if status is not None and path == "/":
                self._send(200, page, "text/html; charset=utf-8")
            elif status is not None and path == "/status.json":
                self._send(200, orjson.dumps(status(), option=orjson.OPT_SERIALIZE_NUMPY), "application/json")
            elif path == "/metrics":
                self._send(200, generate_latest(registry), CONTENT_TYPE_LATEST)
            elif path == "/healthz":
                self._status(health.live)
            elif path == "/readyz":
                self._status(health.ready and health.live)
            else:
                self._send(404, b"not found\n", "text/plain")

        def _status(self, ok: bool) -> None:
            self._send(200 if ok else 503, b"ok\n" if ok else b"unavailable\n", "text/plain")

        def _send(self, code: int, body: bytes, content_type: str) -> None:
            self.send_response(code)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            return

    return Handler
