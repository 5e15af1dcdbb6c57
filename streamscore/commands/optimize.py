"""``streamscore optimize MODEL -c CONFIG --data FILE``: an optimized graph, an int8 and an fp16 model,
each checked against the original on a sample before it is written.

The sample goes through the service's feature extraction; every model is scored through the ONNX
runner as the service scores it (the configured score output and column, on the CPU). A variant
whose decisions agree with the original's on fewer than ``--min-agreement`` of the rows is not
written, and the command exits non-zero naming it.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from streamscore.config import Settings

VARIANTS = ("optimized", "int8", "fp16")
SPEED_BATCHES = (1, 64, 1024)


def register(commands: Any) -> None:
    """Add the subcommand to the CLI's subparsers."""
    parser = commands.add_parser("optimize", help="write optimized, int8 and fp16 models with accuracy and speed")
    parser.add_argument("model", type=Path, help="the ONNX model file")
    parser.add_argument("-c", "--config", type=Path, required=True,
                        help="YAML configuration: features, score output and decisions (its model.path is ignored)")
    parser.add_argument("--data", type=Path, required=True, help="sample events: .jsonl, .csv or .parquet")
    parser.add_argument("--label", default=None, help="field of each event holding its 0/1 label (adds AUC)")
    parser.add_argument("--rows", type=int, default=10_000, help="sample rows read (default 10000)")
    parser.add_argument("--min-agreement", type=float, default=0.999,
                        help="least share of rows whose decision must match the original's (default 0.999)")
    parser.add_argument("--variants", nargs="+", choices=VARIANTS, default=list(VARIANTS))
    parser.add_argument("--seconds", type=float, default=1.0, help="timing per batch size and model (default 1)")
    parser.add_argument("--out-dir", type=Path, default=None, help="where the models go (default: beside MODEL)")
    parser.set_defaults(command=_command)


def _command(args: argparse.Namespace) -> int:
    from streamscore.config import load_settings
    from streamscore.errors import ConfigError, StreamScoreError
    from streamscore.monitoring.datasets import read_events

    if not 0.0 <= args.min_agreement <= 1.0:
        raise ConfigError(f"--min-agreement: expected a share between 0 and 1, got {args.min_agreement}")
    settings = load_settings(args.config)
    events = read_events(args.data, settings.features, args.rows)
    matrix, labels = _sample(settings, events, args.label)
    out_dir = args.out_dir or args.model.parent
    out_dir.mkdir(parents=True, exist_ok=True)
    report = optimize(settings, args.model, matrix, labels, out_dir, args.variants, args.min_agreement, args.seconds)
    report_path = out_dir / f"{args.model.stem}.optimize.json"
    report_path.write_text(json.dumps(report, indent=1) + "\n")
    print(table(report))
    print(f"report: {report_path}")
    refused = [r for r in report["models"] if r.get("refused")]
    if refused:
        names = ", ".join(f"{r['variant']} ({r['decision_agreement']:.4%})" for r in refused)
        raise StreamScoreError(f"--min-agreement: {names} agree with the original on fewer than "
                               f"{args.min_agreement:.4%} of the decisions; not written")
    return 0


def _sample(settings: Settings, events: list[dict[str, Any]], label: str | None) -> tuple[np.ndarray,
                                                                                           np.ndarray | None]:
    from streamscore.core.features import FeatureExtractor, gather
    from streamscore.errors import ConfigError

    extraction = FeatureExtractor(settings.features).extract(events)
    valid = extraction.valid
    if not valid.any():
        raise ConfigError(f"--data: none of the {len(events)} rows can be scored")
    if label is None:
        return extraction.matrix[valid], None
    values = [v for v, ok in zip(gather(events, label, {}), valid.tolist(), strict=True) if ok]
    if any(v not in (0, 1, True, False) for v in values):
        raise ConfigError(f"--label: expected 0 or 1 (or a bool) in field {label!r} of every scorable row")
    return extraction.matrix[valid], np.asarray(values, dtype=np.int64)


def optimize(settings: Settings, model: Path, matrix: np.ndarray, labels: np.ndarray | None, out_dir: Path,
             variants: list[str], min_agreement: float, seconds: float) -> dict[str, Any]:
    """Build, check and (when they agree) write the variants; the report of all of them."""
    from streamscore.core.decisions import DecisionPolicy
    from streamscore.runners import onnx_tools

    writers: dict[str, Callable[[Path, Path], None]] = {
        "optimized": onnx_tools.write_optimized, "int8": onnx_tools.write_int8, "fp16": onnx_tools.write_fp16}
    policy = DecisionPolicy(settings.decisions)
    original = _runner(settings, model)
    base = original.predict(matrix)
    base_decisions = policy.indices(base)
    reports = [_report("original", model, base, base, base_decisions, base_decisions, labels,
                       _speed(original.predict, matrix, seconds))]
    original.close()
    with tempfile.TemporaryDirectory() as scratch:
        for variant in variants:
            staged = Path(scratch) / f"{model.stem}.{variant}.onnx"
            writers[variant](model, staged)
            runner = _runner(settings, staged)
            scores = runner.predict(matrix)
            report = _report(variant, staged, base, scores, base_decisions, policy.indices(scores), labels,
                             _speed(runner.predict, matrix, seconds))
            runner.close()
            if report["decision_agreement"] < min_agreement:
                report["refused"] = True
            else:
                target = out_dir / staged.name
                shutil.move(staged, target)
                report["path"] = str(target)
            reports.append(report)
    return {"model": str(model), "rows": int(matrix.shape[0]), "labels": labels is not None,
            "min_agreement": min_agreement, "models": reports}


def _runner(settings: Settings, path: Path) -> Any:
    from streamscore.runners.onnx import OnnxRunner

    model = settings.single_model.model_copy(update={"path": path, "provider": "cpu", "sha256": None})
    runner = OnnxRunner(model, settings.feature_width)
    runner.load()
    return runner


def _report(variant: str, path: Path, base: np.ndarray, scores: np.ndarray, base_decisions: np.ndarray,
            decisions: np.ndarray, labels: np.ndarray | None, speed: dict[str, float]) -> dict[str, Any]:
    return {
        "variant": variant, "bytes": path.stat().st_size,
        "max_score_difference": float(np.max(np.abs(scores.astype(np.float64) - base))) if base.size else 0.0,
        "decision_agreement": float(np.mean(decisions == base_decisions)) if base.size else 1.0,
        "auc": None if labels is None else auc(labels, scores),
        "rows_per_s": speed,
    }


def auc(labels: np.ndarray, scores: np.ndarray) -> float | None:
    """ROC AUC as the Mann-Whitney statistic (ties count half); None without both classes."""
    positives = int(labels.sum())
    negatives = labels.size - positives
    if positives == 0 or negatives == 0:
        return None
    order = np.argsort(scores, kind="mergesort")
    ranks = np.empty(scores.size, dtype=np.float64)
    ranks[order] = np.arange(1, scores.size + 1)
    _, inverse, counts = np.unique(scores, return_inverse=True, return_counts=True)
    sums = np.bincount(inverse, weights=ranks)
    ranks = (sums / counts)[inverse]  # tied scores share their mean rank
    return float((ranks[labels == 1].sum() - positives * (positives + 1) / 2) / (positives * negatives))


def _speed(predict: Callable[[np.ndarray], np.ndarray], matrix: np.ndarray, seconds: float) -> dict[str, float]:
    """Rows per second at each batch size: repeated calls for about ``seconds`` each, after one warm-up."""
    rates: dict[str, float] = {}
    for size in SPEED_BATCHES:
        batch = np.ascontiguousarray(np.resize(matrix, (size, matrix.shape[1])))
        predict(batch)
        calls, started = 0, time.perf_counter()
        while True:
            predict(batch)
            calls += 1
            elapsed = time.perf_counter() - started
            if elapsed >= seconds and calls >= 3:
                break
        rates[str(size)] = calls * size / elapsed
    return rates


def table(report: dict[str, Any]) -> str:
    """The report as a Markdown table (what docs/performance.md records)."""
    head = ("| model | bytes | max score diff | decision agreement | AUC | "
            + " | ".join(f"rows/s @{b}" for b in SPEED_BATCHES) + " |")
    lines = [head, "|" + "---|" * (5 + len(SPEED_BATCHES))]
    for r in report["models"]:
        name = r["variant"] + (" (refused)" if r.get("refused") else "")
        auc_text = "n/a" if r["auc"] is None else f"{r['auc']:.4f}"
        speeds = " | ".join(f"{r['rows_per_s'][str(b)]:,.0f}" for b in SPEED_BATCHES)
        lines.append(f"| {name} | {r['bytes']:,} | {r['max_score_difference']:.2e} | "
                     f"{r['decision_agreement']:.4%} | {auc_text} | {speeds} |")
    return "\n".join(lines)
