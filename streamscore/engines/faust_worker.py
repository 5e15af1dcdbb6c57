"""The Faust worker as the engine runs it: a consumer that honours ``fetch.wait.max.ms`` and reads
header names that are not UTF-8 (``faust_records``), and signal handlers that leave the stop to the
engine. Faust's and mode's INFO lines (every service starting and stopping) are quietened here."""

from __future__ import annotations

import logging
import signal
import threading
from typing import Any

import faust
from faust.transport.drivers import aiokafka as faust_aiokafka

from streamscore.engines.faust_records import read_header_names_tolerantly

NOISY = ("faust", "mode", "aiokafka", __name__)


def quiet_faust_logs() -> None:
    """Faust's and mode's loggers at WARNING unless streamscore logs at DEBUG."""
    if not logging.getLogger("streamscore").isEnabledFor(logging.DEBUG):
        for name in NOISY:
            logging.getLogger(name).setLevel(logging.WARNING)


class _ConsumerThread(faust_aiokafka.AIOKafkaConsumerThread):
    def _create_worker_consumer(self, transport: faust_aiokafka.Transport) -> Any:
        read_header_names_tolerantly()  # a header name that is not UTF-8 must not stop its partition
        consumer = super()._create_worker_consumer(transport)
        # Faust fixes the fetch wait at 1.5 s; a broker that holds fetches that long (the embedded one)
        # would hold every window as long: kafka.consumer's fetch.wait.max.ms applies, as it does to librdkafka
        consumer._fetch_max_wait_ms = getattr(self.app, "fetch_wait_ms", 500)
        return consumer


class _Consumer(faust_aiokafka.Consumer):
    def _new_consumer_thread(self) -> faust_aiokafka.AIOKafkaConsumerThread:
        return _ConsumerThread(self, loop=self.loop, beacon=self.beacon)


class _Transport(faust_aiokafka.Transport):
    Consumer = _Consumer


class App(faust.App):
    """faust.App whose consumer honours ``fetch.wait.max.ms``."""

    fetch_wait_ms = 500

    def _new_transport(self) -> Any:
        return _Transport(self.conf.broker_consumer, self)


class Worker(faust.Worker):
    """SIGTERM and SIGINT only set ``stop``: the agent finishes its window, commits, then stops the worker."""

    def __init__(self, app: faust.App, stop: threading.Event, **kwargs: Any) -> None:
        super().__init__(app, **kwargs)
        self.stop_event = stop

    def install_signal_handlers(self) -> None:
        for signum in (signal.SIGTERM, signal.SIGINT):
            self.loop.add_signal_handler(signum, self.stop_event.set)

    def shut_down(self) -> None:
        self._schedule_shutdown(signal.SIGTERM)
