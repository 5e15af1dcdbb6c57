"""What the REST endpoint serves: models by name and version, with their aliases and signatures.

``ModelCatalog`` is the one interface the HTTP layer reads models through: discovery
(``GET /v2/models``), metadata and the scorer behind a name. ``ConfiguredCatalog`` serves the
configured ``model`` (or ``models`` + ``graph``) as one model; a model registry (versions,
aliases, reloads) plugs in by implementing the same protocol.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from streamscore.config import Settings
from streamscore.core.model import ModelRunner, StagedRunner
from streamscore.core.scorer import Scorer

FEATURES_INPUT = "features"
"""The tensor input of every served model: the float32 feature matrix [rows, columns]."""
DEFAULT_ALIAS = "default"


@dataclass(frozen=True, slots=True)
class TensorInfo:
    """One input or output of a model, as the Open Inference Protocol describes it."""

    name: str
    datatype: str
    shape: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class ModelInfo:
    """A served model: its name, versions (newest first), aliases and signature."""

    name: str
    versions: tuple[str, ...]
    platform: str
    inputs: tuple[TensorInfo, ...]
    outputs: tuple[TensorInfo, ...]
    aliases: tuple[str, ...] = ()
    features: tuple[str, ...] = ()
    """The JSON paths ``/v1/score`` reads, in the order of the feature columns."""
    models: dict[str, str] = field(default_factory=dict)
    """The models behind it (name -> version) when it is a graph of several."""


@dataclass(frozen=True, slots=True)
class Served:
    """A model version ready to score: its description and the core scorer behind it."""

    info: ModelInfo
    version: str
    scorer: Scorer


class ModelCatalog(Protocol):
    """Where the REST endpoint finds its models (the configured graph, or a model registry)."""

    def models(self) -> Sequence[ModelInfo]:
        """Every model served, for discovery."""
        ...

    def resolve(self, name: str, version: str | None = None) -> Served | None:
        """The model called ``name`` (or one of its aliases) at ``version`` (None: the current one);
        None when there is no such model or version."""
        ...


def describe(runner: ModelRunner, settings: Settings) -> ModelInfo:
    """The Open Inference Protocol description of a loaded runner and the feature spec before it."""
    width = settings.feature_width
    models = {}
    if isinstance(runner, StagedRunner) and runner.stages:
        models = dict(runner.stages[-1].models)
    return ModelInfo(
        name=runner.name,
        versions=(runner.version,),
        platform="streamscore-graph" if models else "onnxruntime",
        inputs=(TensorInfo(FEATURES_INPUT, "FP32", (-1, width)),),
        outputs=(TensorInfo("score", "FP32", (-1,)), TensorInfo("decision", "BYTES", (-1,))),
        aliases=(DEFAULT_ALIAS,),
        features=tuple(f.field_path for f in settings.features),
        models=models,
    )


class ConfiguredCatalog:
    """The configured model or graph, served as one model under its name and the alias ``default``.
    With ``current`` (the runner serving now), a hot-reloaded version is served from the next
    request on, with the same scoring spec."""

    def __init__(self, scorer: Scorer, settings: Settings,
                 current: Callable[[], ModelRunner] | None = None) -> None:
        self._settings = settings
        self._current = current
        self._served = Served(describe(scorer.runner, settings), scorer.runner.version, scorer)

    def _now(self) -> Served:
        served = self._served
        runner = self._current() if self._current is not None else served.scorer.runner
        if runner is not served.scorer.runner:  # reloaded: describe and score the new version
            served = Served(describe(runner, self._settings), runner.version, Scorer(served.scorer.spec, runner))
            self._served = served
        return served

    def models(self) -> Sequence[ModelInfo]:
        return [self._now().info]

    def resolve(self, name: str, version: str | None = None) -> Served | None:
        served = self._now()
        info = served.info
        if name != info.name and name not in info.aliases:
            return None
        if version is not None and version not in info.versions:
            return None
        return served
