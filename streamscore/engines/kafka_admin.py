"""Kafka administration at the edge: is the cluster there, which topics exist, create topics."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient

from streamscore.config import KafkaSettings
from streamscore.errors import BrokerError, ConfigError

_librdkafka_log = logging.getLogger("streamscore.librdkafka")


def check_broker(settings: KafkaSettings, timeout: float) -> set[str]:
    """The topic names on the cluster; raises BrokerError when no broker answers in time, naming the
    last connection error (refused, TLS handshake, authentication) when librdkafka reported one."""
    # librdkafka's own connection-refused lines would bury the one-line answer: keep it quiet
    errors: list[KafkaError] = []
    conf: dict[str, Any] = {"bootstrap.servers": settings.bootstrap_servers, **settings.client, "log_level": 2,
                            "logger": _librdkafka_log, "error_cb": errors.append}
    try:
        admin = AdminClient(conf)
    except KafkaException as exc:  # a setting librdkafka refuses (a key it cannot read ...)
        raise ConfigError(f"kafka.client: {exc.args[0].str() if exc.args else exc}") from None
    try:
        metadata = admin.list_topics(timeout=timeout)
    except KafkaException as exc:
        err = exc.args[0] if exc.args else None
        code = err.code() if isinstance(err, KafkaError) else None
        admin.poll(0)  # serves the queued error callbacks
        causes = [e.str() for e in errors if e.code() != KafkaError._ALL_BROKERS_DOWN]
        cause = f" ({causes[-1]})" if causes else ""
        raise BrokerError(
            f"kafka.bootstrap_servers: no broker reachable at {settings.bootstrap_servers} within {timeout:g}s{cause}",
            code,
        ) from None
    return set(metadata.topics)


def create_topics(bootstrap_servers: str, topics: Mapping[str, int], client: Mapping[str, Any] | None = None,
                  timeout: float = 15.0, config: Mapping[str, str] | None = None) -> None:
    """Create topics (name -> partitions) that do not exist yet, with topic ``config`` if given."""
    from confluent_kafka.admin import NewTopic  # type: ignore[attr-defined]

    admin = AdminClient({"bootstrap.servers": bootstrap_servers, **(client or {})})
    existing = set(admin.list_topics(timeout=timeout).topics)
    wanted = [NewTopic(name, partitions, 1, config=dict(config or {}))
              for name, partitions in topics.items() if name not in existing]
    if not wanted:
        return
    for name, future in admin.create_topics(wanted, request_timeout=timeout).items():
        try:
            future.result(timeout)
        except KafkaException as exc:
            err = exc.args[0]
            if err.code() != KafkaError.TOPIC_ALREADY_EXISTS:
                raise BrokerError(f"cannot create topic {name!r}: {err.str()}", err.code()) from None


def partition_counts(settings: KafkaSettings, topics: Sequence[str], timeout: float) -> dict[str, int]:
    """Partitions of each of ``topics`` that exists (BrokerError when no broker answers in time)."""
    conf: dict[str, Any] = {"bootstrap.servers": settings.bootstrap_servers, **settings.client, "log_level": 2,
                            "logger": _librdkafka_log}
    admin = AdminClient(conf)
    try:
        metadata = admin.list_topics(timeout=timeout)
    except KafkaException as exc:
        raise BrokerError(f"kafka.bootstrap_servers: no broker reachable at {settings.bootstrap_servers} "
                          f"within {timeout:g}s") from exc
    return {t: len(metadata.topics[t].partitions) for t in topics if t in metadata.topics}
