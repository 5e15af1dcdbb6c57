"""Hot reload: a new model version is built and loaded on a thread of its own, beside the runner
that keeps serving, and handed to the stream loop, which swaps it in between two batches.

What triggers it: a model file that changed (its size or modification time), a registry alias
that moved (the reference resolves to another file), or a request (``SIGHUP``). ``load`` checks
the new runner against the feature spec and warms it up; if anything fails, the serving runner
stays, the failure is logged on one line and counted, and that same state is not tried again
until something changes once more (or a request forces it).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass

from streamscore.config import Settings
from streamscore.core.challengers import Challengers
from streamscore.core.model import ModelRunner
from streamscore.metrics import Metrics
from streamscore.registry.resolve import resolve_settings

log = logging.getLogger(__name__)

Fingerprint = tuple[tuple[str, str, int, int], ...]
"""Per model: (key, file, size, modification time in ns)."""


def fingerprint(settings: Settings) -> tuple[Fingerprint, str]:
    """What the models resolve to now, and that in words (``model: fraud@3``); raises ConfigError
    or OSError when it cannot be read."""
    resolved, found = resolve_settings(settings)
    out = []
    for key, model in resolved.all_models:
        stat = model.path.stat()
        out.append((key, str(model.path), stat.st_size, stat.st_mtime_ns))
    words = ", ".join(f"{key}: {f.name}@{f.version}" if (f := found.get(key)) else f"{key}: {path}"
                      for key, path, _, _ in out)
    return tuple(out), words


@dataclass
class Models:
    """What a reload replaces: the champion (a model or a graph) and the shadow and canary."""

    runner: ModelRunner
    challengers: Challengers

    @property
    def name(self) -> str:
        return self.runner.name

    @property
    def version(self) -> str:
        return self.runner.version

    def load(self) -> None:
        self.runner.load()
        self.challengers.load()

    def close(self) -> None:
        self.runner.close()
        self.challengers.close()


class Reloader:
    """Loads new versions in the background; ``take`` hands over at most one set, ready to serve."""

    def __init__(self, settings: Settings, build: Callable[[], Models], metrics: Metrics,
                 requested: threading.Event | None = None) -> None:
        self.settings = settings
        self.build = build
        self.metrics = metrics
        self.requested = requested or threading.Event()
        """Set (by ``SIGHUP``) to ask for a reload whether or not anything changed."""
        self.interval = settings.reload.interval_s if settings.reload.watch else None
        self._current = fingerprint(settings)[0]
        self._failed: Fingerprint | None = None
        self._pending: Models | None = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="model-reload", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self.requested.set()
        if self._thread.is_alive():
            self._thread.join()
        pending = self.take()
        if pending is not None:
            pending.close()

    def take(self) -> Models | None:
        """The loaded new models, once (None when there are none)."""
        with self._lock:
            runner, self._pending = self._pending, None
        return runner

    def _run(self) -> None:
        while not self._stop.is_set():
            self.requested.wait(self.interval)
            if self._stop.is_set():
                return
            forced = self.requested.is_set()
            self.requested.clear()
            self.check(forced)

    def check(self, forced: bool = False) -> bool:
        """Load a new runner if the models changed (or ``forced``); True when one is ready to take."""
        now: Fingerprint | None = None
        what = "the models"
        try:
            now, what = fingerprint(self.settings)
            if not forced and now in (self._current, self._failed):
                return False
            models = self.build()
            models.load()
        except Exception as exc:  # noqa: BLE001 - whatever fails, the serving runner stays
            self._failed = now
            self.metrics.model_reloads.labels("failed").inc()
            log.error("model reload failed (%s), the serving version stays: %s", what,
                      (str(exc).splitlines() or [type(exc).__name__])[0])
            return False
        with self._lock:
            stale, self._pending = self._pending, models
        if stale is not None:
            stale.close()
        self._current, self._failed = now, None
        log.info("model reload (%s): loaded and warmed up beside the serving version; swapping it in at "
                 "the next batch", what)
        return True
