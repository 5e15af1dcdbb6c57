"""Integration fixtures: real ONNX models. The broker (Tansu, or Apache Kafka with
``STREAMSCORE_TEST_BROKER=kafka``), topic, config, service and output-reader fixtures are shared
ones, from ``tests.support.fixtures``."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

HOUR_COLUMN = 11
"""Position of ``hour`` in the demo feature layout (amount, 8 one-hot categories, country, card_present)."""


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
