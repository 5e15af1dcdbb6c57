"""``streamscore profile -c CONFIG --data FILE``: the model's reference profile, next to the model.

The reference events go through the service's own feature extraction and the configured model, so
the profile holds what the service will see for the same data; rows the service would dead-letter
are left out (and counted).
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any

import numpy as np

from streamscore.config import Settings
from streamscore.core.features import MISSING, FeatureExtractor, gather

log = logging.getLogger(__name__)

CHUNK = 4096
"""Rows per model call while scoring the reference data."""


def register(commands: Any) -> None:
    """Add the subcommand to the CLI's subparsers."""
    parser = commands.add_parser("profile", help="write the model's reference profile (for drift monitoring)")
    parser.add_argument("-c", "--config", type=Path, required=True, help="YAML configuration (features, model)")
    parser.add_argument("--data", type=Path, required=True, help="reference data: .jsonl, .csv or .parquet")
    parser.add_argument("--limit", type=int, default=None, help="read at most this many rows")
    parser.add_argument("--out", type=Path, default=None, help="profile file (default: MODEL.profile.json)")
    parser.set_defaults(command=_command)


def _command(args: argparse.Namespace) -> int:
    from streamscore.config import load_settings
    from streamscore.monitoring.datasets import read_events
    from streamscore.monitoring.profile import profile_path, write_profile

    settings = load_settings(args.config)
    model = settings.single_model
    events = read_events(args.data, settings.features, args.limit)
    profile = profile_events(settings, events, args.data.name)
    out = args.out or profile_path(model.path)
    write_profile(profile, out)
    print(f"profile ok: {out} ({profile['rows']} rows profiled of {len(events)} read; "
          f"score p50 {profile['score']['quantiles'].get('p50', float('nan')):.4f})")
    return 0


def profile_events(settings: Settings, events: list[dict[str, Any]], source: str) -> dict[str, Any]:
    """The profile of ``events`` for the configured features and (single) model."""
    from streamscore.errors import ConfigError
    from streamscore.monitoring.profile import build_profile
    from streamscore.plugins import Plugins
    from streamscore.service import build_runner

    specs = settings.features
    cache: dict[str, list[Any]] = {}
    extraction = FeatureExtractor(specs).extract(events, cache)
    valid = extraction.valid
    if not valid.any():
        raise ConfigError(f"--data: none of the {len(events)} rows can be scored (e.g. {extraction.reasons[0]})")
    if not valid.all():
        log.warning("%d of %d reference rows would be dead-lettered; profiled without them",
                    int((~valid).sum()), len(events))
    matrix = extraction.matrix[valid]
    missing = [float(np.mean([v is MISSING or v is None for v, ok in zip(gather(events, s.field_path, cache), valid,
                                                                          strict=True) if ok]))
               for s in specs]
    runner = build_runner(settings, Plugins.default())
    runner.load()
    try:
        scores = np.concatenate([runner.predict(matrix[i:i + CHUNK]) for i in range(0, len(matrix), CHUNK)])
    finally:
        runner.close()
    return build_profile(specs, matrix, missing, scores, source, {"name": runner.name, "version": runner.version})
