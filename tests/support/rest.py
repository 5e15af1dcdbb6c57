"""``streamscore serve`` as a real process on a free port, and reading its answers."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx

from load.faults.harness import ScenarioError, ServiceProcess, Topics, write_config
from streamscore.broker import free_port

UNUSED_TOPICS = Topics("rest-in", "rest-out", "rest-dlq", "rest-group", 1)
"""``serve`` reads the same configuration as ``run`` but connects to no broker."""


class RestProcess(ServiceProcess):
    """A service process that also serves REST on ``rest_port``."""

    def __init__(self, config: Path, log_path: Path, rest_port: int, entry: tuple[str, ...] = ("-m", "streamscore",
                                                                                                  "serve"),
                 env: dict[str, str] | None = None, args: tuple[str, ...] = ()) -> None:
        super().__init__(config, log_path, entry, env, args)
        self.rest_port = rest_port

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.rest_port}"

    def wait_rest_ready(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.alive():
                raise ScenarioError(f"service exited at start:\n{self.log_tail()}")
            try:
                if httpx.get(f"{self.url}/v2/health/ready", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise ScenarioError(f"REST not ready within {timeout:g}s:\n{self.log_tail()}")


def rest_config(workdir: Path, bootstrap: str = "127.0.0.1:1", topics: Topics = UNUSED_TOPICS,
                **overrides: Any) -> tuple[Path, int]:
    """The demo configuration with a ``serve`` section on a free port (``overrides['serve']`` merges
    in); returns the file and the REST port."""
    port = free_port()
    serve = {"host": "127.0.0.1", "port": port, **overrides.pop("serve", {})}
    return write_config(workdir, bootstrap, topics, serve=serve, **overrides), port


def start_rest(workdir: Path, env: dict[str, str] | None = None, **overrides: Any) -> RestProcess:
    """``streamscore serve`` on the demo model, ready to answer."""
    config, port = rest_config(workdir, **overrides)
    proc = RestProcess(config, workdir / f"serve-{port}.log", port, env=env)
    proc.start()
    proc.wait_rest_ready()
    return proc
