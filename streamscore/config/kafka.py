"""The ``kafka`` section: brokers, topics and the librdkafka passthrough maps.

The librdkafka settings that carry the delivery guarantee are checked here, so that ``validate``
refuses a passthrough map that ``run`` could not honour.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any

from pydantic import BeforeValidator, Field, ValidationInfo, field_validator, model_validator

from streamscore.config.section import Section

CONSUMER_FORCED: Mapping[str, Any] = {"enable.auto.commit": False, "enable.auto.offset.store": False}
"""Consumer settings the service sets itself: offsets are stored and committed only after acknowledgement."""
PRODUCER_FORCED: Mapping[str, Any] = {"enable.idempotence": True, "acks": "all"}
"""Producer settings the service sets itself: no output lost or reordered by a retry."""
_FORCED_BY_MAP: Mapping[str, Mapping[str, Any]] = {
    "client": {**CONSUMER_FORCED, **PRODUCER_FORCED},
    "consumer": CONSUMER_FORCED,
    "producer": PRODUCER_FORCED,
}


def _scalar(value: Any) -> Any:
    """A librdkafka setting is one string, number or boolean (checked first, so that an error
    names the key rather than each member of the union)."""
    if isinstance(value, str | int | float):
        return value
    raise ValueError("expected a string, number or boolean")


ClientValue = Annotated[str | int | float | bool, BeforeValidator(_scalar)]


class KafkaSettings(Section):
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
    """librdkafka settings for both consumer and producer (security.protocol, sasl.*, ssl.* ...),
    over the service's default ``metadata.recovery.rebootstrap.trigger.ms`` 10000 (librdkafka's
    is 300000: a client left with no known broker waits that long before it bootstraps again)."""
    consumer: dict[str, ClientValue] = {}
    """librdkafka settings for the consumer only."""
    producer: dict[str, ClientValue] = {}
    """librdkafka settings for the producer only (over the service's defaults: ``linger.ms`` 1,
    ``compression.type`` lz4)."""

    @field_validator("client", "consumer", "producer")
    @classmethod
    def _read_secret_files(cls, values: dict[str, ClientValue]) -> dict[str, ClientValue]:
        """A value ``${file:/path}`` is replaced by that file's text (one trailing newline dropped), so
        that secrets such as ``sasl.password`` or ``ssl.key.password`` can come from mounted files."""
        return {key: _file_text(key, value) if isinstance(value, str) and value.startswith("${file:")
                and value.endswith("}") else value for key, value in values.items()}

    @field_validator("client", "consumer", "producer")
    @classmethod
    def _guarantee_kept(cls, values: dict[str, ClientValue], info: ValidationInfo) -> dict[str, ClientValue]:
        """A passthrough value may repeat what the service forces, never contradict it."""
        for key, required in _FORCED_BY_MAP[str(info.field_name)].items():
            if key in values and not _same_setting(values[key], required):
                raise ValueError(f"{key} must be {_show(required)} for streamscore's delivery guarantee "
                                 f"(got {values[key]!r}); leave it out")
        if info.field_name in ("client", "producer") and "transactional.id" in values:
            raise ValueError("transactional.id is not a passthrough setting: set 'delivery: exactly_once' "
                             "(and optionally kafka.transactional_id) instead")
        return values

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




def _same_setting(given: Any, required: Any) -> bool:
    """Whether librdkafka reads ``given`` as ``required`` (booleans as true/false, acks all as -1)."""
    text = str(given).lower()
    if required == "all":
        return text in ("all", "-1")
    return text == str(required).lower()


def _show(value: Any) -> str:
    return ("'all' (or -1)" if value == "all" else repr(str(value).lower()) if isinstance(value, bool)
            else repr(value))
