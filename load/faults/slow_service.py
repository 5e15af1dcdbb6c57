"""``streamscore run`` with a model made slow on purpose: a test-only entry point.

    python -m load.faults.slow_service --delay 0.3 -c config.yaml

The delay is added to every batch the model scores (not to the warm-up), by wrapping the ONNX
runner that ``streamscore run`` would build; everything else is the production service. It logs
the backpressure (``streamscore.delivery.pausing`` at DEBUG) so a scenario can see partitions
being paused. Kept out of the ``streamscore`` package: production code has no delay hook.
"""

from __future__ import annotations

import argparse
import logging
import sys
import threading
import time
from pathlib import Path

import numpy as np

from streamscore.config import load_settings
from streamscore.errors import ConfigError, StreamScoreError
from streamscore.plugins import Plugins
from streamscore.runners.base import ModelRunner
from streamscore.runners.onnx import OnnxRunner
from streamscore.service import Service
from streamscore.signals import stop_on_signals


class SlowRunner:
    """Delegates to ``inner``; each ``predict`` first sleeps ``delay`` seconds."""

    def __init__(self, inner: ModelRunner, delay: float) -> None:
        self.inner = inner
        self.delay = delay
        self.name, self.version, self.provider = inner.name, inner.version, inner.provider

    def load(self) -> None:
        self.inner.load()
        # a runner settles its version (a digest) and its provider (the one in use) on load
        self.name, self.version, self.provider = self.inner.name, self.inner.version, self.inner.provider

    def predict(self, matrix: np.ndarray) -> np.ndarray:
        time.sleep(self.delay)
        return self.inner.predict(matrix)

    def close(self) -> None:
        self.inner.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-c", "--config", type=Path, required=True)
    parser.add_argument("--delay", type=float, required=True, help="seconds added to every model call")
    args = parser.parse_args()
    logging.basicConfig(level="INFO", format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    logging.getLogger("streamscore.delivery.pausing").setLevel(logging.DEBUG)
    try:
        settings = load_settings(args.config)
        stop = threading.Event()
        stop_on_signals(stop)
        plugins = Plugins.default()  # the production service, its ONNX runner made slow
        plugins.runners.register("onnx", lambda model, width: SlowRunner(OnnxRunner(model, width), args.delay))
        return Service(settings, plugins=plugins).run(stop)
    except ConfigError as exc:
        print(f"slow_service: error: {exc}", file=sys.stderr)
        return 2
    except StreamScoreError as exc:
        print(f"slow_service: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
