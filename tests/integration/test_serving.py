"""``streamscore run --serve``: REST beside the consumer, over the same loaded model and registry."""

from __future__ import annotations

import signal
from collections.abc import Callable
from pathlib import Path

import httpx
import orjson
import pytest

from streamscore.broker import free_port
from streamscore.demo.transactions import TransactionGenerator
from tests.integration.test_reload import registry
from tests.support import OutputReader, ServiceProcess, Topics, metric, produce, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.broker_agnostic]

EVENTS = 20


def test_run_with_serve_scores_the_topic_and_rest_with_the_same_model(
        bootstrap: str, topics: Callable[..., Topics], write_config: Callable[..., Path],
        service: Callable[..., ServiceProcess], output_reader: Callable[..., OutputReader]) -> None:
    t = topics(partitions=1)
    port = free_port()
    config = write_config(t, serve={"host": "127.0.0.1", "port": port})
    values = [v for _, v in TransactionGenerator(seed=5).encoded(EVENTS + 1)]
    produce(bootstrap, t.source, [(None, v, None) for v in values[:EVENTS]])
    reader = output_reader(t)
    proc = service(config, args=("--serve",))
    proc.wait_ready()
    streamed = reader.read_until(lambda records: len(records) >= EVENTS, 60, f"{EVENTS} score records")
    stream_record = orjson.loads(next(r.value for r in streamed if r.value))

    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
        answer = client.post("/v1/score/fraud-demo", content=values[EVENTS])
        assert answer.status_code == 200, answer.text
        assert answer.json()["model_version"] == stream_record["model_version"]
        assert client.get("/v2/health/ready").status_code == 200
    text = proc.metrics()
    assert metric(text, "streamscore_serve_requests_total", '{route="score",status="200"}') == 1, \
        "REST metrics are in the service's one registry"
    wait_for(lambda: metric(proc.metrics(), "streamscore_events_consumed_total") >= EVENTS, 30, "all consumed")
    proc.signal(signal.SIGTERM)
    assert proc.wait(60) == 0


def test_a_hot_reload_is_the_version_rest_serves_next(
        topics: Callable[..., Topics], write_config: Callable[..., Path],
        service: Callable[..., ServiceProcess], tmp_path: Path) -> None:
    reg = registry(tmp_path / "registry", tmp_path)
    port = free_port()
    config = write_config(topics(partitions=1), model={"path": "registry:fraud@production", "name": "fraud"},
                          registry={"root": str(reg.root)}, reload={"watch": True, "interval_s": 0.2},
                          serve={"host": "127.0.0.1", "port": port})
    proc = service(config, args=("--serve",))
    proc.wait_ready()
    request = {"inputs": [{"name": "features", "shape": [1, 15], "datatype": "FP32",
                           "data": [120.0, 0, 0, 0, 0, 1, 0, 0, 0, 2, 1, 13, 400, 1, 3]}]}

    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
        def infer_version() -> str:
            answer = client.post("/v2/models/fraud/infer", json=request)
            assert answer.status_code == 200, answer.text
            return str(answer.json()["model_version"])

        assert infer_version() == "1"
        reg.set_alias("fraud", "production", "2")  # the stream swaps it in between (idle) polls
        wait_for(lambda: infer_version() == "2", 60, "infer answering with version 2")
        assert [(m["name"], m["versions"]) for m in client.get("/v2/models").json()["models"]] == [("fraud", ["2"])]
        assert client.get("/v2/models/fraud/versions/1").status_code == 404, "the old version is gone"
    assert metric(proc.metrics(), "streamscore_model_reloads_total", '{result="ok"}') == 1
    proc.signal(signal.SIGTERM)
    assert proc.wait(60) == 0
