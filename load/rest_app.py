"""The REST app as an ASGI factory, for running it under other servers (``load.rest``):
``uvicorn --factory load.rest_app:app`` or ``granian --interface asgi --factory load.rest_app:app``,
with ``RESTBENCH_CONFIG`` naming the configuration file."""

from __future__ import annotations

import os

from starlette.types import ASGIApp

from streamscore.config import load_settings
from streamscore.core.scorer import Scorer, ScoringSpec
from streamscore.metrics import Metrics
from streamscore.plugins import Plugins
from streamscore.service import build_runner
from streamscore.serving.app import RestApp
from streamscore.serving.catalog import ConfiguredCatalog


def app() -> ASGIApp:
    settings = load_settings(os.environ["RESTBENCH_CONFIG"])
    metrics = Metrics()
    runner = build_runner(settings, Plugins.default(), metrics)
    runner.load()
    catalog = ConfiguredCatalog(Scorer(ScoringSpec.from_settings(settings), runner), settings)
    return RestApp(catalog, settings.serve, metrics).asgi
