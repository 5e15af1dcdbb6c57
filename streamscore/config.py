"""Settings: one YAML file, overridden key by key from ``STREAMSCORE_*`` environment variables.

``STREAMSCORE_KAFKA__BOOTSTRAP_SERVERS=host:9092`` overrides ``kafka.bootstrap_servers``; ``__``
separates levels. Inside the librdkafka passthrough maps (``kafka.client``, ``kafka.consumer``,
``kafka.producer``) a single ``_`` stands for ``.``, so ``STREAMSCORE_KAFKA__CLIENT__SASL_PASSWORD``
sets ``sasl.password``. Values are parsed as YAML scalars (``5`` is a number, ``[a, b]`` a list),
except in the passthrough maps, where they stay text as librdkafka reads them (a secret such as
``0123`` stays intact).
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, field_validator, model_validator

from streamscore.errors import ConfigError

ENV_PREFIX = "STREAMSCORE_"
_PASSTHROUGH_MAPS = frozenset({("kafka", "client"), ("kafka", "consumer"), ("kafka", "producer")})
_NOT_SETTINGS = frozenset({"STREAMSCORE_TANSU", "STREAMSCORE_TEST_BOOTSTRAP"})
"""Variables with the prefix that configure the embedded broker and the tests, not the service."""
_TEST_PREFIX = "STREAMSCORE_TEST_"
"""Any variable under this prefix sets a test knob (fuzz size, seed ...), never a setting."""


def _scalar(value: Any) -> Any:
    """A librdkafka setting is one string, number or boolean (checked first, so that an error
    names the key rather than each member of the union)."""
    if isinstance(value, str | int | float):
        return value
    raise ValueError("expected a string, number or boolean")


ClientValue = Annotated[str | int | float | bool, BeforeValidator(_scalar)]


class _Section(BaseModel):
    # use_attribute_docstrings: the docstring under each field becomes its description, which the
    # configuration reference (docs/configuration.md, streamscore.reference) is generated from.
    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)


class KafkaSettings(_Section):
    bootstrap_servers: str = "127.0.0.1:9092"
    """Comma-separated host:port list of the brokers."""
    group_id: str = "streamscore"
    """Consumer group; instances sharing it split the source partitions."""
    source_topics: list[str] = Field(min_length=1)
    """Topics whose JSON events are scored."""
    destination_topic: str
    """Topic that receives one score record per event."""
    dead_letter_topic: str
    """Topic that receives events that cannot be scored, with the reason in headers."""
    session_timeout_ms: int = Field(default=10_000, ge=1_000)
    """Consumer group session timeout."""
    transactional_id: str | None = None
    """Producer transactional.id for ``delivery: exactly_once``; must be stable across restarts of
    one instance and unique across instances (default: ``streamscore-<group_id>-<hostname>``)."""
    client: dict[str, ClientValue] = {}
    """librdkafka settings for both consumer and producer (security.protocol, sasl.*, ssl.* ...)."""
    consumer: dict[str, ClientValue] = {}
    """librdkafka settings for the consumer only."""
    producer: dict[str, ClientValue] = {}
    """librdkafka settings for the producer only."""

    @field_validator("client", "consumer", "producer")
    @classmethod
    def _read_secret_files(cls, values: dict[str, ClientValue]) -> dict[str, ClientValue]:
        """A value ``${file:/path}`` is replaced by that file's text (one trailing newline dropped), so
        that secrets such as ``sasl.password`` or ``ssl.key.password`` can come from mounted files."""
        return {key: _file_text(key, value) if isinstance(value, str) and value.startswith("${file:")
                and value.endswith("}") else value for key, value in values.items()}

    @model_validator(mode="after")
    def _distinct_topics(self) -> KafkaSettings:
        outputs = {self.destination_topic, self.dead_letter_topic}
        if len(outputs) < 2 or outputs & set(self.source_topics):
            raise ValueError("source, destination and dead-letter topics must all differ")
        return self


def _file_text(key: str, reference: str) -> str:
    path = Path(reference[len("${file:"):-1])
    try:
        text = path.read_text()
    except OSError as exc:
        raise ValueError(f"{key}: cannot read {path} ({exc.strerror})") from None
    except UnicodeDecodeError:
        raise ValueError(f"{key}: {path} is not UTF-8 text") from None
    return text.removesuffix("\n")


class BatchingSettings(_Section):
    max_batch_size: int = Field(default=1000, ge=1, le=1_000_000)
    """A batch is scored as soon as it holds this many events..."""
    max_wait_ms: float = Field(default=20.0, ge=0)
    """...or when its first event has waited this long, whichever comes first."""
    max_in_flight: int = Field(default=20_000, ge=1)
    """Events consumed but not yet committed; consumption waits above this. Bounds memory and the
    events a crash can make the service score twice (at most this plus one batch)."""
    max_message_bytes: int = Field(default=1_000_000, ge=1)
    """Events larger than this go to the dead-letter topic unread."""
    max_json_depth: int = Field(default=64, ge=1, le=254)
    """Events whose JSON nests objects and arrays deeper than this go to the dead-letter topic
    (``too_deep``). At most 254: orjson cannot write a copied field nested deeper into the output."""
    commit_interval_ms: float = Field(default=1000.0, ge=0)
    """How often acknowledged offsets are committed while running (sooner when the window fills)."""
    drain_timeout_s: float = Field(default=30.0, gt=0)
    """Upper bound on the final drain at shutdown or revocation."""


Provider = Literal["auto", "cpu", "cuda", "tensorrt"]


class ModelSettings(_Section):
    path: Path
    """ONNX model file; a relative path is taken from the config file's folder, or from the working
    directory when it comes from an environment variable."""
    name: str | None = None
    """Model name written into every output record (default: the file's stem)."""
    version: str | None = None
    """Model version written into every output record (default: ``sha256:`` and the file's hash prefix)."""
    provider: Provider = "auto"
    """Execution provider; ``auto`` takes CUDA when onnxruntime sees a GPU, else the CPU."""
    input: str | None = None
    """Model input fed with the feature matrix (default: the model's only input)."""
    score_output: str | None = None
    """Model output holding the score (default: the last output)."""
    score_column: int | None = 1
    """Column of a 2-D score output; null for a 1-D output."""
    sha256: str | None = Field(default=None, pattern=r"^[0-9a-fA-F]{64}$")
    """Expected sha256 of the model file; when set, a different file refuses to load."""
    warmup_batches: int = Field(default=2, ge=0)
    """Batches run through the model at start so the first real batch pays no setup cost."""


class FeatureSettings(_Section):
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


class DecisionRule(_Section):
    label: str
    """Decision written for scores in this rule's range."""
    min_score: float
    """The rule applies to scores at or above this."""


class DecisionSettings(_Section):
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


class OutputSettings(_Section):
    copy_fields: list[str] = []
    """Dotted paths of input fields copied into the output record under the same name."""

    @field_validator("copy_fields")
    @classmethod
    def _not_reserved(cls, fields: list[str]) -> list[str]:
        clash = RESERVED_OUTPUT_KEYS.intersection(fields)
        if clash:
            raise ValueError(f"{sorted(clash)} are names the output record already uses")
        return fields


class MetricsSettings(_Section):
    enabled: bool = True
    """Serve /metrics, /healthz and /readyz."""
    host: str = "0.0.0.0"
    """Bind address of the metrics and health listener."""
    port: int = Field(default=9100, ge=0, le=65535)
    """Port of /metrics, /healthz and /readyz (0 picks a free port)."""


Delivery = Literal["at_least_once", "exactly_once"]


class Settings(_Section):
    kafka: KafkaSettings
    """Brokers, topics and librdkafka settings."""
    batching: BatchingSettings = BatchingSettings()
    """When batches close, and the bounds on in-flight work and shutdown."""
    model: ModelSettings
    """The ONNX model and where its score is read."""
    features: list[FeatureSettings] = Field(min_length=1)
    """Model input columns, in order, each read from the event JSON."""
    decisions: DecisionSettings = DecisionSettings()
    """Score thresholds that turn a score into a decision label."""
    output: OutputSettings = OutputSettings()
    """What each output record carries besides the score and decision."""
    metrics: MetricsSettings = MetricsSettings()
    """The HTTP listener for Prometheus and the health probes."""
    delivery: Delivery = "at_least_once"
    """``at_least_once``: offsets are committed after the outputs are acknowledged, so a crash can
    write an output twice. ``exactly_once``: outputs and offsets are committed in one Kafka
    transaction; readers with ``isolation.level=read_committed`` see each output once."""
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

    @property
    def feature_width(self) -> int:
        return sum(f.width for f in self.features)

    @property
    def stop_bound_s(self) -> float:
        """The longest a stop takes: the drain, then leaving the group (abandoned after the session
        timeout). Container grace periods must outlast it."""
        return self.batching.drain_timeout_s + self.kafka.session_timeout_ms / 1000


def load_settings(path: Path | str | None, env: Mapping[str, str] | None = None) -> Settings:
    """Read, override from the environment, and validate; raises ConfigError with one line."""
    raw: dict[str, Any] = {}
    if path is not None:
        raw = _read_yaml(Path(path))
        _resolve_model_path(raw, Path(path).parent)  # the file's paths are relative to the file
    apply_env_overrides(raw, os.environ if env is None else env)
    _resolve_model_path(raw, Path.cwd())  # an override's, like a command line's, to the working directory
    try:
        return Settings.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(describe_validation_error(exc)) from None


def _resolve_model_path(raw: dict[str, Any], base: Path) -> None:
    model = raw.get("model")
    if isinstance(model, dict) and isinstance(model.get("path"), str) and not Path(model["path"]).is_absolute():
        model["path"] = str((base / model["path"]).resolve())


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"config file {path}: cannot be read ({exc.strerror})") from None
    except UnicodeDecodeError:
        raise ConfigError(f"config file {path}: cannot be read (not UTF-8 text)") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"config file {path}: not valid YAML{where}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path}: expected a mapping of sections at the top level")
    return data


def apply_env_overrides(raw: dict[str, Any], env: Mapping[str, str]) -> None:
    """Set ``raw`` keys from ``STREAMSCORE_A__B__C`` variables, creating sections as needed."""
    for name in sorted(env):
        if (not name.startswith(ENV_PREFIX) or name == ENV_PREFIX or name in _NOT_SETTINGS
                or name.startswith(_TEST_PREFIX)):
            continue
        parts = [p.lower() for p in name[len(ENV_PREFIX):].split("__")]
        passthrough = len(parts) >= 3 and (parts[0], parts[1]) in _PASSTHROUGH_MAPS
        if passthrough:
            parts = [parts[0], parts[1], "__".join(parts[2:]).replace("_", ".")]
        node = raw
        for part in parts[:-1]:
            child = node.get(part)
            if not isinstance(child, dict):
                child = node[part] = {}
            node = child
        # librdkafka takes every setting as text: keep passthrough values verbatim, so that a
        # password such as 0123 or yes is not turned into a number or a boolean
        node[parts[-1]] = env[name] if passthrough else _parse_env_value(env[name])


def _parse_env_value(text: str) -> Any:
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def describe_validation_error(exc: ValidationError) -> str:
    """The first error as ``section.key: what was expected`` on one line."""
    err = exc.errors(include_url=False)[0]
    loc = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in err["loc"]).lstrip(".") or "config"
    kind = err["type"]
    if kind == "extra_forbidden":
        known = _known_keys(err["loc"][:-1])
        return f"{loc}: unknown key" + (f" (expected one of: {', '.join(known)})" if known else "")
    if kind == "missing":
        return f"{loc}: required key is missing"
    msg = err["msg"].removeprefix("Value error, ")
    given = err.get("input")
    shown = f" (got {given!r})" if not isinstance(given, dict | list) and given is not None else ""
    return f"{loc}: {msg}{shown}"


def _known_keys(loc: tuple[int | str, ...]) -> list[str]:
    """The keys a section accepts, found by walking the settings model along ``loc``."""
    model: Any = Settings
    for part in loc:
        if isinstance(part, int):
            continue
        field = model.model_fields.get(part) if hasattr(model, "model_fields") else None
        if field is None:
            return []
        annotation = field.annotation
        args = getattr(annotation, "__args__", ())
        model = next((a for a in (annotation, *args) if isinstance(a, type) and issubclass(a, BaseModel)), None)
        if model is None:
            return []
    return list(model.model_fields) if model is not None else []
