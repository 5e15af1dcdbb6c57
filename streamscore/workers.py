"""``streamscore run --workers N``: N scoring processes in one consumer group on one host.

Each worker is a plain ``streamscore run`` child with its own metrics port (base port + index);
the parent forwards SIGTERM/SIGINT and exits with the worst child exit code.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import FrameType

log = logging.getLogger(__name__)


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
        children.append(subprocess.Popen([*args, "run", "-c", str(config)], env=env))
    log.info("started %d workers (pids %s)", workers, ", ".join(str(c.pid) for c in children))

    def forward(signum: int, _frame: FrameType | None) -> None:
        for child in children:
            if child.poll() is None:
                child.send_signal(signum)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    while any(c.poll() is None for c in children):
        if any(c.returncode not in (None, 0) for c in children):  # one failed: stop the others cleanly
            forward(signal.SIGTERM, None)
        time.sleep(0.2)
    codes = [c.returncode for c in children]
    log.info("workers exited with %s", codes)
    return max(codes, key=abs)
