"""The ``models`` and ``graph`` sections: several named models and how they combine.

A configuration has either one ``model`` (the one-node graph) or ``models`` plus a ``graph``. The
graph's names are checked here; widths and dtypes are checked against the model files when the
graph loads (``streamscore.core.graph``).
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator

from streamscore.config.model import ModelSettings
from streamscore.config.section import Section

Combine = Literal["mean", "weighted_mean", "max", "min", "vote", "stacking"]


class GraphModelSettings(ModelSettings):
    features: list[str] | None = None
    """Names of the top-level ``features`` this model reads, in its input order (default: all of
    them). Unused by a stacking ``meta`` model, whose input is the members' scores."""


class EnsembleGraph(Section):
    type: Literal["ensemble"]
    """Every member scores the same rows; their scores are combined."""
    members: list[str] = Field(min_length=2)
    """Names from ``models``."""
    combine: Combine = "mean"
    """``mean``, ``weighted_mean`` (by ``weights``), ``max``, ``min``; ``vote``: the majority of the
    members' decision labels (a tie goes to the later, stricter label), and the record's score is the
    mean score of the members that voted for it (so it lies in that label's band); ``stacking``: the
    ``meta`` model scores the members' scores (one input column per member, in order)."""
    weights: list[float] | None = None
    """``weighted_mean``: one non-negative weight per member."""
    meta: str | None = None
    """``stacking``: the name of the meta model in ``models``."""

    @model_validator(mode="after")
    def _consistent(self) -> EnsembleGraph:
        if self.combine == "weighted_mean":
            if self.weights is None or len(self.weights) != len(self.members):
                raise ValueError("weighted_mean needs one weight per member")
            if min(self.weights) < 0 or sum(self.weights) <= 0:
                raise ValueError("weights must be non-negative with a positive sum")
        elif self.weights is not None:
            raise ValueError("'weights' is only for combine: weighted_mean")
        if (self.combine == "stacking") != (self.meta is not None):
            raise ValueError("combine: stacking needs a 'meta' model, and only stacking takes one")
        return self

    @property
    def names(self) -> list[str]:
        return [*self.members, *([self.meta] if self.meta else [])]


class CascadeGraph(Section):
    type: Literal["cascade"]
    """Confidence-gated: the second stage scores only the rows whose first score lies in ``band``."""
    stages: list[str] = Field(min_length=2, max_length=2)
    """Two names from ``models``: the cheap first stage, then the expensive second one."""
    band: tuple[float, float]
    """``[lo, hi]``: rows whose first-stage score is in this closed range go to the second stage;
    the others keep the first score."""

    @field_validator("band")
    @classmethod
    def _ordered(cls, band: tuple[float, float]) -> tuple[float, float]:
        if band[0] > band[1]:
            raise ValueError("band must be [lo, hi] with lo <= hi")
        return band

    @property
    def names(self) -> list[str]:
        return list(self.stages)


class ChainGraph(Section):
    type: Literal["chain"]
    """Each stage's score output columns are appended to the next stage's input; the last scores."""
    stages: list[str] = Field(min_length=2)
    """Names from ``models``, in order."""

    @property
    def names(self) -> list[str]:
        return list(self.stages)


class SegmentGraph(Section):
    type: Literal["segments"]
    """Each event goes to the model of its segment (the value at ``field``); a batch is split by
    segment and each part scored in one call."""
    field: str
    """Dotted path of the segment value in the event JSON (e.g. ``merchant.country``); a string,
    an integer (matched as its decimal text) or a boolean (``true``/``false``)."""
    routes: dict[str, str] = Field(min_length=1)
    """Segment value -> name from ``models``. Several segments may share a model."""
    default: str | None = None
    """Model for events whose segment has no route (or no segment value); without one they go to
    the dead-letter topic with reason ``no_model``."""
    max_loaded: int | None = Field(default=None, ge=1)
    """At most this many of the segment models are loaded at once; the least recently used is
    unloaded to make room (null: all stay loaded). Every model is loaded and checked at start."""

    @property
    def names(self) -> list[str]:
        """The distinct models routed to, in route order, then the default."""
        return list(dict.fromkeys([*self.routes.values(), *([self.default] if self.default else [])]))


AnyGraph = EnsembleGraph | CascadeGraph | ChainGraph | SegmentGraph
GraphSettings = Annotated[AnyGraph, Field(discriminator="type")]


def _check_segments(graph: SegmentGraph, models: dict[str, GraphModelSettings]) -> set[str]:
    known = ", ".join(sorted(models)) or "none"
    for key, name in [*((f"graph.routes.{v}", n) for v, n in graph.routes.items()), ("graph.default", graph.default)]:
        if name is not None and name not in models:
            raise ValueError(f"{key}: unknown model {name!r} (models has: {known})")
    return set(graph.names)


def check_graph(graph: AnyGraph, models: dict[str, GraphModelSettings], features: list[str]) -> None:
    """Names only: every graph name is a model, none twice (a cycle), every model used, every
    feature a model reads exists. Raises ValueError whose text starts with the key."""
    seen: set[str] = set()
    if isinstance(graph, SegmentGraph):
        seen = _check_segments(graph, models)
    else:
        field = "members" if isinstance(graph, EnsembleGraph) else "stages"
        for i, name in enumerate(graph.names):
            key = f"graph.{field}[{i}]" if i < len(getattr(graph, field)) else "graph.meta"
            if name not in models:
                raise ValueError(f"{key}: unknown model {name!r} (models has: {', '.join(sorted(models)) or 'none'})")
            if name in seen:
                raise ValueError(f"{key}: model {name!r} appears twice in the graph (a cycle)")
            seen.add(name)
    for name, model in models.items():
        if name not in seen:
            raise ValueError(f"models.{name}: not used by the graph")
        for j, feature in enumerate(model.features or []):
            if feature not in features:
                raise ValueError(f"models.{name}.features[{j}]: unknown feature {feature!r} "
                                 f"(features has: {', '.join(features)})")
