"""Every Prometheus metric streamscore exports, in a registry of its own (no global state).

Counters are incremented once per batch; the end-to-end latency histogram takes a whole batch of
observations at once (numpy bucketing) instead of one Python call per event.
"""

from __future__ import annotations

import collections
import contextlib
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, ClassVar

import numpy as np
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.metrics import MetricWrapperBase
from prometheus_client.registry import Collector

from streamscore.core.records import ScoredBatch
from streamscore.monitoring.drift import DriftMonitor

LATENCY_BUCKETS = (
    0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.025, 0.03, 0.04, 0.05, 0.075,
    0.1, 0.15, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0, 30.0, 60.0,
)
BATCH_BUCKETS = (1, 2, 5, 10, 25, 50, 100, 250, 500, 1000, 2000, 5000, 10000, 20000, 50000)
INFERENCE_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


class BatchHistogram(Collector):
    """A Prometheus histogram fed with arrays; also answers quantiles for progress displays."""

    def __init__(self, name: str, documentation: str, buckets: Sequence[float]) -> None:
        self.name = name
        self.documentation = documentation
        self.bounds = np.asarray(buckets, dtype=np.float64)
        self._counts = np.zeros(len(buckets) + 1, dtype=np.int64)
        self._sum = 0.0
        self._lock = threading.Lock()

    def observe_many(self, values: np.ndarray) -> None:
        if values.size == 0:
            return
        slots = np.searchsorted(self.bounds, values, side="left")
        counts = np.bincount(slots, minlength=len(self._counts))
        with self._lock:
            self._counts += counts
            self._sum += float(values.sum())

    @property
    def count(self) -> int:
        return int(self._counts.sum())

    def counts(self) -> list[int]:
        """Observations per bucket (not cumulative; the last one is above every bound)."""
        with self._lock:
            return [int(c) for c in self._counts]

    def quantile(self, q: float) -> float:
        """Upper bound of the bucket holding quantile ``q`` (NaN when empty)."""
        with self._lock:
            cumulative = np.cumsum(self._counts)
        if cumulative[-1] == 0:
            return float("nan")
        slot = int(np.searchsorted(cumulative, q * cumulative[-1], side="left"))
        return float(self.bounds[slot]) if slot < len(self.bounds) else float("inf")

    def collect(self) -> Iterator[HistogramMetricFamily]:
        with self._lock:
            cumulative = np.cumsum(self._counts).tolist()
            total = self._sum
        buckets = [(repr(float(b)), c) for b, c in zip(self.bounds.tolist(), cumulative, strict=False)]
        buckets.append(("+Inf", cumulative[-1]))
        family = HistogramMetricFamily(self.name, self.documentation)
        family.add_metric([], buckets, total)
        yield family


def _samples(metric: MetricWrapperBase, suffix: str = "") -> list[Any]:
    return [s for family in metric.collect() for s in family.samples if s.name == family.name + suffix]


def _total(metric: MetricWrapperBase) -> float:
    """An unlabelled counter's or gauge's value."""
    return float(sum(s.value for s in _samples(metric, "_total") or _samples(metric)))


class DriftCollector(Collector):
    """The drift and data quality gauges, computed from the monitor's window at each scrape (the
    pipeline only counts bins per batch). Without a monitor (no profile) the families are empty."""

    LABELS: ClassVar[dict[str, tuple[str, ...]]] = {
        "streamscore_feature_psi": ("feature",),
        "streamscore_feature_default_rate": ("feature",),
        "streamscore_feature_default_rate_reference": ("feature",),
        "streamscore_feature_unknown_rate": ("feature",),
        "streamscore_feature_unknown_rate_reference": ("feature",),
        "streamscore_drift_threshold": ("check",),
    }

    def __init__(self) -> None:
        self.monitor: DriftMonitor | None = None
        self.thresholds: dict[str, float] = {}
        """``psi``: the PSI above which a feature or the score has drifted; ``default_rate`` and
        ``unknown_rate``: the rise over the reference rate that is a data quality problem."""

    def collect(self) -> Iterator[GaugeMetricFamily]:
        snap = self.monitor.snapshot() if self.monitor is not None else None
        families = {name: GaugeMetricFamily(name, doc, labels=list(self.LABELS.get(name, ())))
                    for name, doc in _DRIFT_HELP.items()}
        if snap is not None:
            for f in snap.features:
                families["streamscore_feature_psi"].add_metric([f.name], f.psi)
                for kind, live, ref in (("default", f.default_rate, f.reference_default_rate),
                                        ("unknown", f.unknown_rate, f.reference_unknown_rate)):
                    if live is not None and ref is not None:
                        families[f"streamscore_feature_{kind}_rate"].add_metric([f.name], live)
                        families[f"streamscore_feature_{kind}_rate_reference"].add_metric([f.name], ref)
            families["streamscore_score_psi"].add_metric([], snap.score_psi)
            families["streamscore_drift_window_events"].add_metric([], snap.events)
            for check, value in self.thresholds.items():
                families["streamscore_drift_threshold"].add_metric([check], value)
        yield from families.values()


_DRIFT_HELP = {
    "streamscore_feature_psi": "Population stability index of a feature over the sliding window against the "
                               "model's reference profile (NaN until the window holds monitoring.min_events).",
    "streamscore_score_psi": "Population stability index of the score over the sliding window against the "
                             "reference profile.",
    "streamscore_feature_default_rate": "Share of the window's scored events where an optional feature holds "
                                        "its default (absent, or sent as it).",
    "streamscore_feature_default_rate_reference": "The same share in the reference profile.",
    "streamscore_feature_unknown_rate": "Share of the window's scored events whose category feature is not one "
                                        "of its categories (or missing).",
    "streamscore_feature_unknown_rate_reference": "The same share in the reference profile.",
    "streamscore_drift_window_events": "Scored events in the drift window.",
    "streamscore_drift_threshold": "The configured drift and data quality thresholds (monitoring.*), by check: "
                                   "psi, default_rate and unknown_rate (rises over the reference).",
}


@dataclass(frozen=True, slots=True)
class MetricDescription:
    """One exported metric family, for the metrics reference in the README."""

    name: str
    type: str
    labels: tuple[str, ...]
    help: str


@dataclass(slots=True)
class Totals:
    """Running counts, for the demo's progress line and the shutdown log."""

    consumed: int = 0
    scored: int = 0
    dead_lettered: int = 0
    decisions: dict[str, int] = field(default_factory=dict)

    def add(self, size: int, result: ScoredBatch, labels: Sequence[str], decisions: Sequence[int]) -> None:
        """One scored batch, with its count per decision label (``Metrics.count_batch``)."""
        self.consumed += size
        self.scored += result.decisions.size
        self.dead_lettered += len(result.rejections)
        for label, count in zip(labels, decisions, strict=True):
            self.decisions[label] = self.decisions.get(label, 0) + count


class Metrics:
    """The service's metrics; one instance per process, passed to the stages that report."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.consumed = Counter("streamscore_events_consumed", "Events consumed from source topics.", registry=r)
        self.scored = Counter("streamscore_events_scored", "Events scored and written to the destination topic.",
                              registry=r)
        self.dead_lettered = Counter("streamscore_events_dead_lettered",
                                     "Events written to the dead-letter topic, by reason.", ["reason"], registry=r)
        self.decisions = Counter("streamscore_decisions", "Decisions made, by label.", ["decision"], registry=r)
        self.batch_size = Histogram("streamscore_batch_size", "Events per scored batch.", buckets=BATCH_BUCKETS,
                                    registry=r)
        self.inference_seconds = Histogram("streamscore_model_inference_seconds",
                                           "Model call time per batch.", buckets=INFERENCE_BUCKETS, registry=r)
        self.end_to_end = BatchHistogram(
            "streamscore_end_to_end_latency_seconds",
            "From the event's Kafka timestamp to its output being acknowledged.", LATENCY_BUCKETS)
        r.register(self.end_to_end)
        self.in_flight = Gauge("streamscore_in_flight_events", "Outputs produced but not yet acknowledged.",
                               registry=r)
        self.uncommitted = Gauge("streamscore_uncommitted_events",
                                 "Events consumed whose offsets are not yet committed (bounded by max_in_flight).",
                                 registry=r)
        self.pauses = Counter("streamscore_partition_pauses",
                              "Times consumption was paused: the uncommitted window was full, or the model was down.",
                              registry=r)
        self.commits = Counter("streamscore_commits", "Offset commits made.", registry=r)
        self.commit_failures = Counter("streamscore_commit_failures", "Offset commits that failed.", registry=r)
        self.delivery_failures = Counter("streamscore_delivery_failures",
                                         "Output records the broker did not accept.", registry=r)
        self.assigned_partitions = Gauge("streamscore_assigned_partitions",
                                         "Source partitions assigned to this instance.", registry=r)
        self.consumer_lag = Gauge("streamscore_consumer_lag",
                                  "Events in a source partition past the position its group would resume from.",
                                  ["topic", "partition"], registry=r)
        self.transaction_aborts = Counter("streamscore_transaction_aborts",
                                          "Exactly-once transactions aborted and redone.", registry=r)
        self.model_failures = Counter("streamscore_model_failures",
                                      "Batches the model failed on by itself (not because of their rows); "
                                      "nothing is dead-lettered for them.", registry=r)
        self.breaker_open = Gauge("streamscore_model_breaker_open",
                                  "1 while the model breaker keeps the stream paused (the model is failing), else 0.",
                                  registry=r)
        self.stage_rows = Counter("streamscore_graph_stage_rows",
                                  "Rows each model of a graph was called with, by model (a cascade's second "
                                  "stage counts only its gated rows).", ["stage"], registry=r)
        self.model_reloads = Counter("streamscore_model_reloads",
                                     "New model versions loaded beside the serving one, by result: ok (swapped in "
                                     "at the next batch) or failed (the serving version stays).", ["result"],
                                     registry=r)
        self.shadow_compared = Counter("streamscore_shadow_compared",
                                       "Events the shadow model scored beside the champion.", registry=r)
        self.shadow_agreements = Counter("streamscore_shadow_agreements",
                                         "Of those, events where the shadow's decision equals the champion's.",
                                         registry=r)
        self.shadow_abs_difference = Counter("streamscore_shadow_score_abs_difference",
                                             "Sum of |shadow score - champion score| over the compared events.",
                                             registry=r)
        self.shadow_agreement_ratio = Gauge("streamscore_shadow_decision_agreement_ratio",
                                            "Decision agreement rate of the shadow with the champion since start.",
                                            registry=r)
        self.shadow_mean_abs_difference = Gauge("streamscore_shadow_score_mean_abs_difference",
                                                "Mean |shadow score - champion score| since start.", registry=r)
        self.canary_events = Counter("streamscore_canary_events",
                                     "Events the canary scored and decided for instead of the champion.", registry=r)
        self._shadow_sums = [0, 0, 0.0]
        """compared, agreed, absolute difference: the gauges' running totals."""
        self.model_info = Gauge("streamscore_model_info", "The loaded model (value 1).",
                                ["model", "version", "provider"], registry=r)
        self.serve_requests = Counter("streamscore_serve_requests",
                                      "REST requests answered, by route and HTTP status code.", ["route", "status"],
                                      registry=r)
        self.serve_request_seconds = Histogram("streamscore_serve_request_seconds",
                                               "REST request time, from the request to its response, by route.",
                                               ["route"], buckets=LATENCY_BUCKETS, registry=r)
        self.serve_batch_size = Histogram("streamscore_serve_batch_size",
                                          "Events (or tensor rows) of concurrent REST requests scored in one "
                                          "model call.", buckets=BATCH_BUCKETS, registry=r)
        self.serve_rejected = Counter("streamscore_serve_rejected_events",
                                      "REST events that could not be scored, by reason (the dead-letter reasons).",
                                      ["reason"], registry=r)
        self.drift = DriftCollector()
        r.register(self.drift)
        # streamscore_process_* (start time, CPU, memory, fds): the restart alert watches the start
        # time; prefixed so they cannot clash with another exporter's process_* on the same target.
        ProcessCollector(namespace="streamscore", registry=r)

    def exposition(self) -> tuple[bytes, str]:
        """The registry in Prometheus' text format, and its content type (``GET /metrics``)."""
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
    def watch_drift(self, monitor: DriftMonitor, psi: float, default_rate: float, unknown_rate: float) -> None:
        """Export the drift monitor's window and the thresholds the alert rules compare it with."""
        self.drift.monitor = monitor
        self.drift.thresholds = {"psi": psi, "default_rate": default_rate, "unknown_rate": unknown_rate}

    def status(self) -> dict[str, Any]:
        """What the status page shows, from this registry: totals (the page turns them into rates),
        latency percentiles, the models, the decision mix, dead letters by reason and the drift window."""
        drift = self.drift.monitor.snapshot() if self.drift.monitor is not None else None
        return {
            "time": time.time(),
            "models": [dict(s.labels) for s in _samples(self.model_info)],
            "consumed": _total(self.consumed), "scored": _total(self.scored),
            "dead_lettered": {s.labels["reason"]: s.value for s in _samples(self.dead_lettered, "_total")},
            "decisions": {s.labels["decision"]: s.value for s in _samples(self.decisions, "_total")},
            "latency_seconds": {f"p{round(q * 100)}": self.end_to_end.quantile(q) for q in (0.5, 0.9, 0.99)},
            "latency_buckets": {"bounds": self.end_to_end.bounds.tolist(), "counts": self.end_to_end.counts()},
            "in_flight": _total(self.in_flight), "uncommitted": _total(self.uncommitted),
            "drift": None if drift is None else {
                "events": drift.events, "score_psi": drift.score_psi, "thresholds": self.drift.thresholds,
                "features": [asdict(f) for f in drift.features]},
        }

    def forget_partition(self, topic: str, partition: int) -> None:
        """Drop the per-partition series of a partition this instance no longer owns."""
        with contextlib.suppress(KeyError):
            self.consumer_lag.remove(topic, str(partition))

    def count_stage(self, stage: str, rows: int) -> None:
        """Rows one model of a graph was called with."""
        self.stage_rows.labels(stage).inc(rows)

    def count_batch(self, size: int, result: ScoredBatch, labels: Sequence[str]) -> list[int]:
        """One scored batch: consumed, scored, batch size, inference time, decisions, dead letters by
        reason; returns the count per decision label."""
        self.consumed.inc(size)
        self.scored.inc(result.decisions.size)
        self.batch_size.observe(size)
        self.inference_seconds.observe(result.inference_seconds)
        for reason, count in collections.Counter(r.reason for r in result.rejections).items():
            self.dead_lettered.labels(str(reason)).inc(count)
        if result.canary_rows:
            self.canary_events.inc(result.canary_rows)
        if result.shadow is not None and result.shadow.compared:
            self._count_shadow(result.shadow.compared, result.shadow.agreed, result.shadow.abs_difference)
        return self.count_decisions(labels, result.decisions)

    def _count_shadow(self, compared: int, agreed: int, abs_difference: float) -> None:
        self.shadow_compared.inc(compared)
        self.shadow_agreements.inc(agreed)
        self.shadow_abs_difference.inc(abs_difference)
        sums = self._shadow_sums
        sums[0] += compared
        sums[1] += agreed
        sums[2] += abs_difference
        self.shadow_agreement_ratio.set(sums[1] / sums[0])
        self.shadow_mean_abs_difference.set(sums[2] / sums[0])

    def count_decisions(self, labels: Sequence[str], indices: np.ndarray) -> list[int]:
        """Count a batch's decisions (label indices); returns the count per label."""
        counts: list[int] = np.bincount(indices, minlength=len(labels)).tolist() if indices.size else [0] * len(labels)
        for label, count in zip(labels, counts, strict=True):
            if count:
                self.decisions.labels(label).inc(count)
        return counts

    def describe(self) -> list[MetricDescription]:
        """Every metric family this registry exports, in registration order, with its label names."""
        labels = {m._name: tuple(m._labelnames) for m in vars(self).values() if isinstance(m, MetricWrapperBase)}
        labels.update(self.drift.LABELS)
        return [MetricDescription(f.name, f.type, labels.get(f.name, ()), f.documentation)
                for f in self.registry.collect()]
