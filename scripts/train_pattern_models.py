"""Train the small models the inference-pattern examples use, next to the demo fraud model.

    python scripts/train_pattern_models.py     # writes examples/models/*.onnx and examples/registry/
    python scripts/train_demo_model.py         # retrains the demo model, then runs this too

All are scikit-learn logistic regressions (a few hundred bytes of ONNX each) on the demo features,
trained on the same synthetic transactions as the demo model:

- ``fast.onnx``: the cheap first stage of the cascade, on five numeric features only;
- ``logistic.onnx``: an ensemble member beside the demo model, on all features;
- ``chain_head.onnx``: the chain's second stage, on all features plus the first stage's two
  probability columns;
- ``segment_eu.onnx`` / ``segment_us.onnx``: one model per segment, trained on its countries only;
- ``registry/fraud/1`` (a logistic regression) and ``registry/fraud/2`` (more strongly
  regularised), with aliases ``production`` -> 2 and ``shadow`` -> 1.

Each model's test ROC AUC is printed and recorded in the registry metadata.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from skl2onnx import convert_sklearn
from skl2onnx.common.data_types import FloatTensorType
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import train_test_split

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from streamscore.config import load_settings
from streamscore.core.features import FeatureExtractor
from streamscore.demo.transactions import TransactionGenerator
from streamscore.registry import ModelMetadata, Registry

CONFIG = ROOT / "streamscore" / "demo" / "config.yaml"
EXAMPLES = ROOT / "examples"
FAST_FEATURES = ["amount", "hour", "card_age_days", "tx_count_1h", "tx_count_24h"]
EU = {"GB", "DE", "FR", "NL", "ES"}


def to_onnx(clf: LogisticRegression, width: int) -> onnx.ModelProto:
    """Input ``features`` [None, width]; outputs ``label`` and ``probabilities`` [None, 2]."""
    model: onnx.ModelProto = convert_sklearn(clf, initial_types=[("features", FloatTensorType([None, width]))],
                                             options={id(clf): {"zipmap": False}},
                                             target_opset={"": 17, "ai.onnx.ml": 3})
    return model


def fit(x: np.ndarray, y: np.ndarray, seed: int, **params: Any) -> tuple[LogisticRegression, float]:
    """A standardised logistic regression (scaling folded into the weights); its test ROC AUC."""
    x_train, x_test, y_train, y_test = train_test_split(x, y, test_size=0.25, stratify=y, random_state=seed)
    mean, std = x_train.mean(axis=0), x_train.std(axis=0) + 1e-6
    clf = LogisticRegression(max_iter=2000, class_weight="balanced", random_state=seed, **params)
    clf.fit((x_train - mean) / std, y_train)
    clf.coef_ = clf.coef_ / std  # the raw features in, as the service feeds them
    clf.intercept_ = clf.intercept_ - (clf.coef_ * mean).sum(axis=1)
    return clf, float(roc_auc_score(y_test, clf.predict_proba(x_test)[:, 1]))


def save(clf: LogisticRegression, width: int, path: Path, auc: float) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save_model(to_onnx(clf, width), path)
    print(f"wrote {path.relative_to(ROOT)} ({path.stat().st_size:,} bytes), test ROC AUC {auc:.4f}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=43)
    parser.add_argument("--events", type=int, default=60_000)
    parser.add_argument("--out-dir", type=Path, default=EXAMPLES)
    args = parser.parse_args(argv)

    settings = load_settings(CONFIG, env={})
    events, y = TransactionGenerator(seed=args.seed).labelled(args.events)
    matrix = FeatureExtractor(settings.features).extract(events).matrix
    models = args.out_dir / "models"

    fast_cols = settings.feature_columns(FAST_FEATURES)
    assert fast_cols is not None
    fast, auc = fit(matrix[:, fast_cols], y, args.seed)
    save(fast, len(fast_cols), models / "fast.onnx", auc)

    logistic, auc = fit(matrix, y, args.seed)
    save(logistic, matrix.shape[1], models / "logistic.onnx", auc)

    upstream = fast.predict_proba(matrix[:, fast_cols]).astype(np.float32)
    head, auc = fit(np.hstack([matrix, upstream]), y, args.seed)
    save(head, matrix.shape[1] + 2, models / "chain_head.onnx", auc)

    countries = np.array([e["merchant"]["country"] for e in events])
    for name, rows in (("eu", np.isin(countries, list(EU))), ("us", countries == "US")):
        clf, auc = fit(matrix[rows], y[rows], args.seed)
        save(clf, matrix.shape[1], models / f"segment_{name}.onnx", auc)

    publish_registry(args.out_dir / "registry", matrix, y, [f.name for f in settings.features], args.seed)
    return 0


def publish_registry(root: Path, matrix: np.ndarray, y: np.ndarray, features: list[str], seed: int) -> None:
    """``fraud`` versions 1 and 2, production -> 2, shadow -> 1 (the folder is rebuilt)."""
    shutil.rmtree(root, ignore_errors=True)
    registry = Registry(root)
    staging = root.parent / ".staging.onnx"
    created = datetime.now(UTC).replace(microsecond=0).isoformat()
    for version, params in (("1", {}), ("2", {"C": 0.001})):
        clf, auc = fit(matrix, y, seed, **params)
        onnx.save_model(to_onnx(clf, matrix.shape[1]), staging)
        meta = ModelMetadata(features=features, width=matrix.shape[1], score_output="probabilities",
                             score_column=1, metrics={"test_roc_auc": round(auc, 4)},
                             tags={"trainer": "scripts/train_pattern_models.py", "algorithm": "logistic_regression"},
                             created=created)
        found = registry.publish("fraud", version, staging, meta)
        print(f"published registry fraud@{version} ({found.path.stat().st_size:,} bytes), test ROC AUC {auc:.4f}")
    staging.unlink()
    registry.set_alias("fraud", "production", "2")
    registry.set_alias("fraud", "shadow", "1")


if __name__ == "__main__":
    raise SystemExit(main())
