"""ONNX runner: fixed batch dimensions are split and padded; provider errors are one clear line."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

from streamscore.config import ModelSettings
from streamscore.errors import ModelError
from streamscore.runners.onnx import OnnxRunner

WIDTH = 4


def model(path: Path, batch: int | None) -> Path:
    """score = sigmoid(x @ w): [batch, 4] -> [batch, 1]."""
    w = np.array([[0.5], [-0.25], [1.0], [0.1]], dtype=np.float32)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["z"]), helper.make_node("Sigmoid", ["z"], ["score"])],
        "tiny", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, WIDTH])],
        [helper.make_tensor_value_info("score", TensorProto.FLOAT, [batch, 1])],
        initializer=[helper.make_tensor("w", TensorProto.FLOAT, [WIDTH, 1], w.ravel().tolist())])
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    onnx.save(m, path)
    return path


def runner(path: Path, **kw: object) -> OnnxRunner:
    r = OnnxRunner(ModelSettings(path=path, score_column=None, provider="cpu", **kw), WIDTH)  # type: ignore[arg-type]
    r.load()
    return r


@pytest.mark.parametrize("rows", [1, 7, 8, 13, 20])
def test_fixed_batch_dimension_is_split_and_padded(tmp_path: Path, rows: int) -> None:
    dynamic = runner(model(tmp_path / "dyn.onnx", None))
    fixed = runner(model(tmp_path / "fixed.onnx", 8))
    x = np.random.default_rng(rows).normal(size=(rows, WIDTH)).astype(np.float32)
    got = fixed.predict(x)
    assert got.shape == (rows,)
    np.testing.assert_allclose(got, dynamic.predict(x), rtol=1e-6)


def test_name_and_version_defaults(tmp_path: Path) -> None:
    r = runner(model(tmp_path / "scorer.onnx", None))
    assert r.name == "scorer" and r.version.startswith("sha256:") and r.provider == "CPUExecutionProvider"


@pytest.mark.skipif("CUDAExecutionProvider" in ort.get_available_providers(), reason="CUDA is available here")
def test_cuda_requested_without_cuda_is_a_clear_start_up_error(tmp_path: Path) -> None:
    settings = ModelSettings(path=model(tmp_path / "m.onnx", None), score_column=None, provider="cuda")
    with pytest.raises(ModelError) as err:
        OnnxRunner(settings, WIDTH).load()
    assert str(err.value).startswith("model.provider: 'cuda' requested but this onnxruntime has no CUDAExecutionProvider")


def test_auto_falls_back_to_cpu_without_cuda(tmp_path: Path) -> None:
    settings = ModelSettings(path=model(tmp_path / "m.onnx", None), score_column=None, provider="auto")
    r = OnnxRunner(settings, WIDTH)
    r.load()
    expected = "CUDAExecutionProvider" if "CUDAExecutionProvider" in ort.get_available_providers() else "CPUExecutionProvider"
    assert r.provider == expected


@pytest.mark.parametrize(("kw", "start"), [
    ({"score_output": "nope"}, "model.score_output: no output named 'nope'"),
    ({"score_column": 3}, "model.score_column: column 3 does not exist"),
    ({"input": "y"}, "model.input: no input named 'y'"),
])
def test_output_and_input_mismatches_name_the_key(tmp_path: Path, kw: dict[str, object], start: str) -> None:
    settings = ModelSettings(path=model(tmp_path / "m.onnx", None), **{"score_column": None, **kw})  # type: ignore[arg-type]
    with pytest.raises(ModelError) as err:
        OnnxRunner(settings, WIDTH).load()
    assert str(err.value).startswith(start), str(err.value)
