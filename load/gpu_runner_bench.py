"""The model runner alone, CPU against CUDA, on models larger than the demo's.

    python -m load.gpu_runner_bench build --out DIR        # needs scikit-learn + skl2onnx (dev extra)
    python -m load.gpu_runner_bench run [--models DIR] [--providers cpu cuda] [--output FILE]

``build`` writes two models: an MLP (64 -> 512 -> 512 -> 512 -> 1, ReLU, sigmoid; random weights)
and a 500-tree gradient-boosted classifier on 64 features (scikit-learn, converted with skl2onnx).
``run`` (into a temporary directory built first when ``--models`` is not given) times
``OnnxRunner.predict``, the service's own runner (host matrix in, host scores out), at batch sizes
256 to 16384: rows/s from the median of ``--repeat`` timed calls after warm-up, rotating over four
input matrices. With ``cuda`` it also times a variant with input and output kept on the GPU
through I/O binding (no host copies: what the runner could gain at most), checks CUDA scores
against CPU scores, and counts the nodes each execution provider ran (from an onnxruntime
profile). It prints a table and writes everything as JSON to ``--output``.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from streamscore.runners.onnx import OnnxRunner

FEATURES = 64
BATCHES = (256, 1024, 4096, 16384)
INPUT_SETS = 4
WIN_MARGIN = 1.2
"""CUDA "wins" only above this ratio: repeated runs on one machine moved rows/s by up to ~25%."""
MODELS: dict[str, dict[str, Any]] = {
    "mlp_3x512": {"score_output": "score", "score_column": None},
    "gbm_500_trees": {"score_output": "probabilities", "score_column": 1},
}


def build(out: Path, trees: int = 500) -> None:
    """Write ``mlp_3x512.onnx`` and ``gbm_500_trees.onnx`` into ``out``."""
    import onnx
    from onnx import TensorProto, helper
    from skl2onnx import convert_sklearn
    from skl2onnx.common.data_types import FloatTensorType
    from sklearn.ensemble import GradientBoostingClassifier

    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    widths = [FEATURES, 512, 512, 512, 1]
    nodes, inits, current = [], [], "features"
    for i, (a, b) in enumerate(itertools.pairwise(widths)):
        w = (rng.normal(size=(a, b)) / np.sqrt(a)).astype(np.float32)
        inits += [helper.make_tensor(f"w{i}", TensorProto.FLOAT, [a, b], w.ravel().tolist()),
                  helper.make_tensor(f"b{i}", TensorProto.FLOAT, [b], np.zeros(b, np.float32).tolist())]
        nodes += [helper.make_node("MatMul", [current, f"w{i}"], [f"m{i}"]),
                  helper.make_node("Add", [f"m{i}", f"b{i}"], [f"a{i}"])]
        last = i == len(widths) - 2
        nodes.append(helper.make_node("Sigmoid" if last else "Relu", [f"a{i}"], ["score2d" if last else f"h{i}"]))
        current = f"h{i}"
    inits.append(helper.make_tensor("flat", TensorProto.INT64, [1], [-1]))
    nodes.append(helper.make_node("Reshape", ["score2d", "flat"], ["score"]))
    graph = helper.make_graph(nodes, "mlp",
                              [helper.make_tensor_value_info("features", TensorProto.FLOAT, [None, FEATURES])],
                              [helper.make_tensor_value_info("score", TensorProto.FLOAT, [None])], initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, out / "mlp_3x512.onnx")

    x = rng.normal(size=(20_000, FEATURES)).astype(np.float32)
    y = (x[:, :8].sum(axis=1) + rng.normal(size=len(x)) > 0).astype(int)
    clf = GradientBoostingClassifier(n_estimators=trees, max_depth=4, random_state=0).fit(x, y)
    onx = convert_sklearn(clf, initial_types=[("features", FloatTensorType([None, FEATURES]))],
                          options={id(clf): {"zipmap": False}}, target_opset={"": 17, "ai.onnx.ml": 3})
    (out / "gbm_500_trees.onnx").write_bytes(onx.SerializeToString())


def _median_seconds(call: Callable[[int], object], repeat: int, warmup: int) -> float:
    """Median wall time of ``call(i)`` over ``repeat`` calls, after ``warmup`` untimed ones."""
    for i in range(warmup):
        call(i)
    times = []
    for i in range(repeat):
        started = time.perf_counter()
        call(i)
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def _runner_seconds(runner: OnnxRunner, inputs: list[np.ndarray], repeat: int, warmup: int) -> float:
    """Median seconds of ``runner.predict`` (host in, host out), rotating over ``inputs``."""
    return _median_seconds(lambda i: runner.predict(inputs[i % len(inputs)]), repeat, warmup)


def _node_providers(path: Path, providers: list[str], x: np.ndarray) -> dict[str, int]:
    """How many graph nodes each execution provider ran, read from one profiled run."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.enable_profiling = True
    options.log_severity_level = 3
    with tempfile.TemporaryDirectory() as tmp:
        options.profile_file_prefix = str(Path(tmp) / "profile")
        session = ort.InferenceSession(str(path), sess_options=options, providers=providers)
        session.run(None, {session.get_inputs()[0].name: x})
        events = json.loads(Path(session.end_profiling()).read_text())
    placed = {(e["name"], e["args"]["provider"]) for e in events
              if e.get("cat") == "Node" and "provider" in e.get("args", {})}
    counts: dict[str, int] = {}
    for _, provider in placed:
        counts[provider] = counts.get(provider, 0) + 1
    return counts


def _device_resident(path: Path, output: str, inputs: list[np.ndarray], repeat: int, warmup: int) -> float:
    """Median seconds of a CUDA run with input and output bound on the GPU (no host copies)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(str(path), sess_options=options,
                                   providers=["CUDAExecutionProvider", "CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    bindings = []
    for x in inputs:
        binding = session.io_binding()
        binding.bind_ortvalue_input(name, ort.OrtValue.ortvalue_from_numpy(x, "cuda", 0))
        binding.bind_output(output, "cuda", 0)
        bindings.append(binding)
    # run_with_iobinding waits for the GPU before returning (onnxruntime's default), so host timing holds
    return _median_seconds(lambda i: session.run_with_iobinding(bindings[i % len(bindings)]), repeat, warmup)


def _gpu_name() -> str | None:
    try:
        line = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"],
                              capture_output=True, text=True, timeout=30, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return line or None


def run(models: Path, providers: list[str], repeat: int, warmup: int = 5,
        batches: tuple[int, ...] = BATCHES) -> dict[str, Any]:
    """Time every model on every provider at every batch size; returns the JSON-ready results."""
    import onnxruntime as ort

    if "cuda" in providers and hasattr(ort, "preload_dlls"):
        ort.preload_dlls()  # CUDA/cuDNN from the nvidia-* wheels, when the loader's paths lack them

    from streamscore.config import ModelSettings, Provider
    from streamscore.runners.onnx import OnnxRunner

    rng = np.random.default_rng(1)
    results: dict[str, Any] = {
        "onnxruntime": ort.__version__, "available_providers": ort.get_available_providers(),
        "device": ort.get_device(), "gpu": _gpu_name(), "cpu_count": os.cpu_count(),
        "python": platform.python_version(), "repeat": repeat, "warmup": warmup, "batches": list(batches),
        "rows_per_second": {}, "median_ms": {}, "session_provider": {}, "nodes_by_provider": {},
        "max_abs_diff_cuda_vs_cpu": {},
    }
    inputs = {batch: [rng.normal(size=(batch, FEATURES)).astype(np.float32) for _ in range(INPUT_SETS)]
              for batch in batches}
    check = inputs[batches[-1]][0]

    def record(label: str, batch: int, seconds: float) -> None:
        results["rows_per_second"].setdefault(label, {})[batch] = round(batch / seconds)
        results["median_ms"].setdefault(label, {})[batch] = round(seconds * 1e3, 4)
        print(f"{label:<36} batch {batch:>6}: {batch / seconds:>14,.0f} rows/s ({seconds * 1e3:.3f} ms)", flush=True)

    for name, spec in MODELS.items():
        path = models / f"{name}.onnx"
        scores: dict[str, np.ndarray] = {}
        for provider in providers:
            choice: Provider = "cuda" if provider == "cuda" else "cpu"
            runner = OnnxRunner(ModelSettings(path=path, provider=choice, **spec), FEATURES)
            runner.load()
            key = f"{name}/{provider}"
            results["session_provider"][key] = runner.provider
            placed = ["CPUExecutionProvider"] if provider == "cpu" else [runner.provider, "CPUExecutionProvider"]
            results["nodes_by_provider"][key] = _node_providers(path, placed, inputs[batches[0]][0])
            scores[provider] = runner.predict(check)
            for batch in batches:
                record(key, batch, _runner_seconds(runner, inputs[batch], repeat, warmup))
            if provider == "cuda":
                for batch in batches:
                    record(f"{key}+iobinding", batch,
                           _device_resident(path, spec["score_output"], inputs[batch], repeat, warmup))
            runner.close()
        if "cpu" in scores and "cuda" in scores:
            results["max_abs_diff_cuda_vs_cpu"][name] = float(np.max(np.abs(scores["cuda"] - scores["cpu"])))
    return results


def table(results: dict[str, Any], margin: float = WIN_MARGIN) -> str:
    """A Markdown table of rows/s per model and variant, and the first batch where CUDA wins by ``margin``."""
    rates: dict[str, dict[int, int]] = results["rows_per_second"]
    batches = results["batches"]
    lines = ["| model / provider | " + " | ".join(f"batch {b:,}" for b in batches) + " |",
             "| --- |" + " ---: |" * len(batches)]
    lines += [f"| {label} | " + " | ".join(f"{rates[label][b]:,}" for b in batches) + " |" for label in rates]
    for name in MODELS:
        cpu, cuda = rates.get(f"{name}/cpu"), rates.get(f"{name}/cuda")
        if cpu and cuda:
            wins = [b for b in batches if cuda[b] > margin * cpu[b]]
            lines.append(f"{name}: CUDA at least {margin}x CPU from batch {wins[0]:,}" if wins
                         else f"{name}: CUDA never {margin}x CPU up to batch {batches[-1]:,}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    b = sub.add_parser("build")
    b.add_argument("--out", type=Path, required=True)
    b.add_argument("--trees", type=int, default=500)
    r = sub.add_parser("run")
    r.add_argument("--models", type=Path, default=None, help="directory from 'build' (default: build into a temp dir)")
    r.add_argument("--providers", nargs="+", choices=["cpu", "cuda"], default=["cpu", "cuda"])
    r.add_argument("--repeat", type=int, default=30)
    r.add_argument("--warmup", type=int, default=5)
    r.add_argument("--batches", type=int, nargs="+", default=list(BATCHES))
    r.add_argument("--output", type=Path, default=None)
    args = parser.parse_args()
    if args.command == "build":
        build(args.out, args.trees)
        return
    with tempfile.TemporaryDirectory() as tmp:
        models = args.models
        if models is None:
            models = Path(tmp)
            build(models)
        results = run(models, args.providers, args.repeat, args.warmup, tuple(args.batches))
    print(table(results))
    if args.output:
        args.output.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
