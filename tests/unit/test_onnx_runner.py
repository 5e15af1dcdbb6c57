"""ONNX runner: scores with tiny models built here; fixed batch sizes split and padded; clear start-up errors."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

from streamscore.config import ModelSettings
from streamscore.errors import ModelError
from streamscore.runners import onnx as onnx_runner
from streamscore.runners.base import ModelRunner
from streamscore.runners.onnx import OnnxRunner

WIDTH = 4
WEIGHTS = np.array([[0.5, -0.5], [-0.25, 0.25], [1.0, -1.0], [0.1, 0.3]], dtype=np.float32)
HAS_CUDA = "CUDAExecutionProvider" in ort.get_available_providers()
DTYPES = {"float": TensorProto.FLOAT, "double": TensorProto.DOUBLE, "int64": TensorProto.INT64}


def reference(x: np.ndarray) -> np.ndarray:
    """What every model built here computes: sigmoid(x @ W), two columns."""
    return 1 / (1 + np.exp(-(x.astype(np.float64) @ WEIGHTS.astype(np.float64))))


def build_model(path: Path, *, batch: int | None = None, width: int = WIDTH, input_dtype: str = "float",
                output: str = "two_columns", second_input: bool = False, rank3: bool = False) -> Path:
    """``x [batch, width] -> MatMul(W) -> Sigmoid`` with a choice of outputs:

    ``two_columns``: label (int64 [batch]) and probabilities ([batch, 2]);
    ``one_column``: score [batch, 1] (column 1 of the reference);
    ``flat``: score [batch] (column 1 of the reference).
    """
    nodes: list[onnx.NodeProto] = []
    feed = "x"
    if input_dtype != "float":
        nodes.append(helper.make_node("Cast", ["x"], ["xf"], to=TensorProto.FLOAT))
        feed = "xf"
    if second_input:
        nodes.append(helper.make_node("Add", [feed, "y"], ["xy"]))
        feed = "xy"
    if rank3:
        nodes.append(helper.make_node("Reshape", [feed, "flat2"], ["x2"]))
        feed = "x2"
    weights = np.zeros((width, 2), dtype=np.float32)
    weights[: min(width, WIDTH)] = WEIGHTS[: min(width, WIDTH)]
    nodes += [helper.make_node("MatMul", [feed, "w"], ["z"]), helper.make_node("Sigmoid", ["z"], ["p"])]
    initializers = [helper.make_tensor("w", TensorProto.FLOAT, [width, 2], weights.ravel().tolist()),
                    helper.make_tensor("flat2", TensorProto.INT64, [2], [-1, width]),
                    helper.make_tensor("one", TensorProto.INT64, [1], [1]),
                    helper.make_tensor("flat1", TensorProto.INT64, [1], [-1])]
    if output == "two_columns":
        nodes += [helper.make_node("ArgMax", ["p"], ["label"], axis=1, keepdims=0),
                  helper.make_node("Identity", ["p"], ["probabilities"])]
        outputs = [helper.make_tensor_value_info("label", TensorProto.INT64, [batch]),
                   helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, [batch, 2])]
    elif output == "one_column":
        nodes.append(helper.make_node("Gather", ["p", "one"], ["score"], axis=1))
        outputs = [helper.make_tensor_value_info("score", TensorProto.FLOAT, [batch, 1])]
    else:
        nodes += [helper.make_node("Gather", ["p", "one"], ["col"], axis=1),
                  helper.make_node("Reshape", ["col", "flat1"], ["score"])]
        outputs = [helper.make_tensor_value_info("score", TensorProto.FLOAT, [batch])]
    shape: list[Any] = [batch, 1, width] if rank3 else [batch, width]
    inputs = [helper.make_tensor_value_info("x", DTYPES[input_dtype], shape)]
    if second_input:
        inputs.append(helper.make_tensor_value_info("y", TensorProto.FLOAT, [batch, width]))
    graph = helper.make_graph(nodes, "tiny", inputs, outputs, initializer=initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, path)
    return path


ModelFactory = Callable[..., Path]
RunnerFactory = Callable[..., OnnxRunner]


@pytest.fixture
def onnx_model(tmp_path: Path) -> ModelFactory:
    """Build a tiny model file under tmp_path: ``onnx_model("name.onnx", batch=8, ...)``."""

    def make(name: str = "tiny.onnx", **kwargs: Any) -> Path:
        return build_model(tmp_path / name, **kwargs)

    return make


@pytest.fixture
def make_runner() -> RunnerFactory:
    """An OnnxRunner for ``path`` with CPU by default; ``load=False`` leaves it unloaded."""

    def make(path: Path, width: int = WIDTH, load: bool = True, **settings: Any) -> OnnxRunner:
        runner = OnnxRunner(ModelSettings(path=path, **{"provider": "cpu", **settings}), width)
        if load:
            runner.load()
        return runner

    return make


def load_error(runner: OnnxRunner) -> str:
    with pytest.raises(ModelError) as err:
        runner.load()
    message = str(err.value)
    assert "\n" not in message, "one line"
    return message


def rows(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, WIDTH)).astype(np.float32)


def test_loads_and_scores_the_chosen_column(onnx_model: ModelFactory, make_runner: RunnerFactory) -> None:
    runner = make_runner(onnx_model(), score_output="probabilities", score_column=1)
    x = rows(10)
    scores = runner.predict(x)
    assert scores.dtype == np.float32 and scores.shape == (10,)
    np.testing.assert_allclose(scores, reference(x)[:, 1], rtol=1e-5)
    np.testing.assert_allclose(make_runner(onnx_model(), score_column=0).predict(x), reference(x)[:, 0], rtol=1e-5)
    assert runner.provider == "CPUExecutionProvider"


def test_the_default_output_is_the_last_one(onnx_model: ModelFactory, make_runner: RunnerFactory) -> None:
    x = rows(5)
    np.testing.assert_allclose(make_runner(onnx_model()).predict(x), reference(x)[:, 1], rtol=1e-5)


def test_a_single_column_output_needs_no_score_column(onnx_model: ModelFactory, make_runner: RunnerFactory) -> None:
    x = rows(6)
    runner = make_runner(onnx_model(output="one_column"), score_column=None)
    np.testing.assert_allclose(runner.predict(x), reference(x)[:, 1], rtol=1e-5)
    np.testing.assert_allclose(make_runner(onnx_model(output="one_column"), score_column=0).predict(x),
                               reference(x)[:, 1], rtol=1e-5)


def test_a_flat_output(onnx_model: ModelFactory, make_runner: RunnerFactory) -> None:
    x = rows(7)
    runner = make_runner(onnx_model(output="flat"), score_column=None)
    np.testing.assert_allclose(runner.predict(x), reference(x)[:, 1], rtol=1e-5)


def test_a_named_input_is_checked_and_used(onnx_model: ModelFactory, make_runner: RunnerFactory) -> None:
    x = rows(3)
    np.testing.assert_allclose(make_runner(onnx_model(), input="x").predict(x), reference(x)[:, 1], rtol=1e-5)


@pytest.mark.parametrize("n", [1, 7, 8, 13, 16, 20])
def test_a_fixed_batch_dimension_is_split_and_padded(
    onnx_model: ModelFactory, make_runner: RunnerFactory, n: int
) -> None:
    dynamic = make_runner(onnx_model("dynamic.onnx"))
    fixed = make_runner(onnx_model("fixed.onnx", batch=8))
    x = rows(n, seed=n)
    got = fixed.predict(x)
    assert got.shape == (n,) and got.dtype == np.float32
    np.testing.assert_allclose(got, dynamic.predict(x), rtol=1e-6)
    np.testing.assert_allclose(got, reference(x)[:, 1], rtol=1e-5)


def test_a_fixed_batch_with_no_rows(onnx_model: ModelFactory, make_runner: RunnerFactory) -> None:
    assert make_runner(onnx_model(batch=8)).predict(np.zeros((0, WIDTH), dtype=np.float32)).shape == (0,)


def test_name_defaults_to_the_file_stem_and_version_to_a_sha256_prefix(
    onnx_model: ModelFactory, make_runner: RunnerFactory
) -> None:
    path = onnx_model("fraud_scorer.v2.onnx")
    runner = make_runner(path, load=False)
    assert runner.name == "fraud_scorer.v2"
    runner.load()
    assert runner.version == "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()[:12]


def test_configured_name_and_version_win(onnx_model: ModelFactory, make_runner: RunnerFactory) -> None:
    runner = make_runner(onnx_model(), name="fraud", version="2024-06")
    assert (runner.name, runner.version) == ("fraud", "2024-06")


def test_the_runner_satisfies_the_protocol(onnx_model: ModelFactory, make_runner: RunnerFactory) -> None:
    runner: ModelRunner = make_runner(onnx_model(), warmup_batches=0)
    runner.predict(rows(2))
    runner.close()


def test_warm_up_runs_the_configured_number_of_batches(
    onnx_model: ModelFactory, make_runner: RunnerFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    runner = make_runner(onnx_model(batch=8), load=False, warmup_batches=3)
    seen: list[tuple[int, int]] = []
    original = OnnxRunner.predict

    def spy(self: OnnxRunner, matrix: np.ndarray) -> np.ndarray:
        seen.append(matrix.shape)
        return original(self, matrix)

    monkeypatch.setattr(OnnxRunner, "predict", spy)
    runner.load()
    assert seen == [(8, WIDTH)] * 3, "warm-up uses the model's fixed batch size"


@pytest.mark.parametrize(("build", "settings", "width", "start"), [
    ({}, {"path": "missing.onnx"}, WIDTH, "model.path: file not found: "),
    ({}, {}, 5, "features: the spec gives 5 columns but model input 'x' expects 4"),
    ({}, {}, 3, "features: the spec gives 3 columns but model input 'x' expects 4"),
    ({"input_dtype": "double"}, {}, WIDTH, "model.input: input 'x' has dtype tensor(double); expected tensor(float)"),
    ({"input_dtype": "int64"}, {}, WIDTH, "model.input: input 'x' has dtype tensor(int64); expected tensor(float)"),
    ({"second_input": True}, {}, WIDTH, "model.input: the model has 2 inputs (x, y)"),
    ({"second_input": True}, {"input": "x"}, WIDTH, "model.input: the model also requires y"),
    ({}, {"input": "features"}, WIDTH, "model.input: no input named 'features' (the model has x)"),
    ({"rank3": True}, {}, WIDTH, "model.input: input 'x' has shape"),
    ({}, {"score_output": "scores"}, WIDTH,
     "model.score_output: no output named 'scores' (the model has label, probabilities)"),
    ({}, {"score_output": "label"}, WIDTH, "model.score_output: output 'label' has type tensor(int64)"),
    ({}, {"score_column": 2}, WIDTH, "model.score_column: column 2 does not exist in output 'probabilities'"),
    ({}, {"score_column": None}, WIDTH, "model.score_column: output 'probabilities' has shape"),
    ({"output": "flat"}, {"score_column": 1}, WIDTH, "model.score_column: column 1 does not exist in output 'score'"),
    ({"output": "one_column"}, {"score_column": 1}, WIDTH, "model.score_column: column 1 does not exist"),
])
def test_start_up_errors_are_one_line_and_name_the_key(
    onnx_model: ModelFactory, make_runner: RunnerFactory, tmp_path: Path,
    build: dict[str, Any], settings: dict[str, Any], width: int, start: str,
) -> None:
    path = onnx_model(**build)
    settings = {**settings, "path": tmp_path / settings["path"]} if "path" in settings else {"path": path, **settings}
    message = load_error(make_runner(width=width, load=False, **settings))
    assert message.startswith(start), message


def test_a_file_that_is_not_a_model(tmp_path: Path, make_runner: RunnerFactory) -> None:
    path = tmp_path / "garbage.onnx"
    path.write_bytes(b"\x00not a model at all\n" * 10)
    assert load_error(make_runner(path, load=False)).startswith(f"model.path: cannot load {path}: ")


def test_a_folder_is_not_a_model_file(tmp_path: Path, make_runner: RunnerFactory) -> None:
    assert load_error(make_runner(tmp_path, load=False)) == f"model.path: file not found: {tmp_path}"


@pytest.mark.skipif(HAS_CUDA, reason="onnxruntime has a CUDA provider here")
@pytest.mark.parametrize(("provider", "missing"), [("cuda", "CUDAExecutionProvider"),
                                                   ("tensorrt", "TensorrtExecutionProvider")])
def test_a_gpu_provider_without_one_is_a_clear_start_up_error(
    onnx_model: ModelFactory, make_runner: RunnerFactory, provider: str, missing: str
) -> None:
    message = load_error(make_runner(onnx_model(), load=False, provider=provider))
    assert message.startswith(f"model.provider: '{provider}' requested but this onnxruntime has no {missing}")


def test_auto_takes_cuda_when_present_else_the_cpu(onnx_model: ModelFactory, make_runner: RunnerFactory) -> None:
    runner = make_runner(onnx_model(), provider="auto")
    assert runner.provider == ("CUDAExecutionProvider" if HAS_CUDA else "CPUExecutionProvider")


def test_a_model_that_returns_the_wrong_number_of_scores_raises(
    onnx_model: ModelFactory, make_runner: RunnerFactory, tmp_path: Path
) -> None:
    """A model whose output ignores the batch dimension is caught per batch, not silently misaligned."""
    graph = helper.make_graph(
        [helper.make_node("ReduceMean", ["x"], ["m"], axes=[0], keepdims=1),
         helper.make_node("MatMul", ["m", "w"], ["score"])],
        "bad", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, WIDTH])],
        [helper.make_tensor_value_info("score", TensorProto.FLOAT, [None, 2])],
        initializer=[helper.make_tensor("w", TensorProto.FLOAT, [WIDTH, 2], WEIGHTS.ravel().tolist())])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    path = tmp_path / "bad.onnx"
    onnx.save(model, path)
    runner = make_runner(path, warmup_batches=0)
    with pytest.raises(ModelError, match="model returned 1 scores for 3 rows"):
        runner.predict(rows(3))


def test_a_model_whose_sha256_differs_refuses_to_load(onnx_model: ModelFactory, make_runner: RunnerFactory) -> None:
    import hashlib

    path = onnx_model()
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    assert make_runner(path, sha256=digest.upper()).version == f"sha256:{digest[:12]}"
    message = load_error(make_runner(path, load=False, sha256="0" * 64))
    assert message.startswith(f"model.sha256: {path} has sha256 {digest}, expected {'0' * 64}")


def tree_model(path: Path, width: int = WIDTH) -> Path:
    """``x -> Mul(1) -> TreeEnsembleClassifier``: one stump on feature 0 (no CUDA kernel for the tree)."""
    tree = helper.make_node(
        "TreeEnsembleClassifier", ["xs"], ["label", "probabilities"], domain="ai.onnx.ml",
        nodes_treeids=[0, 0, 0], nodes_nodeids=[0, 1, 2], nodes_featureids=[0, 0, 0],
        nodes_values=[0.0, 0.0, 0.0], nodes_modes=["BRANCH_LEQ", "LEAF", "LEAF"],
        nodes_truenodeids=[1, 0, 0], nodes_falsenodeids=[2, 0, 0],
        class_treeids=[0, 0], class_nodeids=[1, 2], class_ids=[1, 1], class_weights=[0.2, 0.8],
        classlabels_int64s=[0, 1], post_transform="NONE")
    graph = helper.make_graph(
        [helper.make_node("Mul", ["x", "one"], ["xs"]), tree], "tree",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, width])],
        [helper.make_tensor_value_info("label", TensorProto.INT64, [None]),
         helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, [None, 2])],
        initializer=[helper.make_tensor("one", TensorProto.FLOAT, [], [1.0])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("ai.onnx.ml", 3)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, path)
    return path


def simulate_cuda(monkeypatch: pytest.MonkeyPatch) -> None:
    """A CUDA onnxruntime, simulated on the CPU one: CUDA is listed and reported as the session's first
    provider, and the profiler's placements say what CUDA would: every node on it but tree ensembles."""
    real_session = ort.InferenceSession
    real_placements = onnx_runner.profiled_placements

    class CudaSession(real_session):  # type: ignore[misc, valid-type]
        def __init__(self, path: str, sess_options: Any = None, providers: Any = None) -> None:
            super().__init__(path, sess_options=sess_options, providers=["CPUExecutionProvider"])

        def get_providers(self) -> list[str]:
            return ["CUDAExecutionProvider", "CPUExecutionProvider"]

    def placements(profile: Path) -> list[tuple[str, str, str]]:
        return [(name, op, "CPUExecutionProvider" if op.startswith("TreeEnsemble") else "CUDAExecutionProvider")
                for name, op, _ in real_placements(profile)]

    monkeypatch.setattr(ort, "get_available_providers", lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"])
    monkeypatch.setattr(ort, "InferenceSession", CudaSession)
    monkeypatch.setattr(onnx_runner, "profiled_placements", placements)


def test_cpu_fallback_lists_each_cpu_node_once_and_nothing_on_a_cpu_session() -> None:
    placements = [("mul", "Mul", "CUDAExecutionProvider"), ("tree", "TreeEnsembleClassifier", "CPUExecutionProvider"),
                  ("tree", "TreeEnsembleClassifier", "CPUExecutionProvider"), ("zip", "ZipMap", "CPUExecutionProvider")]
    assert onnx_runner.cpu_fallback(placements, "CUDAExecutionProvider") == [
        ("tree", "TreeEnsembleClassifier", "CPUExecutionProvider"), ("zip", "ZipMap", "CPUExecutionProvider")]
    assert onnx_runner.cpu_fallback(placements, "CPUExecutionProvider") == []
    assert onnx_runner.cpu_fallback(placements[:1], "CUDAExecutionProvider") == []
    assert onnx_runner.describe_fallback(onnx_runner.cpu_fallback(placements, "CUDAExecutionProvider"), 3,
                                         "CUDAExecutionProvider") == (
        "2 of 3 nodes run on CPUExecutionProvider, not CUDAExecutionProvider "
        "(no CUDAExecutionProvider kernel for op types: TreeEnsembleClassifier, ZipMap)")


def test_the_profile_of_a_real_session_gives_each_node_and_its_provider(tmp_path: Path) -> None:
    """The profile format the placement check reads, from this onnxruntime."""
    options = ort.SessionOptions()
    options.enable_profiling = True
    options.profile_file_prefix = str(tmp_path / "p")
    session = ort.InferenceSession(str(tree_model(tmp_path / "tree.onnx")), sess_options=options,
                                   providers=["CPUExecutionProvider"])
    session.run(None, {"x": rows(3)})
    placements = onnx_runner.profiled_placements(Path(session.end_profiling()))
    assert {(op, provider) for _, op, provider in placements} == {
        ("Mul", "CPUExecutionProvider"), ("TreeEnsembleClassifier", "CPUExecutionProvider")}


def test_a_tree_model_on_cuda_warns_once_naming_the_cpu_nodes(
    tmp_path: Path, make_runner: RunnerFactory, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    simulate_cuda(monkeypatch)
    caplog.set_level("WARNING", logger="streamscore.runners.onnx")
    runner = make_runner(tree_model(tmp_path / "tree.onnx"), provider="cuda", score_output="probabilities")
    assert runner.provider == "CUDAExecutionProvider"
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 1
    assert "1 of 2 nodes run on CPUExecutionProvider, not CUDAExecutionProvider" in warnings[0]
    assert "TreeEnsembleClassifier" in warnings[0] and "Mul" not in warnings[0]
    np.testing.assert_allclose(runner.predict(np.array([[-1, 0, 0, 0], [1, 0, 0, 0]], dtype=np.float32)),
                               [0.2, 0.8], rtol=1e-6)


def test_strict_provider_refuses_a_tree_model_on_cuda_in_one_line(
    tmp_path: Path, make_runner: RunnerFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    simulate_cuda(monkeypatch)
    path = tree_model(tmp_path / "tree.onnx")
    message = load_error(make_runner(path, load=False, provider="cuda", score_output="probabilities",
                                     strict_provider=True))
    assert message.startswith(f"model.strict_provider: {path}: 1 of 2 nodes run on CPUExecutionProvider")
    assert "TreeEnsembleClassifier" in message


def test_strict_provider_accepts_a_model_wholly_on_cuda(
    onnx_model: ModelFactory, make_runner: RunnerFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    simulate_cuda(monkeypatch)
    runner = make_runner(onnx_model(), provider="cuda", strict_provider=True)
    assert runner.provider == "CUDAExecutionProvider"
