"""Integration fixtures: a real broker, real service processes, real ONNX models.

The broker is started for the session: Tansu (embedded, the default) or, with
``STREAMSCORE_TEST_BROKER=kafka``, Apache Kafka (``scripts/kafka.sh``). ``STREAMSCORE_TEST_BOOTSTRAP``
names an external cluster instead. Every test makes its own topics and group.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from load.brokers import make_broker
from load.faults.harness import ServiceProcess, Topics, make_topics
from load.faults.harness import write_config as write_scenario_config

pytestmark = pytest.mark.integration

HOUR_COLUMN = 11
"""Position of ``hour`` in the demo feature layout (amount, 8 one-hot categories, country, card_present)."""


@pytest.fixture(scope="session")
def bootstrap(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    external = os.environ.get("STREAMSCORE_TEST_BOOTSTRAP")
    if external:
        yield external
        return
    with make_broker(tmp_path_factory.mktemp("broker")) as broker:
        yield broker.bootstrap_servers


@pytest.fixture
def topics(bootstrap: str) -> Callable[..., Topics]:
    """Fresh topics per test (source topics allow 4 MB values, for the oversize-input tests)."""

    def make(partitions: int = 4) -> Topics:
        return make_topics(bootstrap, partitions, prefix="it")

    return make


@pytest.fixture
def write_config(tmp_path: Path, bootstrap: str) -> Callable[..., Path]:
    """A config file for the demo features and model on the given topics; ``overrides`` merge in."""

    def write(t: Topics, **overrides: Any) -> Path:
        return write_scenario_config(tmp_path, bootstrap, t, **overrides)

    return write


@pytest.fixture
def service(tmp_path: Path) -> Iterator[Callable[..., ServiceProcess]]:
    started: list[ServiceProcess] = []

    def make(config: Path, env: dict[str, str] | None = None, args: tuple[str, ...] = ()) -> ServiceProcess:
        proc = ServiceProcess(config, tmp_path / f"service-{len(started)}.log", env=env, args=args)
        started.append(proc)
        return proc.start()

    yield make
    for proc in started:
        proc.kill()


@pytest.fixture(scope="session")
def raising_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 15-column model that raises on rows whose ``hour`` is outside 0..23 (an out-of-range Gather)."""
    path = tmp_path_factory.mktemp("models") / "raises_on_bad_hour.onnx"
    weights = np.linspace(-0.1, 0.1, 15, dtype=np.float32).reshape(15, 1)
    nodes = [
        helper.make_node("MatMul", ["features", "w"], ["logit"]),
        helper.make_node("Sigmoid", ["logit"], ["prob2d"]),
        helper.make_node("Reshape", ["prob2d", "flat"], ["prob"]),
        helper.make_node("Gather", ["features", "hour_col"], ["hour"], axis=1),
        helper.make_node("Cast", ["hour"], ["hour_idx"], to=TensorProto.INT64),
        helper.make_node("Gather", ["table", "hour_idx"], ["looked_up"], axis=0),
        helper.make_node("Mul", ["looked_up", "tiny"], ["nudge"]),
        helper.make_node("Add", ["prob", "nudge"], ["score"]),
    ]
    graph = helper.make_graph(
        nodes, "raises_on_bad_hour",
        [helper.make_tensor_value_info("features", TensorProto.FLOAT, [None, 15])],
        [helper.make_tensor_value_info("score", TensorProto.FLOAT, [None])],
        initializer=[
            helper.make_tensor("w", TensorProto.FLOAT, [15, 1], weights.ravel().tolist()),
            helper.make_tensor("flat", TensorProto.INT64, [1], [-1]),
            helper.make_tensor("hour_col", TensorProto.INT64, [], [HOUR_COLUMN]),
            helper.make_tensor("table", TensorProto.FLOAT, [24], [0.0] * 24),
            helper.make_tensor("tiny", TensorProto.FLOAT, [], [1e-9]),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, path)
    return path
