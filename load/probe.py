"""Latency probe: consumes the score topic and measures end to end latency per event.

Latency = the score record's arrival here minus its ``event_time_ms`` (the input's Kafka
timestamp), kept in an HDR histogram (microseconds, 3 significant digits), overall and per second.
The probe shares the machine with what it measures, so it is kept cheap: the timestamp is read
with a bytes regex instead of a JSON decode, and each consumed batch is recorded grouped by value
at 10 µs resolution (one HDR call per distinct value instead of one per event).
"""

from __future__ import annotations

import re
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from confluent_kafka import Consumer
from hdrh.histogram import HdrHistogram

PERCENTILES = (50.0, 90.0, 99.0, 99.9)
RESOLUTION_MICROS = 10
_EVENT_TIME = re.compile(rb'"event_time_ms":(\d+)')
MAX_MICROS = 120_000_000


def new_histogram() -> HdrHistogram:
    return HdrHistogram(1, MAX_MICROS, 3)


def summarize(h: HdrHistogram) -> dict[str, float]:
    """Percentiles and max in milliseconds."""
    if h.get_total_count() == 0:
        return {}
    out = {f"p{p:g}_ms": h.get_value_at_percentile(p) / 1000 for p in PERCENTILES}
    out["max_ms"] = h.get_max_value() / 1000
    out["count"] = h.get_total_count()
    return out


@dataclass
class ProbeResult:
    total: HdrHistogram = field(default_factory=new_histogram)
    timeline: list[dict[str, Any]] = field(default_factory=list)
    received: int = 0


class LatencyProbe(threading.Thread):
    """Runs until ``stop`` is set, or ``expected`` records have arrived."""

    def __init__(self, bootstrap: str, topic: str, expected: int | None = None) -> None:
        super().__init__(name="latency-probe", daemon=True)
        self.expected = expected
        self.result = ProbeResult()
        self.stop_event = threading.Event()
        self.ready = threading.Event()
        self._consumer = Consumer({
            "bootstrap.servers": bootstrap, "group.id": f"probe-{uuid.uuid4().hex[:8]}",
            "auto.offset.reset": "latest", "enable.auto.commit": False, "session.timeout.ms": 6000,
            "fetch.wait.max.ms": 10,
        })
        self._consumer.subscribe([topic], on_assign=lambda _c, _p: self.ready.set())

    def run(self) -> None:
        r = self.result
        second = new_histogram()
        mark = time.monotonic() + 1.0
        count_this_second = 0
        try:
            while not self.stop_event.is_set():
                messages = [m for m in self._consumer.consume(5000, 0.05) if m.error() is None]
                now_ms = time.time() * 1000
                stamps = [found.group(1) for m in messages if (found := _EVENT_TIME.search(m.value() or b""))]
                if stamps:
                    micros = (now_ms - np.array(stamps, dtype=np.float64)) * 1000
                    micros = np.clip(micros // RESOLUTION_MICROS * RESOLUTION_MICROS, 1, MAX_MICROS).astype(np.int64)
                    values, counts = np.unique(micros, return_counts=True)
                    for value, count in zip(values.tolist(), counts.tolist(), strict=True):
                        r.total.record_value(value, count)
                        second.record_value(value, count)
                r.received += len(messages)
                count_this_second += len(messages)
                if time.monotonic() >= mark:
                    r.timeline.append({"at": time.monotonic(), "events": count_this_second, **summarize(second)})
                    second, count_this_second, mark = new_histogram(), 0, mark + 1.0
                if self.expected is not None and r.received >= self.expected:
                    break
        finally:
            self._consumer.close()
