"""SIGTERM/SIGINT as a stop request, SIGHUP as a reload request. Kept free of heavy imports, so
that the command line installs the handlers before it loads numpy, onnxruntime and librdkafka: a
signal that lands while the service is still starting asks for a clean stop instead of killing
the process."""

from __future__ import annotations

import logging
import signal
import threading
from types import FrameType

log = logging.getLogger(__name__)


def stop_on_signals(stop: threading.Event) -> None:
    """SIGTERM/SIGINT ask for a drain; a second one exits at once without committing more."""

    def handle(signum: int, _frame: FrameType | None) -> None:
        if stop.is_set():
            log.warning("second %s: exiting without finishing the drain", signal.Signals(signum).name)
            raise SystemExit(1)
        log.info("%s received: draining", signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, handle)
    signal.signal(signal.SIGINT, handle)


def reload_on_sighup(requested: threading.Event) -> None:
    """SIGHUP asks for the models to be loaded again (``streamscore.reload``)."""

    def handle(_signum: int, _frame: FrameType | None) -> None:
        log.info("SIGHUP received: reloading the models")
        requested.set()

    signal.signal(signal.SIGHUP, handle)
