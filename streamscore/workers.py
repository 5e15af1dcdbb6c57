"""``streamscore run --workers N``: N scoring processes in one consumer group on one host.

Each worker is a plain ``streamscore run`` child with its own metrics port (base port + index);
the parent forwards SIGTERM/SIGINT (stop) and SIGHUP (reload the models) and exits with the worst
child exit code.
"""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import FrameType

log = logging.getLogger(__name__)

_PR_SET_PDEATHSIG = 1
"""prctl option (linux/prctl.h): the signal a process gets when its parent dies."""


def run_workers(config: Path, workers: int, metrics_port: int, log_level: str | None,
                transactional_id: str | None = None) -> int:
    children: list[subprocess.Popen[bytes]] = []
    for index in range(workers):
        env = dict(os.environ)
        if metrics_port:
            env["STREAMSCORE_METRICS__PORT"] = str(metrics_port + index)
        if transactional_id:  # one per worker: two producers sharing an id would fence each other
            env["STREAMSCORE_KAFKA__TRANSACTIONAL_ID"] = f"{transactional_id}-{index}"
        args = [sys.executable, "-m", "streamscore"]
        if log_level:
            args += ["--log-level", log_level]
        # preexec_fn is safe here: the parent runs no threads while it starts its workers
        children.append(subprocess.Popen([*args, "run", "-c", str(config)], env=env,
                                         preexec_fn=die_with_parent))  # noqa: PLW1509
    log.info("started %d workers (pids %s)", workers, ", ".join(str(c.pid) for c in children))

    def forward(signum: int, _frame: FrameType | None) -> None:
        for child in children:
            if child.poll() is None:
                child.send_signal(signum)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    signal.signal(signal.SIGHUP, forward)  # each worker reloads its models (its default would end the parent)
    stopping = False
    while True:
        polled = [c.poll() for c in children]  # every child, each turn: a worker that exited must be seen
        if all(code is not None for code in polled):
            break
        if not stopping and any(code not in (None, 0) for code in polled):
            stopping = True  # one failed: stop the others cleanly (once: a second SIGTERM cuts the drain)
            log.error("a worker exited with %s: stopping the others", next(c for c in polled if c not in (None, 0)))
            forward(signal.SIGTERM, None)
        time.sleep(0.2)
    codes = [c.returncode for c in children]
    log.info("workers exited with %s", codes)
    return max(codes, key=abs)


def die_with_parent() -> None:
    """In a worker (Linux): SIGTERM it when the parent dies, even by SIGKILL, so that no worker
    outlives ``streamscore run --workers`` (or ``batch --workers``) unsupervised."""
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
