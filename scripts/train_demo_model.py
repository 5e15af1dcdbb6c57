"""Train the demo fraud model on synthetic transactions and write it as ONNX, with its model card.

    python scripts/train_demo_model.py            # writes streamscore/demo/fraud_model.onnx + MODEL_CARD.md
    python scripts/train_demo_model.py --profile-only   # only fraud_model.profile.json, for the model there
    python scripts/train_demo_model.py            # writes streamscore/demo/fraud_model.onnx + MODEL_CARD.md,
                                                  # then the pattern examples' models (train_pattern_models.py)

The feature matrix is built by the service's own ``FeatureExtractor`` from the demo config, so
training and serving see the same columns; an independent encoder in this script checks it.
Every number in the model card is measured by the run that writes it.
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import skl2onnx
import sklearn
from skl2onnx import convert_sklearn
from skl2onnx.common.data_types import FloatTensorType
from sklearn.ensemble import GradientBoostingClassifier
from sklearn.metrics import average_precision_score, roc_auc_score
from sklearn.model_selection import train_test_split

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from streamscore.config import FeatureSettings, load_settings
from streamscore.demo.transactions import FRAUD_RATE, TransactionGenerator

DEMO = ROOT / "streamscore" / "demo"
CONFIG = DEMO / "config.yaml"
TARGET_OPSET = {"": 17, "ai.onnx.ml": 3}
MODEL_VERSION = 1
# HistGradientBoostingClassifier would train faster, but skl2onnx 1.20 fails to convert it with
# onnx 1.23 (a boolean in an ints attribute); GradientBoostingClassifier converts cleanly.
HYPERPARAMETERS: dict[str, Any] = {
    "n_estimators": 100,
    "learning_rate": 0.1,
    "max_depth": 3,
    "min_samples_leaf": 40,
    "subsample": 0.8,
}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=42, help="generator and model seed (default 42)")
    parser.add_argument("--events", type=int, default=200_000, help="events generated (default 200000)")
    parser.add_argument("--test-fraction", type=float, default=0.25, help="held-out share (default 0.25)")
    parser.add_argument("--out-dir", type=Path, default=DEMO, help="where the model and card go")
    parser.add_argument("--profile-only", action="store_true",
                        help="write only the reference profile of the model already in --out-dir")
    parser.add_argument("--skip-patterns", action="store_true",
                        help="do not also train the pattern examples' small models (scripts/train_pattern_models.py)")
    args = parser.parse_args(argv)
    if args.profile_only:
        events, _ = TransactionGenerator(seed=args.seed).labelled(args.events)
        write_reference_profile(events, args)
        return 0

    settings = load_settings(CONFIG, env={})
    specs = settings.features
    decisions = settings.decisions
    thresholds = {rule.label: rule.min_score for rule in decisions.rules}

    started = time.perf_counter()
    events, labels = TransactionGenerator(seed=args.seed).labelled(args.events)
    matrix, columns, extractor_used = build_matrix(events, specs)
    generation_s = time.perf_counter() - started
    print(f"{len(events):,} events, fraud rate {labels.mean():.4f}, matrix {matrix.shape} "
          f"({extractor_used}) in {generation_s:.1f} s")

    x_train, x_test, y_train, y_test = train_test_split(
        matrix, labels, test_size=args.test_fraction, stratify=labels, random_state=args.seed
    )
    clf = GradientBoostingClassifier(random_state=args.seed, **HYPERPARAMETERS)
    started = time.perf_counter()
    clf.fit(x_train, y_train)
    fit_s = time.perf_counter() - started
    print(f"trained in {fit_s:.1f} s")

    model = to_onnx(clf, matrix.shape[1])
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    check_signature(session, matrix.shape[1])
    p_test = session.run(["probabilities"], {"features": x_test})[0][:, 1]
    parity = float(np.max(np.abs(p_test - clf.predict_proba(x_test)[:, 1])))
    metrics = evaluate(y_test, p_test, thresholds, decisions.default)
    metrics["train_roc_auc"] = float(roc_auc_score(y_train, clf.predict_proba(x_train)[:, 1]))
    metrics["onnx_vs_sklearn_max_abs_diff"] = parity

    describe(model, args, metrics, len(y_train), len(y_test))
    args.out_dir.mkdir(parents=True, exist_ok=True)
    model_path = args.out_dir / "fraud_model.onnx"
    onnx.save_model(model, model_path)
    size = model_path.stat().st_size
    timing = time_inference(model_path, x_test, rows=2000)
    print(f"wrote {model_path} ({size:,} bytes); test ROC AUC {metrics['roc_auc']:.4f}; "
          f"2000-row batch {timing['median_ms']:.2f} ms median on CPU")

    card = model_card(
        args=args, specs=specs, columns=columns, labels=labels, n_train=len(y_train), n_test=len(y_test),
        metrics=metrics, size=size, timing=timing, extractor_used=extractor_used, fit_s=fit_s,
        coverage=coverage(events, specs),
        opsets=", ".join(f"{o.domain or 'ai.onnx'} {o.version}" for o in model.opset_import),
        decision_ranges=decision_ranges(thresholds, decisions.default),
    )
    (args.out_dir / "MODEL_CARD.md").write_text(card)
    print(f"wrote {args.out_dir / 'MODEL_CARD.md'}")
    write_reference_profile(events, args)
    if not args.skip_patterns:
        from train_pattern_models import main as train_pattern_models  # this script's folder is on sys.path

        return train_pattern_models([])
    return 0


def write_reference_profile(events: list[dict[str, Any]], args: argparse.Namespace) -> None:
    """The model's reference profile (what ``streamscore profile`` writes) from the generated events,
    next to the model: drift monitoring compares the live stream with it."""
    from streamscore.commands.profile import profile_events
    from streamscore.monitoring.profile import profile_path, write_profile

    settings = load_settings(CONFIG, env={})
    assert settings.model is not None
    model = settings.model.model_copy(update={"path": args.out_dir / "fraud_model.onnx"})
    profile = profile_events(settings.model_copy(update={"model": model}), events,
                             f"TransactionGenerator(seed={args.seed}).labelled({args.events})")
    out = profile_path(model.path)
    write_profile(profile, out)
    print(f"wrote {out} ({profile['rows']:,} rows)")


def build_matrix(
    events: list[dict[str, Any]], specs: Sequence[FeatureSettings]
) -> tuple[np.ndarray, list[str], str]:
    """The service's feature matrix, cross-checked against ``reference_matrix``."""
    reference = reference_matrix(events, specs)
    names = reference_columns(specs)
    try:
        from streamscore.core.features import FeatureExtractor
    except ImportError as exc:
        print(f"streamscore.core.features unavailable ({exc}); using this script's encoder", file=sys.stderr)
        return reference, names, "scripts/train_demo_model.py reference_matrix"
    extractor = FeatureExtractor(specs)
    extraction = extractor.extract(events)
    bad = [r for r in extraction.reasons if r is not None]
    if bad:
        raise SystemExit(f"FeatureExtractor rejected {len(bad)} generated events, e.g. {bad[0]!r}")
    if extraction.matrix.shape != reference.shape or not np.array_equal(extraction.matrix, reference):
        raise SystemExit("FeatureExtractor and the reference encoder disagree; fix one before training")
    return extraction.matrix, list(extractor.column_names), "streamscore.core.features.FeatureExtractor"


def coverage(events: list[dict[str, Any]], specs: Sequence[FeatureSettings]) -> dict[str, tuple[float, float]]:
    """Per feature: share of events missing the field, share with a category outside the list."""
    result: dict[str, tuple[float, float]] = {}
    for spec in specs:
        values = [_get(event, spec.field_path) for event in events]
        missing = sum(v is None for v in values) / len(values)
        known = set(spec.categories)
        unknown = sum(v is not None and v not in known for v in values) / len(values) if known else 0.0
        result[spec.name] = (missing, unknown)
    return result


def reference_columns(specs: Sequence[FeatureSettings]) -> list[str]:
    names: list[str] = []
    for spec in specs:
        if spec.dtype == "category" and spec.encoding == "one_hot":
            names.extend(f"{spec.name}={c}" for c in spec.categories)
        else:
            names.append(spec.name)
    return names


def reference_matrix(events: list[dict[str, Any]], specs: Sequence[FeatureSettings]) -> np.ndarray:
    """The encoding rules, written independently: one_hot (unknown: zeros), index (unknown:
    ``unknown_value``), bool as 1/0, numbers as float, a missing optional field as its default."""
    blocks: list[np.ndarray] = []
    for spec in specs:
        values = [_get(event, spec.field_path) for event in events]
        if any(v is None for v in values):
            if spec.required:
                raise SystemExit(f"generated events lack the required field {spec.field_path}")
            values = [spec.default if v is None else v for v in values]
        if spec.dtype == "category" and spec.encoding == "one_hot":
            block = np.zeros((len(events), len(spec.categories)), dtype=np.float32)
            for row, value in enumerate(values):
                if value in spec.categories:
                    block[row, spec.categories.index(value)] = 1.0
        elif spec.dtype == "category":
            index = {c: float(i) for i, c in enumerate(spec.categories)}
            block = np.array([[index.get(v, spec.unknown_value)] for v in values], dtype=np.float32)
        else:
            block = np.array([[float(v)] for v in values], dtype=np.float32)
        blocks.append(block)
    return np.hstack(blocks)


def _get(event: dict[str, Any], path: str) -> Any:
    node: Any = event
    for part in path.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def to_onnx(clf: GradientBoostingClassifier, width: int) -> onnx.ModelProto:
    """Outputs ``label`` (int64 [N]) and ``probabilities`` (float32 [N, 2]); input ``features``."""
    model: onnx.ModelProto = convert_sklearn(
        clf,
        name="fraud-demo",
        initial_types=[("features", FloatTensorType([None, width]))],
        options={id(clf): {"zipmap": False}},
        target_opset=TARGET_OPSET,
    )
    return model


def check_signature(session: ort.InferenceSession, width: int) -> None:
    inputs = [(i.name, i.type, i.shape) for i in session.get_inputs()]
    outputs = [(o.name, o.type) for o in session.get_outputs()]
    assert len(inputs) == 1 and inputs[0][0] == "features" and inputs[0][1] == "tensor(float)", inputs
    assert not isinstance(inputs[0][2][0], int) and inputs[0][2][1] == width, inputs
    assert outputs == [("label", "tensor(int64)"), ("probabilities", "tensor(float)")], outputs


def evaluate(
    y: np.ndarray, p: np.ndarray, thresholds: dict[str, float], default_label: str
) -> dict[str, Any]:
    """ROC AUC, average precision, and per threshold precision/recall and decision shares."""
    metrics: dict[str, Any] = {
        "roc_auc": float(roc_auc_score(y, p)),
        "average_precision": float(average_precision_score(y, p)),
        "test_fraud_rate": float(y.mean()),
        "at_threshold": {},
        "decision_share": {},
    }
    for label, threshold in thresholds.items():
        flagged = p >= threshold
        tp = int((flagged & (y == 1)).sum())
        metrics["at_threshold"][label] = {
            "threshold": threshold,
            "flagged_share": float(flagged.mean()),
            "precision": tp / int(flagged.sum()) if flagged.any() else float("nan"),
            "recall": tp / int((y == 1).sum()),
        }
    bounds = sorted(thresholds.items(), key=lambda item: item[1])
    edges = [b for _, b in bounds]
    decision = np.searchsorted(edges, p, side="right")  # 0: default, i: bounds[i - 1]
    names = [default_label] + [label for label, _ in bounds]
    for i, name in enumerate(names):
        chosen = decision == i
        metrics["decision_share"][name] = {
            "share": float(chosen.mean()),
            "fraud_in_decision": float(y[chosen].mean()) if chosen.any() else float("nan"),
        }
    return metrics


def decision_ranges(thresholds: dict[str, float], default_label: str) -> str:
    """E.g. ``approve: score < 0.5; review: 0.5 ≤ score < 0.85; reject: score ≥ 0.85``."""
    bounds = sorted(thresholds.items(), key=lambda item: item[1])
    parts = [f"{default_label}: score < {bounds[0][1]}"]
    for i, (label, low) in enumerate(bounds):
        high = f" < {bounds[i + 1][1]}" if i + 1 < len(bounds) else ""
        parts.append(f"{label}: {low} ≤ score{high}" if high else f"{label}: score ≥ {low}")
    return "; ".join(parts)


def describe(model: onnx.ModelProto, args: argparse.Namespace, metrics: dict[str, Any],
             n_train: int, n_test: int) -> None:
    """Model version, doc string and metadata_props (seed, data, metrics) inside the ONNX file."""
    model.model_version = MODEL_VERSION
    opsets = sorted(model.opset_import, key=lambda o: o.domain)  # skl2onnx's order varies by run
    model.ClearField("opset_import")
    model.opset_import.extend(opsets)
    model.producer_name = "streamscore scripts/train_demo_model.py"
    model.producer_version = f"skl2onnx {skl2onnx.__version__}"
    model.doc_string = (
        "streamscore demo fraud model: GradientBoostingClassifier on synthetic card transactions "
        "(streamscore.demo.transactions). Demo only; not for real decisions."
    )
    at = metrics["at_threshold"]
    props = {
        "version": str(MODEL_VERSION),
        "training_seed": str(args.seed),
        "training_events": str(args.events),
        "train_rows": str(n_train),
        "test_rows": str(n_test),
        "generator": "streamscore.demo.transactions.TransactionGenerator",
        "test_roc_auc": f"{metrics['roc_auc']:.4f}",
        "test_average_precision": f"{metrics['average_precision']:.4f}",
        "metrics": "; ".join(
            f"{label}>={m['threshold']}: precision {m['precision']:.3f} recall {m['recall']:.3f}"
            for label, m in at.items()
        ),
        "config": "streamscore/demo/config.yaml",
    }
    onnx.helper.set_model_props(model, props)


def time_inference(path: Path, x: np.ndarray, rows: int, repeats: int = 300) -> dict[str, Any]:
    """Median and p95 of ``session.run`` on one batch of ``rows`` rows, CPU provider."""
    batch = np.ascontiguousarray(np.resize(x, (rows, x.shape[1])).astype(np.float32))
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for _ in range(20):
        session.run(["probabilities"], {"features": batch})
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        session.run(["probabilities"], {"features": batch})
        times.append((time.perf_counter() - started) * 1000)
    return {
        "rows": rows,
        "repeats": repeats,
        "median_ms": float(np.median(times)),
        "p95_ms": float(np.percentile(times, 95)),
    }


def model_card(**k: Any) -> str:
    args, specs, metrics, timing = k["args"], k["specs"], k["metrics"], k["timing"]
    labels: np.ndarray = k["labels"]
    width = len(k["columns"])
    command = "python scripts/train_demo_model.py"
    non_default = []
    if args.seed != 42:
        non_default.append(f"--seed {args.seed}")
    if args.events != 200_000:
        non_default.append(f"--events {args.events}")
    if args.test_fraction != 0.25:
        non_default.append(f"--test-fraction {args.test_fraction}")
    if non_default:
        command += " " + " ".join(non_default)

    feature_rows = []
    for spec in specs:
        if spec.dtype == "category":
            if spec.encoding == "one_hot":
                enc = f"one-hot over {', '.join(spec.categories)} ({len(spec.categories)} columns; unknown: all 0)"
            else:
                enc = f"index in [{', '.join(spec.categories)}] (unknown: {spec.unknown_value:g})"
        elif spec.dtype == "bool":
            enc = "1.0 / 0.0"
        else:
            enc = "as float"
        required = "required" if spec.required else f"optional, default {spec.default:g}"
        missing, unknown = k["coverage"][spec.name]
        seen = f"{missing:.2%} missing" + (f", {unknown:.2%} unknown" if spec.dtype == "category" else "")
        feature_rows.append(f"| `{spec.name}` | `{spec.field_path}` | {spec.dtype} ({required}) | {enc} | {seen} |")

    at = metrics["at_threshold"]
    threshold_rows = [
        f"| {label} | ≥ {m['threshold']} | {m['flagged_share']:.2%} | {m['precision']:.3f} | {m['recall']:.3f} |"
        for label, m in at.items()
    ]
    decision_rows = [
        f"| {name} | {d['share']:.2%} | {d['fraud_in_decision']:.3f} |"
        for name, d in metrics["decision_share"].items()
    ]
    hp = ", ".join(f"{key}={value}" for key, value in HYPERPARAMETERS.items())
    return f"""# Demo fraud model (`fraud_model.onnx`)

Generated by `{command}`; do not edit by hand, rerun the script instead.

## Purpose

A **demo only** model for `streamscore demo`: it gives the service something realistic to score.
It is trained on **synthetic** card transactions from `streamscore.demo.transactions` and has never
seen real data; its scores mean nothing outside the demo.

## Features

Built by `{k['extractor_used']}` from the `features:` list of `streamscore/demo/config.yaml`
(the same code path as the service) and checked against an independent encoder in the script.
Columns in this order, {width} in all, float32:

| feature | JSON path | type | encoding | missing / unknown in training data |
|---|---|---|---|---|
{chr(10).join(feature_rows)}

Column names: {', '.join(f'`{c}`' for c in k['columns'])}.

## Training data

- Generator: `TransactionGenerator(seed={args.seed}).labelled({args.events})` (profiles: legitimate
  spending and five fraud patterns: stolen card details online, card testing, counterfeit card,
  account takeover on a new card, stealth fraud that looks legitimate).
- Events: {len(labels):,}; fraud rate {labels.mean():.2%} (generator's nominal rate {FRAUD_RATE:.0%}).
  The last column of the feature table shows how often a value was missing (so its default was
  used) or a category was unknown.
- Split: stratified, {1 - args.test_fraction:.0%} train ({k['n_train']:,} rows) / {args.test_fraction:.0%} held-out test
  ({k['n_test']:,} rows), `random_state={args.seed}`.

## Model

- scikit-learn {sklearn.__version__} `GradientBoostingClassifier`: {hp}, random_state={args.seed}.
  Fit time {k['fit_s']:.1f} s.
- Converted with skl2onnx {skl2onnx.__version__} (`zipmap` off), target opsets `{TARGET_OPSET}`
  (the file needs {k['opsets']}); ONNX `model_version` {MODEL_VERSION}; `metadata_props` hold the
  seed, data size and test metrics.
- File size: {k['size']:,} bytes.

## Input and output tensors

| name | direction | type | shape |
|---|---|---|---|
| `features` | input | float32 | [N, {width}] (N dynamic) |
| `label` | output | int64 | [N] (1 = fraud at probability ≥ 0.5) |
| `probabilities` | output | float32 | [N, 2] (column 1 = fraud probability, the service's score) |

## Measured metrics (held-out test set, scored by the ONNX model)

- ROC AUC: **{metrics['roc_auc']:.4f}** (train {metrics['train_roc_auc']:.4f}); average precision
  {metrics['average_precision']:.4f}; test fraud rate {metrics['test_fraud_rate']:.2%}.
- ONNX vs scikit-learn fraud probability: max abs difference {metrics['onnx_vs_sklearn_max_abs_diff']:.2e}.

At the demo's decision thresholds (score = fraud probability; a row counts every event at or
above its threshold, so `review` includes the events that `reject` takes):

| rule | score | share of events at or above | precision | recall |
|---|---|---|---|---|
{chr(10).join(threshold_rows)}

Share of events per decision ({k['decision_ranges']}):

| decision | share of events | fraud rate within |
|---|---|---|
{chr(10).join(decision_rows)}

## Inference time

onnxruntime {ort.__version__} `CPUExecutionProvider`, default threads, one batch of {timing['rows']} rows,
{timing['repeats']} runs after warm-up: median **{timing['median_ms']:.2f} ms**, p95 {timing['p95_ms']:.2f} ms
(Python {platform.python_version()}, {platform.machine()}).

## Retraining

```
{command}
```

Writes `streamscore/demo/fraud_model.onnx` and this card. Deterministic for a seed (same data,
same trees); the timings vary with the machine.
"""


if __name__ == "__main__":
    raise SystemExit(main())
