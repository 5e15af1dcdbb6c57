"""A model graph end to end: an ensemble config on the real broker scores every event once, and
every record names both model versions and the deciding stage."""

from __future__ import annotations

from collections.abc import Callable
from importlib.resources import as_file, files
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import orjson
import pytest
from onnx import TensorProto, helper

from streamscore.config import CascadeGraph, load_settings
from streamscore.core.features import FeatureExtractor
from streamscore.runners.onnx import OnnxRunner
from tests.integration.test_service import all_done, by_key, score_all, valid_events
from tests.support import OutputReader, ServiceProcess, Topics, metric, produce, stop_and_read, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.broker_agnostic]

WIDTH = 15
"""Columns of the demo features."""


def linear_model(path: Path) -> Path:
    """[None, 15] -> [None, 2] probabilities of a fixed linear score, for a second ensemble member."""
    w = np.zeros((WIDTH, 2), dtype=np.float32)
    w[0, 1] = 0.0005  # amount
    w[WIDTH - 1, 1] = 0.01  # tx_count_24h
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["features", "w"], ["probabilities"])], "linear",
        [helper.make_tensor_value_info("features", TensorProto.FLOAT, [None, WIDTH])],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, [None, 2])],
        initializer=[helper.make_tensor("w", TensorProto.FLOAT, [WIDTH, 2], w.ravel().tolist())])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, path)
    return path


def fraud_and_linear(tmp_path: Path) -> dict[str, dict[str, str]]:
    """The ``models`` section: the demo model as ``fraud`` (v-demo) and ``linear_model`` (v-lin)."""
    with as_file(files("streamscore.demo") / "fraud_model.onnx") as demo:
        fraud = {"path": str(demo), "version": "v-demo", "provider": "cpu", "score_output": "probabilities"}
    return {"fraud": fraud,
            "linear": {"path": str(linear_model(tmp_path / "linear.onnx")), "version": "v-lin", "provider": "cpu"}}


def test_an_ensemble_scores_every_event_once_with_both_model_versions(
    bootstrap: str, topics: Callable[..., Topics], write_config: Callable[..., Path],
    service: Callable[..., ServiceProcess], output_reader: Callable[..., OutputReader], tmp_path: Path,
) -> None:
    t = topics()
    config = write_config(t, model=None, models=fraud_and_linear(tmp_path),
                          graph={"type": "ensemble", "members": ["fraud", "linear"], "combine": "mean"})
    inputs = valid_events(2_000)
    outputs = score_all(bootstrap, t, config, service, output_reader, inputs)

    assert all(r.topic == t.destination for r in outputs), "valid events must not be dead-lettered"
    grouped = by_key(outputs)
    assert set(grouped) == {k for k, _, _ in inputs}
    assert all(len(v) == 1 for v in grouped.values()), "exactly one output per input"
    records = {k: orjson.loads(v[0].value or b"") for k, v in grouped.items()}
    for record in records.values():
        assert record["models"] == {"fraud": "v-demo", "linear": "v-lin"}
        assert record["stage"] == "ensemble"
        assert record["model"] == "ensemble:fraud+linear"
        assert record["model_version"] == "fraud=v-demo,linear=v-lin"

    settings = load_settings(config, env={})
    matrix = FeatureExtractor(settings.features).extract([orjson.loads(v) for _, v, _ in inputs], {}).matrix
    direct = []
    for name in ("fraud", "linear"):
        runner = OnnxRunner(settings.models[name], WIDTH)
        runner.load()
        direct.append(runner.predict(matrix))
    expected = (direct[0].astype(np.float64) + direct[1]) / 2
    got = np.array([records[k]["score"] for k, _, _ in inputs])
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-7)


def test_segment_routing_scores_each_event_with_its_segments_model(
    bootstrap: str, topics: Callable[..., Topics], write_config: Callable[..., Path],
    service: Callable[..., ServiceProcess], output_reader: Callable[..., OutputReader], tmp_path: Path,
) -> None:
    t = topics()
    config = write_config(t, model=None, models=fraud_and_linear(tmp_path),
                          graph={"type": "segments", "field": "merchant.country",
                                 "routes": {"US": "fraud", "GB": "linear"}, "max_loaded": 1})
    inputs = valid_events(600)
    outputs = score_all(bootstrap, t, config, service, output_reader, inputs)

    events: dict[bytes | None, dict[str, Any]] = {k: orjson.loads(v) for k, v, _ in inputs}
    route = {"US": "fraud", "GB": "linear"}
    grouped = by_key(outputs)
    assert set(grouped) == set(events) and all(len(v) == 1 for v in grouped.values())
    settings = load_settings(config, env={})
    runners = {name: OnnxRunner(settings.models[name], WIDTH) for name in route.values()}
    for runner in runners.values():
        runner.load()
    extractor = FeatureExtractor(settings.features)
    for key, (record,) in grouped.items():
        name = route.get(events[key]["merchant"]["country"])
        if name is None:
            assert record.topic == t.dead_letter and record.headers["streamscore.reason"] == b"no_model"
            continue
        assert record.topic == t.destination
        body = orjson.loads(record.value or b"")
        assert (body["stage"], body["models"]) == (name, {name: settings.models[name].version})
        direct = runners[name].predict(extractor.extract([events[key]], {}).matrix)[0]
        assert body["score"] == pytest.approx(float(direct), rel=1e-5, abs=1e-7)
    assert {orjson.loads(r[0].value or b"")["stage"] for r in grouped.values() if r[0].topic == t.destination} == \
        {"fraud", "linear"}, "both segments appear"


def test_a_cascades_second_model_sees_only_the_gated_rows(
    bootstrap: str, topics: Callable[..., Topics], write_config: Callable[..., Path],
    service: Callable[..., ServiceProcess], output_reader: Callable[..., OutputReader], tmp_path: Path,
) -> None:
    from load.faults.pattern_faults import cascade_models

    models, graph = cascade_models()
    t = topics()
    config = write_config(t, model=None, models=models, graph=graph)
    inputs = valid_events(500)
    produce(bootstrap, t.source, inputs)
    proc = service(config)
    proc.wait_ready()
    wait_for(all_done(proc, len(inputs)), 60, f"{len(inputs)} inputs consumed and committed")
    deep_rows = metric(proc.metrics(), "streamscore_graph_stage_rows_total", '{stage="deep"}')
    grouped = by_key(stop_and_read(output_reader(t), proc))

    settings = load_settings(config, env={})
    fast = OnnxRunner(settings.models["fast"], 5)
    fast.load()
    events = [orjson.loads(v) for _, v, _ in inputs]
    cols = settings.feature_columns(settings.models["fast"].features)
    first = fast.predict(np.ascontiguousarray(FeatureExtractor(settings.features).extract(events, {}).matrix[:, cols]))
    assert isinstance(settings.graph, CascadeGraph)
    lo, hi = settings.graph.band
    stages = {k: orjson.loads(grouped[k][0].value or b"")["stage"] for k, _, _ in inputs}
    expected = {k: "deep" if lo <= s <= hi else "fast" for (k, _, _), s in zip(inputs, first.tolist(), strict=True)}
    assert stages == expected, "the second stage decides exactly the rows in the band"
    gated = sum(1 for s in stages.values() if s == "deep")
    assert 0 < deep_rows == gated < len(inputs), "and is called with those only"
