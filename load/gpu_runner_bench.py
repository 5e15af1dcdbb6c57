"""The model runner alone, CPU against CUDA, on models larger than the demo's.

    python -m load.gpu_runner_bench build --out DIR        # needs scikit-learn + skl2onnx (dev extra)
    python -m load.gpu_runner_bench run --models DIR [--providers cpu cuda] [--output results.json]

``build`` writes two models: an MLP (64 -> 512 -> 512 -> 512 -> 1, ReLU, sigmoid; random weights)
and a 500-tree gradient-boosted classifier on 64 features (scikit-learn, converted with skl2onnx).
``run`` times ``OnnxRunner.predict`` (the service's own runner: host matrix in, host scores out)
at batch sizes 256 to 16384 and prints rows/s, the median of ``--repeat`` timed calls after
warm-up.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np

FEATURES = 64
BATCHES = (256, 1024, 4096, 16384)
MODELS = {"mlp_3x512": {"score_output": "score", "score_column": None},
          "gbm_500_trees": {"score_output": "probabilities", "score_column": 1}}


def build(out: Path) -> None:
    import onnx
    from onnx import TensorProto, helper
    from skl2onnx import convert_sklearn
    from skl2onnx.common.data_types import FloatTensorType
    from sklearn.ensemble import GradientBoostingClassifier

    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    widths = [FEATURES, 512, 512, 512, 1]
    nodes, inits, current = [], [], "features"
    for i, (a, b) in enumerate(zip(widths, widths[1:], strict=False)):
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
    graph = helper.make_graph(nodes, "mlp", [helper.make_tensor_value_info("features", TensorProto.FLOAT, [None, FEATURES])],
                              [helper.make_tensor_value_info("score", TensorProto.FLOAT, [None])], initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, out / "mlp_3x512.onnx")

    x = rng.normal(size=(20_000, FEATURES)).astype(np.float32)
    y = (x[:, :8].sum(axis=1) + rng.normal(size=len(x)) > 0).astype(int)
    clf = GradientBoostingClassifier(n_estimators=500, max_depth=4, random_state=0).fit(x, y)
    onx = convert_sklearn(clf, initial_types=[("features", FloatTensorType([None, FEATURES]))],
                          options={id(clf): {"zipmap": False}}, target_opset={"": 17, "ai.onnx.ml": 3})
    (out / "gbm_500_trees.onnx").write_bytes(onx.SerializeToString())


def run(models: Path, providers: list[str], repeat: int) -> dict[str, Any]:
    import onnxruntime as ort

    from streamscore.config import ModelSettings
    from streamscore.runners.onnx import OnnxRunner

    rng = np.random.default_rng(1)
    results: dict[str, Any] = {"onnxruntime": ort.__version__, "available": ort.get_available_providers(),
                               "rows_per_second": {}}
    for name, spec in MODELS.items():
        for provider in providers:
            runner = OnnxRunner(ModelSettings(path=models / f"{name}.onnx", provider=provider, **spec), FEATURES)
            runner.load()
            key = f"{name}/{runner.provider}"
            results["rows_per_second"][key] = {}
            for batch in BATCHES:
                x = rng.normal(size=(batch, FEATURES)).astype(np.float32)
                for _ in range(3):
                    runner.predict(x)
                times = []
                for _ in range(repeat):
                    started = time.perf_counter()
                    runner.predict(x)
                    times.append(time.perf_counter() - started)
                rate = batch / statistics.median(times)
                results["rows_per_second"][key][batch] = round(rate)
                print(f"{key:<42} batch {batch:>6}: {rate:>14,.0f} rows/s", flush=True)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    b = sub.add_parser("build")
    b.add_argument("--out", type=Path, required=True)
    r = sub.add_parser("run")
    r.add_argument("--models", type=Path, required=True)
    r.add_argument("--providers", nargs="+", default=["cpu", "cuda"])
    r.add_argument("--repeat", type=int, default=20)
    r.add_argument("--output", type=Path, default=None)
    args = parser.parse_args()
    if args.command == "build":
        build(args.out)
        return
    results = run(args.models, args.providers, args.repeat)
    if args.output:
        args.output.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
