"""The job every variant runs, as one JSON file for the peers' scorer (``load/peers/scoring.py``):
streamscore's demo configuration (feature spec, decisions, copied fields, model) read through
streamscore's own settings, so the peers get exactly the spec streamscore scores with."""

from __future__ import annotations

import hashlib
import json
from importlib.resources import as_file, files
from pathlib import Path
from typing import Any

from streamscore.config import load_settings


def demo_job() -> dict[str, Any]:
    with as_file(files("streamscore.demo") / "config.yaml") as demo:
        settings = load_settings(Path(demo), env={})
        model_path = Path(demo).parent / settings.single_model.path
    model = settings.single_model
    return {
        "features": [{"path": f.field_path, "dtype": f.dtype, "required": f.required, "default": f.default,
                      "encoding": f.encoding if f.dtype == "category" else None, "categories": f.categories,
                      "unknown_value": f.unknown_value, "width": f.width} for f in settings.features],
        "decisions": {"default": settings.decisions.default,
                      "rules": [{"label": r.label, "min_score": r.min_score} for r in settings.decisions.rules]},
        "copy_fields": list(settings.output.copy_fields),
        "max_bytes": settings.batching.max_message_bytes,
        "model": {"path": str(model_path), "score_output": model.score_output, "score_column": model.score_column,
                  "name": model.name or model_path.stem, "intra_op_threads": model.intra_op_threads,
                  "version": model.version or f"sha256:{hashlib.sha256(model_path.read_bytes()).hexdigest()[:12]}"},
    }


def write_job(path: Path) -> Path:
    path.write_text(json.dumps(demo_job(), indent=1))
    return path
