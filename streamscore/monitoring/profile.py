"""The reference profile of a model: what its input and score looked like on reference data.

Written by ``streamscore profile`` (and the demo's training script) as a JSON file next to the model
(``fraud.onnx`` -> ``fraud.profile.json``), so that a registry can refer to it as a file. Per feature:
fixed bins and their reference counts, quantiles, the share of rows missing the field, holding the
default, or an unknown category; the same for the score. The service bins its live stream with the
same edges (``drift.DriftMonitor``).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from streamscore.config import FeatureSettings
from streamscore.errors import ConfigError
from streamscore.monitoring.bins import NUMERIC_QUANTILES, SCORE_QUANTILES, Bins, quantile_edges
from streamscore.monitoring.drift import DriftMonitor, Watched

FORMAT = "streamscore-profile/1"
SUMMARY_QUANTILES = (0.01, 0.05, 0.25, 0.5, 0.75, 0.95, 0.99)


def profile_path(model_path: Path) -> Path:
    """Where a model's profile lives: next to it, ``NAME.profile.json``."""
    return model_path.with_name(model_path.stem + ".profile.json")


def feature_bins(specs: Sequence[FeatureSettings], matrix: np.ndarray) -> list[Bins]:
    """The bins of each feature, numeric edges from the reference ``matrix``'s deciles."""
    bins, column = [], 0
    for spec in specs:
        if spec.dtype == "category":
            bins.append(Bins.category(column, len(spec.categories), spec.encoding, spec.unknown_value))
        elif spec.dtype == "bool":
            bins.append(Bins.numeric(column, [0.5]))
        else:
            bins.append(Bins.numeric(column, quantile_edges(matrix[:, column], NUMERIC_QUANTILES)))
        column += spec.width
    return bins


def build_profile(specs: Sequence[FeatureSettings], matrix: np.ndarray, missing: Sequence[float],
                  scores: np.ndarray, source: str, model: dict[str, Any]) -> dict[str, Any]:
    """The profile of the reference rows ``matrix`` (as the service extracts them) and their ``scores``;
    ``missing``: per feature, the share of reference events without the field."""
    features = []
    for spec, bins, miss in zip(specs, feature_bins(specs, matrix), missing, strict=True):
        counts = np.bincount(bins.assign(matrix), minlength=bins.size)
        entry: dict[str, Any] = {
            "name": spec.name, "path": spec.field_path, "dtype": spec.dtype, "kind": bins.kind,
            "edges": bins.edges.tolist(), "counts": counts.tolist(), "missing_rate": float(miss),
        }
        if spec.dtype == "category":
            entry["categories"] = list(spec.categories)
            entry["unknown_rate"] = float(counts[-1]) / max(len(matrix), 1)
        else:
            entry["quantiles"] = _quantiles(matrix[:, bins.column])
        if not spec.required and spec.default is not None and spec.dtype != "category":
            entry["default"] = spec.default
            entry["default_rate"] = float(np.mean(matrix[:, bins.column] == spec.default)) if len(matrix) else 0.0
        features.append(entry)
    score_bins = Bins.numeric(0, quantile_edges(scores, SCORE_QUANTILES))
    score = {"edges": score_bins.edges.tolist(),
             "counts": np.bincount(score_bins.assign(scores.reshape(-1, 1)), minlength=score_bins.size).tolist(),
             "quantiles": _quantiles(scores)}
    return {"format": FORMAT, "source": source, "rows": len(matrix), "model": model,
            "features": features, "score": score}


def _quantiles(values: np.ndarray) -> dict[str, float]:
    if values.size == 0:
        return {}
    found = np.quantile(values.astype(np.float64), SUMMARY_QUANTILES)
    return {f"p{round(q * 100):02d}": float(v) for q, v in zip(SUMMARY_QUANTILES, found, strict=True)}


def write_profile(profile: dict[str, Any], path: Path) -> None:
    path.write_text(json.dumps(profile, indent=1) + "\n")


def read_profile(path: Path, key: str = "monitoring.profile") -> dict[str, Any]:
    try:
        profile: dict[str, Any] = json.loads(path.read_text())
    except OSError as exc:
        raise ConfigError(f"{key}: cannot read {path} ({exc.strerror})") from None
    except ValueError as exc:
        raise ConfigError(f"{key}: {path} is not JSON ({exc})") from None
    if not isinstance(profile, dict) or profile.get("format") != FORMAT:
        raise ConfigError(f"{key}: {path} is not a streamscore profile (expected format {FORMAT!r})")
    return profile


def monitor_from_profile(profile: dict[str, Any], specs: Sequence[FeatureSettings], *, window_events: int,
                         slots: int, min_events: int, key: str = "monitoring.profile") -> DriftMonitor:
    """A drift monitor for the configured features; refuses a profile made for other features."""
    entries = {f["name"]: f for f in profile["features"]}
    watched, column = [], 0
    for spec in specs:
        entry = entries.get(spec.name)
        if entry is None:
            raise ConfigError(f"{key}: the profile has no feature {spec.name!r} (it has {sorted(entries)})")
        if entry["dtype"] != spec.dtype or entry.get("categories", []) != list(spec.categories):
            raise ConfigError(f"{key}: feature {spec.name!r} differs from the profile's (dtype or categories); "
                              f"profile the model again")
        if spec.dtype == "category":
            bins = Bins.category(column, len(spec.categories), spec.encoding, spec.unknown_value)
        else:
            bins = Bins.numeric(column, entry["edges"])
        counts = np.asarray(entry["counts"], dtype=np.float64)
        if counts.size != bins.size:
            raise ConfigError(f"{key}: feature {spec.name!r} has {counts.size} counts for {bins.size} bins")
        default = entry.get("default")
        watched.append(Watched(spec.name, bins, counts, None if default is None else float(default),
                               float(entry.get("default_rate", 0.0))))
        column += spec.width
    score = profile["score"]
    score_watch = Watched("score", Bins.numeric(0, score["edges"]), np.asarray(score["counts"], dtype=np.float64))
    return DriftMonitor(watched, score_watch, window_events, slots, min_events)
