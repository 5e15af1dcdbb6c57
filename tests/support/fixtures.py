"""Fixtures for tests against a real broker and real service processes, loaded as a pytest
plugin by ``tests/conftest.py``.

The broker is started for the session: Tansu (embedded, the default) or, with
``STREAMSCORE_TEST_BROKER=kafka``, Apache Kafka (``scripts/kafka.sh``); ``STREAMSCORE_TEST_BOOTSTRAP``
names an external cluster instead. Every test makes its own topics and group.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from load.brokers import make_broker
from load.faults.harness import ServiceProcess, Topics, make_topics
from load.faults.harness import write_config as write_scenario_config
from load.kafka_io import OutputReader
from tests.support.postgres import PostgresServer, binaries
from tests.support.rest import RestProcess, start_rest


@pytest.fixture(scope="session")
def bootstrap(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    external = os.environ.get("STREAMSCORE_TEST_BOOTSTRAP")
    if external:
        yield external
        return
    with make_broker(tmp_path_factory.mktemp("broker")) as broker:
        yield broker.bootstrap_servers


@pytest.fixture
def topics(bootstrap: str) -> Callable[..., Topics]:
    """Fresh topics per test (source topics allow 4 MB values, for the oversize-input tests)."""

    def make(partitions: int = 4) -> Topics:
        return make_topics(bootstrap, partitions, prefix="it")

    return make


@pytest.fixture
def write_config(tmp_path: Path, bootstrap: str) -> Callable[..., Path]:
    """A config file for the demo features and model on the given topics; ``overrides`` merge in."""

    def write(t: Topics, **overrides: Any) -> Path:
        return write_scenario_config(tmp_path, bootstrap, t, **overrides)

    return write


ENGINES = ("confluent-kafka", "faust")
"""The stream engines: a test parametrized by ``engine`` over these passes through both."""


@pytest.fixture
def engine_config(tmp_path: Path, write_config: Callable[..., Path]) -> Callable[..., Path]:
    """``write_config`` with ``engine`` set; for ``faust`` also a short fetch wait (Faust's 1.5 s
    default would hold every window that long on the embedded broker), a data directory of its own
    under the test's (an instance restarted on the same file finds its RocksDB files again) and the
    memory table store (``faust`` overrides merge in)."""
    written = itertools.count()

    def write(t: Topics, engine: str, **overrides: Any) -> Path:
        if engine == "faust":
            kafka = overrides.pop("kafka", {})
            overrides = {"kafka": {**kafka, "consumer": {"fetch.wait.max.ms": 10, **kafka.get("consumer", {})}},
                         "faust": {"data_dir": str(tmp_path / f"faust-{next(written)}"), "store": "memory",
                                   **overrides.pop("faust", {})}, **overrides}
        return write_config(t, engine=engine, **overrides)

    return write


@pytest.fixture
def service(tmp_path: Path) -> Iterator[Callable[..., ServiceProcess]]:
    """Starts ``streamscore run`` on a config; every process still running at teardown is killed."""
    started: list[ServiceProcess] = []

    def make(config: Path, env: dict[str, str] | None = None, args: tuple[str, ...] = ()) -> ServiceProcess:
        proc = ServiceProcess(config, tmp_path / f"service-{len(started)}.log", env=env, args=args)
        started.append(proc)
        return proc.start()

    yield make
    for proc in started:
        proc.kill()


@pytest.fixture
def output_reader(bootstrap: str) -> Iterator[Callable[..., OutputReader]]:
    """Started readers of a test's score and dead-letter topics (from their first offset), closed at
    teardown; ``bootstrap_servers`` and ``client`` settings reach another broker (TLS, say)."""
    readers: list[OutputReader] = []

    def make(t: Topics, bootstrap_servers: str | None = None, client: Mapping[str, str] | None = None) -> OutputReader:
        reader = OutputReader(bootstrap_servers or bootstrap, [t.destination, t.dead_letter], client).start()
        readers.append(reader)
        return reader

    yield make
    for reader in readers:
        reader.close()


@pytest.fixture(scope="module")
def rest_service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[..., RestProcess]]:
    """Starts ``streamscore serve`` on the demo model and a free port, ready; ``overrides`` merge into
    the config (``serve={...}``). One per module and set of overrides: starting one takes seconds."""
    started: list[RestProcess] = []

    def make(env: dict[str, str] | None = None, **overrides: Any) -> RestProcess:
        proc = start_rest(tmp_path_factory.mktemp("rest"), env, **overrides)
        started.append(proc)
        return proc

    yield make
    for proc in started:
        proc.kill()


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    """A PostgreSQL server for the session (``tests/support/postgres.py``); each test uses its own table."""
    bin_dir = binaries()
    if bin_dir is None:
        pytest.skip("PostgreSQL is not installed (./scripts/test.sh installs Debian's postgresql)")
    server = PostgresServer(bin_dir)
    try:
        yield server.init().start()
    finally:
        server.remove()


@pytest.fixture
def cli() -> Iterator[Callable[..., int]]:
    """``streamscore`` in this process (no interpreter start-up per call); the root logger's level and
    handlers, which the CLI configures, are put back at teardown."""
    import logging

    from streamscore.cli import main

    root = logging.getLogger()
    level, handlers = root.level, list(root.handlers)
    yield lambda *args: main(list(args))
    for handler in [h for h in root.handlers if h not in handlers]:
        root.removeHandler(handler)
    root.setLevel(level)
