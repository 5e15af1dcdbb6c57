"""Latency probes: the score topic's end to end latency per event, and where it went.

``LatencyProbe`` consumes the score topic. Latency = the score record's arrival here minus its
``event_time_ms`` (the input's Kafka timestamp), kept in an HDR histogram (microseconds, 3
significant digits), overall and per second. The probe shares the machine with what it measures,
so it is kept cheap: the timestamp is read with a bytes regex instead of a JSON decode, and each
consumed batch is recorded grouped by value at 10 µs resolution (one HDR call per distinct value
instead of one per event). Both probes take messages as soon as one is there
(``load.kafka_io.consume_ready``), never waiting out a batch timeout.

With ``stages=True`` it also keeps, per record, the input's partition and offset, ``scored_at_ms``
(taken after the model ran, before the record is rendered) and the record's own Kafka timestamp,
which is the broker's append time when the score topic has ``message.timestamp.type=LogAppendTime``.
``ArrivalProbe`` consumes the *input* topic with a bare consumer and keeps when each event arrived
there, and times a synchronous offset commit once a second. ``breakdown`` joins the two per event:

    event time ─► bare consumer got it ─► service scored it ─► score appended ─► probe got it
      (input: producer linger, broker)  (consume, intake wait,  (render, produce,   (output: fetch)
                                         decode, features, model) linger, request)
"""

from __future__ import annotations

import re
import threading
import time
import uuid
from array import array
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
from confluent_kafka import TIMESTAMP_LOG_APPEND_TIME, Consumer, Message
from confluent_kafka import TopicPartition as KafkaTopicPartition
from hdrh.histogram import HdrHistogram

from load.kafka_io import consume_ready

PERCENTILES = (50.0, 90.0, 99.0, 99.9)
RESOLUTION_MICROS = 10
_EVENT_TIME = re.compile(rb'"event_time_ms":(\d+)')
_SCORED_AT = re.compile(rb'"scored_at_ms":(\d+)')
_SOURCE = re.compile(rb'"partition":(\d+),"offset":(\d+)')
MAX_MICROS = 120_000_000
COMMIT_EVERY = 1.0
"""Seconds between the arrival probe's timed synchronous commits."""


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


def summarize_ms(values: np.ndarray) -> dict[str, float]:
    """The same percentiles of plain millisecond values (stages may be slightly negative: several
    of their ends are whole milliseconds)."""
    if not len(values):
        return {}
    out = {f"p{p:g}_ms": round(float(np.percentile(values, p)), 2) for p in PERCENTILES}
    out["max_ms"] = round(float(values.max()), 2)
    out["count"] = len(values)
    return out


def _consumer(bootstrap: str, group: str) -> Consumer:
    return Consumer({
        "bootstrap.servers": bootstrap, "group.id": f"{group}-{uuid.uuid4().hex[:8]}",
        "auto.offset.reset": "latest", "enable.auto.commit": False, "session.timeout.ms": 6000,
        "fetch.wait.max.ms": 10,
    })


class ScoreRecord(Protocol):
    """What ``Stages`` reads of a consumed score record (a confluent-kafka ``Message``)."""

    def value(self) -> bytes | None: ...
    def timestamp(self) -> tuple[int, int]: ...


@dataclass
class Stages:
    """Per score record, in arrival order (milliseconds since the epoch; -1 where unknown)."""

    partition: array[int] = field(default_factory=lambda: array("q"))
    offset: array[int] = field(default_factory=lambda: array("q"))
    event: array[int] = field(default_factory=lambda: array("q"))
    scored: array[int] = field(default_factory=lambda: array("q"))
    appended: array[int] = field(default_factory=lambda: array("q"))
    received: array[float] = field(default_factory=lambda: array("d"))

    def add(self, msg: ScoreRecord, now_ms: float) -> None:
        value = msg.value() or b""
        source, event, scored = _SOURCE.search(value), _EVENT_TIME.search(value), _SCORED_AT.search(value)
        if source is None or event is None or scored is None:
            return
        ts_type, ts = msg.timestamp()
        self.partition.append(int(source.group(1)))
        self.offset.append(int(source.group(2)))
        self.event.append(int(event.group(1)))
        self.scored.append(int(scored.group(1)))
        self.appended.append(ts if ts_type == TIMESTAMP_LOG_APPEND_TIME else -1)
        self.received.append(now_ms)


@dataclass
class ProbeResult:
    total: HdrHistogram = field(default_factory=new_histogram)
    timeline: list[dict[str, Any]] = field(default_factory=list)
    received: int = 0
    stages: Stages | None = None


class LatencyProbe(threading.Thread):
    """Runs until ``stop`` is set, or ``expected`` records have arrived."""

    def __init__(self, bootstrap: str, topic: str, expected: int | None = None, stages: bool = False) -> None:
        super().__init__(name="latency-probe", daemon=True)
        self.expected = expected
        self.result = ProbeResult(stages=Stages() if stages else None)
        self.stop_event = threading.Event()
        self.ready = threading.Event()
        self._consumer = _consumer(bootstrap, "probe")
        self._consumer.subscribe([topic], on_assign=lambda _c, _p: self.ready.set())

    def run(self) -> None:
        r = self.result
        second = new_histogram()
        mark = time.monotonic() + 1.0
        count_this_second = 0
        try:
            while not self.stop_event.is_set():
                messages = [m for m in consume_ready(self._consumer, 5000, 0.05) if m.error() is None]
                now_ms = time.time() * 1000
                stamps = [found.group(1) for m in messages if (found := _EVENT_TIME.search(m.value() or b""))]
                if stamps:
                    micros = (now_ms - np.array(stamps, dtype=np.float64)) * 1000
                    micros = np.clip(micros // RESOLUTION_MICROS * RESOLUTION_MICROS, 1, MAX_MICROS).astype(np.int64)
                    values, counts = np.unique(micros, return_counts=True)
                    for value, count in zip(values.tolist(), counts.tolist(), strict=True):
                        r.total.record_value(value, count)
                        second.record_value(value, count)
                if r.stages is not None:
                    for m in messages:
                        r.stages.add(m, now_ms)
                r.received += len(messages)
                count_this_second += len(messages)
                if time.monotonic() >= mark:
                    r.timeline.append({"at": time.monotonic(), "events": count_this_second, **summarize(second)})
                    second, count_this_second, mark = new_histogram(), 0, mark + 1.0
                if self.expected is not None and r.received >= self.expected:
                    break
        finally:
            self._consumer.close()


@dataclass
class Arrivals:
    """When each input event arrived at a bare consumer (ms since the epoch, by partition and
    offset), and the synchronous commits timed on the way."""

    first_offset: dict[int, int] = field(default_factory=dict)
    by_partition: dict[int, array[float]] = field(default_factory=dict)
    event_ms: array[int] = field(default_factory=lambda: array("q"))
    received_ms: array[float] = field(default_factory=lambda: array("d"))
    commit_ms: list[float] = field(default_factory=list)

    def add(self, partition: int, offset: int, event_ms: int, now_ms: float) -> None:
        """One event, in consumption order (a partition's offsets arrive in order, from the first)."""
        times = self.by_partition.get(partition)
        if times is None:
            times = self.by_partition[partition] = array("d")
            self.first_offset[partition] = offset
        times.append(now_ms)
        self.event_ms.append(event_ms)
        self.received_ms.append(now_ms)

    def arrived_at(self, partition: np.ndarray, offset: np.ndarray) -> np.ndarray:
        """When the events at these positions arrived (NaN for those not seen)."""
        out = np.full(len(partition), np.nan)
        for p, arrivals in self.by_partition.items():
            times = np.frombuffer(arrivals, dtype=np.float64)
            index = offset - self.first_offset[p]
            hit = (partition == p) & (index >= 0) & (index < len(times))
            out[hit] = times[index[hit]]
        return out


class ArrivalProbe(threading.Thread):
    """A bare consumer on the input topic: fills ``data`` (``Arrivals``), and times a synchronous
    offset commit once a second."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        super().__init__(name="arrival-probe", daemon=True)
        self.stop_event = threading.Event()
        self.ready = threading.Event()
        self.data = Arrivals()
        self._consumer = _consumer(bootstrap, "arrival-probe")
        self._consumer.subscribe([topic], on_assign=lambda _c, _p: self.ready.set())

    def run(self) -> None:
        next_commit = time.monotonic() + COMMIT_EVERY
        last: Message | None = None
        try:
            while not self.stop_event.is_set():
                messages = [m for m in consume_ready(self._consumer, 5000, 0.05) if m.error() is None]
                now_ms = time.time() * 1000
                for m in messages:
                    self.data.add(int(m.partition() or 0), int(m.offset() or 0), m.timestamp()[1], now_ms)
                last = messages[-1] if messages else last
                if last is not None and time.monotonic() >= next_commit:
                    self._timed_commit(last)
                    next_commit = time.monotonic() + COMMIT_EVERY
        finally:
            self._consumer.close()

    def _timed_commit(self, last: Message) -> None:
        position = KafkaTopicPartition(str(last.topic()), int(last.partition() or 0), int(last.offset() or 0) + 1)
        started = time.monotonic()
        self._consumer.commit(offsets=[position], asynchronous=False)
        self.data.commit_ms.append((time.monotonic() - started) * 1000)


def breakdown(stages: Stages, arrivals: Arrivals) -> dict[str, dict[str, float]]:
    """Per event, the time between one point of its way and the next (see the module docstring).
    Each row's percentiles are over its own events; the rows' percentiles do not add up."""
    partition, offset = np.frombuffer(stages.partition, dtype=np.int64), np.frombuffer(stages.offset, dtype=np.int64)
    event = np.frombuffer(stages.event, dtype=np.int64).astype(np.float64)
    scored = np.frombuffer(stages.scored, dtype=np.int64).astype(np.float64)
    appended = np.frombuffer(stages.appended, dtype=np.int64).astype(np.float64)
    received = np.frombuffer(stages.received, dtype=np.float64)
    arrived = arrivals.arrived_at(partition, offset)
    seen = ~np.isnan(arrived)
    known = appended >= 0
    bare_in = np.frombuffer(arrivals.received_ms, dtype=np.float64) - np.frombuffer(arrivals.event_ms, dtype=np.int64)
    rows = {
        "input: produced -> a bare consumer has it (all inputs)": bare_in,
        "service: a bare consumer has it -> scored (consume, intake wait, decode, features, model)":
            (scored - arrived)[seen],
        "event time -> scored": scored - event,
        "scored -> score record appended (render, produce, linger.ms, produce request)": (appended - scored)[known],
        "score record appended -> probe has it": (received - appended)[known],
        "scored -> probe has it": received - scored,
        "end to end (event time -> probe has it)": received - event,
    }
    out = {name: summarize_ms(values) for name, values in rows.items()}
    out["bare synchronous offset commit (once a second)"] = summarize_ms(np.array(arrivals.commit_ms))
    return out
