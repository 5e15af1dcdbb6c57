"""The settings tree, section by section: one YAML file, overridden key by key from
``STREAMSCORE_*`` environment variables.

``STREAMSCORE_KAFKA__BOOTSTRAP_SERVERS=host:9092`` overrides ``kafka.bootstrap_servers``; ``__``
separates levels. Inside the librdkafka passthrough maps (``kafka.client``, ``kafka.consumer``,
``kafka.producer``) a single ``_`` stands for ``.``, so ``STREAMSCORE_KAFKA__CLIENT__SASL_PASSWORD``
sets ``sasl.password``. Values are parsed as YAML scalars (``5`` is a number, ``[a, b]`` a list),
except in the passthrough maps, where they stay text as librdkafka reads them (a secret such as
``0123`` stays intact).
"""

from __future__ import annotations

import itertools
import re
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from streamscore.config.batch import BatchSettings
from streamscore.config.challengers import CanarySettings, ShadowSettings
from streamscore.config.faust import FaustSettings
from streamscore.config.graph import GraphModelSettings, GraphSettings, check_graph
from streamscore.config.kafka import KafkaSettings
from streamscore.config.model import ModelSettings, RegistrySettings, ReloadSettings, registry_reference
from streamscore.config.section import Section
from streamscore.config.serve import ServeSettings


class BatchingSettings(Section):
    max_batch_size: int = Field(default=1000, ge=1, le=1_000_000)
    """A batch is scored as soon as it holds this many events..."""
    max_wait_ms: float = Field(default=20.0, ge=0)
    """...or when its first event has waited this long, whichever comes first."""
    adaptive: bool = True
    """Also score a batch as soon as the consumer has nothing more buffered: full batches on a
    backlog, no waiting at low load. ``false``: batches close only by count or time."""
    max_in_flight: int = Field(default=20_000, ge=1)
    """Events consumed but not yet committed; consumption waits above this. Bounds memory and the
    events a crash can make the service score twice (at most this plus one batch)."""
    max_message_bytes: int = Field(default=1_000_000, ge=1)
    """Events larger than this go to the dead-letter topic unread."""
    max_json_depth: int = Field(default=64, ge=1, le=254)
    """Events whose JSON nests objects and arrays deeper than this go to the dead-letter topic
    (``too_deep``). At most 254: orjson cannot write a copied field nested deeper into the output."""
    commit_interval_ms: float = Field(default=1000.0, ge=0)
    """How often acknowledged offsets are committed while running (sooner once half of
    ``max_in_flight`` is uncommitted)."""
    drain_timeout_s: float = Field(default=30.0, gt=0)
    """Upper bound on the final drain at shutdown or revocation."""


class FeatureSettings(Section):
    name: str
    """Feature name, for messages and the model card."""
    path: str | None = None
    """Dotted path into the event JSON (default: the name)."""
    dtype: Literal["float", "int", "bool", "category"] = "float"
    """Expected JSON type; ``category`` takes strings mapped through ``categories``."""
    required: bool = True
    """Whether a missing (or null) value sends the event to the dead-letter topic."""
    default: float | None = None
    """Value used when the field is missing and not required."""
    categories: list[str] = []
    """Known values of a ``category`` feature."""
    encoding: Literal["index", "one_hot"] = "index"
    """``index``: one column with the category's position; ``one_hot``: one column per category."""
    unknown_value: float = -1.0
    """Index given to a category not in the list (``one_hot`` leaves all columns 0)."""
    aggregate: Literal["count", "sum", "since_last"] | None = None
    """A stateful (velocity) feature, computed from the earlier events of the same ``key`` rather than
    read from the event: ``count`` of events and ``sum`` of ``of`` within ``window`` (by event time,
    this event included), or ``since_last``: seconds since the key's previous event (``default``, or
    -1, for its first). Needs ``engine: faust``, whose tables keep the state."""
    key: str | None = None
    """Stateful features: dotted path of the key the state is kept per (``card.id``); the source
    topic should be partitioned by it (state is kept per source partition)."""
    of: str | None = None
    """``aggregate: sum``: dotted path of the number summed (``amount``)."""
    window: str | None = None
    """``count`` and ``sum``: how far back in event time, as ``90s``, ``30m``, ``1h`` or ``7d``."""

    @model_validator(mode="after")
    def _stateful(self) -> FeatureSettings:
        if self.aggregate is None:
            if self.key or self.of or self.window:
                raise ValueError("'key', 'of' and 'window' are only for stateful features (set 'aggregate')")
            return self
        if not self.key:
            raise ValueError(f"aggregate {self.aggregate!r} needs a 'key' (the path its state is kept per)")
        if self.path or self.dtype not in ("float", "int"):
            raise ValueError("a stateful feature is computed, not read: no 'path', dtype float or int")
        if (self.aggregate == "sum") != bool(self.of):
            raise ValueError("'of' (the path summed) goes with aggregate 'sum' and only with it")
        if (self.aggregate == "since_last") == bool(self.window):
            raise ValueError("'window' goes with aggregates 'count' and 'sum', not 'since_last'")
        if self.window:
            window_seconds(self.window)
        return self

    @property
    def window_s(self) -> float | None:
        """``window`` in seconds."""
        return window_seconds(self.window) if self.window else None

    @model_validator(mode="after")
    def _consistent(self) -> FeatureSettings:
        if self.dtype == "category" and not self.categories:
            raise ValueError("a category feature needs a non-empty 'categories' list")
        if self.dtype != "category" and self.categories:
            raise ValueError("'categories' is only for dtype 'category'")
        if not self.required and self.default is None and not (
            self.dtype == "category"
        ):
            raise ValueError("an optional feature needs a 'default'")
        if len(set(self.categories)) != len(self.categories):
            raise ValueError("'categories' has duplicates")
        return self

    @property
    def field_path(self) -> str:
        return self.path or self.name

    @property
    def width(self) -> int:
        return len(self.categories) if self.encoding == "one_hot" and self.dtype == "category" else 1


_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def window_seconds(text: str) -> float:
    """``90s``, ``30m``, ``1h``, ``7d`` -> seconds (a ValueError naming the form otherwise)."""
    number, unit = text[:-1], text[-1:]
    try:
        seconds = float(number) * _UNITS[unit]
    except (KeyError, ValueError):
        raise ValueError(f"window {text!r}: expected a number and a unit (s, m, h, d), e.g. 1h") from None
    if not seconds > 0:
        raise ValueError(f"window {text!r}: must be positive")
    return seconds


class DecisionRule(Section):
    label: str
    """Decision written for scores in this rule's range."""
    min_score: float
    """The rule applies to scores at or above this."""


class DecisionSettings(Section):
    default: str = "approve"
    """Label for scores below every rule."""
    rules: list[DecisionRule] = [
        DecisionRule(label="review", min_score=0.5),
        DecisionRule(label="reject", min_score=0.9),
    ]
    """Score thresholds, strictly ascending."""

    @field_validator("rules")
    @classmethod
    def _ascending(cls, rules: list[DecisionRule]) -> list[DecisionRule]:
        mins = [r.min_score for r in rules]
        if any(b <= a for a, b in itertools.pairwise(mins)):
            raise ValueError("rule thresholds must be strictly ascending")
        return rules


RESERVED_OUTPUT_KEYS = frozenset(
    {"score", "decision", "model", "model_version", "source", "event_time_ms", "scored_at_ms"}
)


class OutputSettings(Section):
    copy_fields: list[str] = []
    """Dotted paths of input fields copied into the output record under the same name."""

    @field_validator("copy_fields")
    @classmethod
    def _not_reserved(cls, fields: list[str]) -> list[str]:
        clash = RESERVED_OUTPUT_KEYS.intersection(fields)
        if clash:
            raise ValueError(f"{sorted(clash)} are names the output record already uses")
        return fields


class MetricsSettings(Section):
    enabled: bool = True
    """Serve /metrics, /healthz and /readyz."""
    host: str = "0.0.0.0"
    """Bind address of the metrics and health listener."""
    port: int = Field(default=9100, ge=0, le=65535)
    """Port of /metrics, /healthz and /readyz (0 picks a free port)."""


class MonitoringSettings(Section):
    """Drift and data quality of the live stream against the model's reference profile
    (``streamscore profile``), as the ``streamscore_feature_*`` and ``streamscore_score_psi`` gauges."""

    drift: bool = True
    """Watch drift when a profile is there (``profile``, or the model's ``NAME.profile.json``)."""
    profile: Path | None = None
    """Reference profile file (default: ``NAME.profile.json`` next to ``model.path``; a graph of
    models needs it set). A relative path is taken from the config file's folder."""
    window_events: int = Field(default=10_000, ge=1)
    """Events in the sliding window the live figures are computed over (about: the window moves a
    slot at a time, and a slot closes after the batch that fills it)."""
    slots: int = Field(default=10, ge=1, le=1000)
    """Slots of the window: old events leave it ``window_events / slots`` at a time."""
    min_events: int = Field(default=1000, ge=1)
    """PSI gauges are NaN until the window holds this many events (small samples look drifted)."""
    psi_threshold: float = Field(default=0.2, gt=0)
    """A feature's or the score's PSI above this is drift (exported as
    ``streamscore_drift_threshold{check="psi"}`` for the alert rules; 0.1-0.25 is the usual band)."""
    default_rate_increase: float = Field(default=0.1, gt=0)
    """An optional feature holding its default (absent, or sent as it) this much more often than in
    the reference is a data quality problem (``check="default_rate"``)."""
    unknown_rate_increase: float = Field(default=0.05, gt=0)
    """A category feature's share of unknown (or missing) values this much above the reference's
    is a data quality problem (``check="unknown_rate"``)."""


class DestinationSettings(Section):
    kind: str = "kafka"
    """Destination kind, from the destination registry (``kafka``, ``postgresql``)."""
    topic: str | None = None
    """``kafka``: the topic (default: ``kafka.destination_topic``)."""
    options: dict[str, Any] = {}
    """Settings of a destination kind: ``postgresql`` takes ``dsn``, ``table``, ``max_rows``,
    ``connect_timeout_s``, ``initial_backoff_s``, ``max_backoff_s`` and ``max_outage_s`` (README,
    "PostgreSQL destination")."""


class BreakerSettings(Section):
    """When the model fails by itself (not because of its rows), consumption stops, the service is
    unready and the held batch is retried with backoff; nothing is dead-lettered for it."""

    max_outage_s: float = Field(default=300.0, gt=0)
    """How long the model may keep failing before the service exits non-zero (its uncommitted
    events are then scored by whoever takes the partitions over)."""
    initial_backoff_s: float = Field(default=0.5, gt=0)
    """Wait before the first retry; it doubles after each failed retry..."""
    max_backoff_s: float = Field(default=30.0, gt=0)
    """...up to this."""


Delivery = Literal["at_least_once", "exactly_once"]


class Settings(Section):
    kafka: KafkaSettings
    """Brokers, topics and librdkafka settings."""
    batching: BatchingSettings = BatchingSettings()
    """When batches close, and the bounds on in-flight work and shutdown."""
    model: ModelSettings | None = None
    """The ONNX model and where its score is read (the one-node graph); or ``models`` and ``graph``."""
    features: list[FeatureSettings] = Field(min_length=1)
    """Model input columns, in order, each read from the event JSON."""
    models: dict[str, GraphModelSettings] = {}
    """Named models for ``graph``, each like ``model`` plus the features it reads."""
    registry: RegistrySettings | None = None
    """The model registry that ``registry:NAME@ALIAS`` model paths are taken from."""
    reload: ReloadSettings = ReloadSettings()
    """Hot reload of new model versions (a changed file, a moved alias, ``SIGHUP``)."""
    graph: GraphSettings | None = None
    """How the ``models`` combine: an ensemble, a confidence-gated cascade, a chain, or routing
    by segment."""
    shadow: ShadowSettings | None = None
    """A model scored on the same events as the champion, written to its own topic, never deciding."""
    canary: CanarySettings | None = None
    """A challenger that scores and decides for a stable share of keys."""
    decisions: DecisionSettings = DecisionSettings()
    """Score thresholds that turn a score into a decision label."""
    output: OutputSettings = OutputSettings()
    """What each output record carries besides the score and decision."""
    metrics: MetricsSettings = MetricsSettings()
    """The HTTP listener for Prometheus, the health probes and the status page."""
    monitoring: MonitoringSettings = MonitoringSettings()
    """Drift and data quality against the model's reference profile."""
    engine: str = "confluent-kafka"
    """Stream engine, from the engine registry: ``confluent-kafka`` (the service's own loop) or
    ``faust`` (a Faust application; needed for stateful features)."""
    faust: FaustSettings = FaustSettings()
    """``engine: faust``: its tables and their store."""
    destinations: list[DestinationSettings] = []
    """Where score records go; each input offset is committed once every destination acknowledged
    its output (default: one ``kafka`` destination, ``kafka.destination_topic``)."""
    breaker: BreakerSettings = BreakerSettings()
    """The circuit breaker for model failures."""
    serve: ServeSettings = ServeSettings()
    """The REST endpoint of ``streamscore serve`` and ``run --serve``."""
    delivery: Delivery = "at_least_once"
    """``at_least_once``: offsets are committed after the outputs are acknowledged, so a crash can
    write an output twice. ``exactly_once``: outputs and offsets are committed in one Kafka
    transaction; readers with ``isolation.level=read_committed`` see each output once. ``streamscore
    batch`` from a topic range into the destinations commits each chunk's outputs and its end offsets
    (in a progress group of the run's own) in one transaction; from files into the destinations it
    refuses ``exactly_once``; an output folder is exactly-once either way."""
    batch: BatchSettings | None = None
    """What ``streamscore batch`` scores (files, or a Kafka topic range) and where it writes; the
    stream ignores it."""
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    """Log level of the service (the command line's --log-level overrides it)."""
    log_format: Literal["text", "json"] = "text"
    """``json``: one JSON object per line, for log shippers."""

    @field_validator("features")
    @classmethod
    def _unique_names(cls, features: list[FeatureSettings]) -> list[FeatureSettings]:
        names = [f.name for f in features]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"duplicate feature names {dupes}")
        return features

    @model_validator(mode="after")
    def _references(self) -> Settings:
        for key, model in self.all_models:
            ref = registry_reference(model)
            if ref is None:
                continue
            if not re.fullmatch(r"registry:[A-Za-z0-9._-]+@[A-Za-z0-9._-]+", ref):
                raise ValueError(f"{key}.path: {ref!r} is not a registry reference (expected "
                                 "registry:NAME@ALIAS or registry:NAME@VERSION)")
            if self.registry is None:
                raise ValueError(f"{key}.path: {ref!r} needs a 'registry' section with its root folder")
        return self

    @model_validator(mode="after")
    def _stateful_engine(self) -> Settings:
        for i, f in enumerate(self.features):
            if f.aggregate and self.engine != "faust":
                raise ValueError(f"features[{i}].aggregate: stateful features need 'engine: faust' (its "
                                 f"changelog-backed tables keep the state); engine is {self.engine!r}")
        if self.engine == "faust":
            for key in ("shadow", "canary"):
                if getattr(self, key) is not None:
                    raise ValueError(f"{key}: not available with 'engine: faust' (use 'confluent-kafka')")
        return self

    @property
    def stateful_features(self) -> list[FeatureSettings]:
        return [f for f in self.features if f.aggregate]

    @model_validator(mode="after")
    def _one_graph(self) -> Settings:
        if self.graph is None:
            if self.model is None:
                raise ValueError("model: required key is missing (or give 'models' and a 'graph')")
            if self.models:
                raise ValueError("models: named models need a 'graph' that combines them")
            return self
        if self.model is not None:
            raise ValueError("model: give either 'model' or 'models' with a 'graph', not both")
        check_graph(self.graph, self.models, [f.name for f in self.features])
        if self.canary is not None and self.graph.type == "segments":
            raise ValueError("canary: not with a segments graph (route a segment to the challenger instead)")
        return self

    @model_validator(mode="after")
    def _challenger_features(self) -> Settings:
        names = [f.name for f in self.features]
        for key, section in (("shadow", self.shadow), ("canary", self.canary)):
            for j, feature in enumerate(section.model.features or [] if section else []):
                if feature not in names:
                    raise ValueError(f"{key}.model.features[{j}]: unknown feature {feature!r} "
                                     f"(features has: {', '.join(names)})")
        return self

    @property
    def all_models(self) -> list[tuple[str, ModelSettings]]:
        """Every model section with its key: ``model``, ``models.NAME``, ``shadow.model``, ``canary.model``."""
        keyed: list[tuple[str, ModelSettings]] = [("model", self.model)] if self.model is not None else []
        keyed += [(f"models.{n}", m) for n, m in self.models.items()]
        keyed += [(f"{k}.model", c.model) for k, c in (("shadow", self.shadow), ("canary", self.canary)) if c]
        return keyed

    @property
    def single_model(self) -> ModelSettings:
        """The ``model`` section, for tools that drive one model; an error under a ``graph``."""
        if self.model is None:
            raise ValueError("model: this tool takes one 'model', not 'models' with a 'graph'")
        return self.model

    @property
    def outputs(self) -> list[DestinationSettings]:
        """The destinations, or the default one."""
        return list(self.destinations) or [DestinationSettings()]

    @property
    def feature_width(self) -> int:
        return sum(f.width for f in self.features)

    def feature_columns(self, names: list[str] | None) -> list[int] | None:
        """The feature matrix's columns of the named features, in that order (None: all)."""
        if names is None:
            return None
        offsets, start = {}, 0
        for f in self.features:
            offsets[f.name] = range(start, start + f.width)
            start += f.width
        return [col for name in names for col in offsets[name]]

    @property
    def stop_bound_s(self) -> float:
        """The longest a stop takes: the drain, then leaving the group (abandoned after the session
        timeout). Container grace periods must outlast it."""
        return self.batching.drain_timeout_s + self.kafka.session_timeout_ms / 1000
