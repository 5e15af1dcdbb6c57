"""The status page's data (``Metrics.status``) and its routes on the metrics listener; the page
itself is exercised in a real browser by tests/integration/test_status_page.py."""

from __future__ import annotations

import json
import math
import urllib.error
import urllib.request

import numpy as np
import pytest

from streamscore.core.records import Reason, Rejection, ScoredBatch
from streamscore.metrics import Metrics
from streamscore.monitoring.bins import Bins
from streamscore.monitoring.drift import DriftMonitor, Watched
from streamscore.server import Health, HttpServer


def _metrics() -> Metrics:
    metrics = Metrics()
    feature = Watched("amount", Bins.numeric(0, [10.0]), np.array([5.0, 5.0]))
    monitor = DriftMonitor([feature], Watched("score", Bins.numeric(0, [0.5]), np.array([9.0, 1.0])),
                           window_events=100, slots=1, min_events=50)
    metrics.watch_drift(monitor, 0.2, 0.1, 0.05)
    scores = np.array([0.1, 0.9], dtype=np.float32)
    result = ScoredBatch([0, 1], [b"", b""], scores, np.array([0, 2]), [Rejection(2, Reason.EMPTY, "empty")],
                         0.001, np.array([[1.0], [20.0]], dtype=np.float32))
    metrics.count_batch(3, result, ["approve", "review", "reject"])
    monitor.observe(result.features, scores)  # type: ignore[arg-type]
    metrics.end_to_end.observe_many(np.array([0.004, 0.02]))
    metrics.model_info.labels("m", "v1", "CPUExecutionProvider").set(1)
    return metrics


def test_status_holds_what_the_page_shows() -> None:
    status = _metrics().status()
    assert status["models"] == [{"model": "m", "version": "v1", "provider": "CPUExecutionProvider"}]
    assert (status["consumed"], status["scored"]) == (3, 2)
    assert status["dead_lettered"] == {"empty": 1}
    assert status["decisions"] == {"approve": 1, "reject": 1}
    assert status["latency_seconds"]["p50"] == 0.005
    assert sum(status["latency_buckets"]["counts"]) == 2
    drift = status["drift"]
    assert drift["events"] == 2 and drift["thresholds"]["psi"] == 0.2
    assert drift["features"][0]["name"] == "amount" and math.isnan(drift["features"][0]["psi"])  # < min_events


def test_the_listener_serves_the_page_and_its_data() -> None:
    server = HttpServer("127.0.0.1", 0, Metrics().registry, Health(), _metrics().status)
    server.start()
    base = f"http://127.0.0.1:{server.port}"
    try:
        with urllib.request.urlopen(base + "/", timeout=5) as page:
            assert page.headers["Content-Type"].startswith("text/html")
            assert b"<title>streamscore status</title>" in page.read()
        with urllib.request.urlopen(base + "/status.json", timeout=5) as data:
            status = json.loads(data.read())  # strict JSON: a NaN PSI comes as null
        assert status["drift"]["features"][0]["psi"] is None
    finally:
        server.stop()


def test_without_a_status_source_there_is_no_page() -> None:
    server = HttpServer("127.0.0.1", 0, Metrics().registry, Health())
    server.start()
    try:
        with pytest.raises(urllib.error.HTTPError) as missing:
            urllib.request.urlopen(f"http://127.0.0.1:{server.port}/", timeout=5)
        missing.value.close()
        assert missing.value.code == 404
    finally:
        server.stop()
