"""What every fault scenario stands on: topics, configs, service processes, an input stream and
the accounting step that maps every output back to an input id.

Counts come from consuming records, never from end offsets (the embedded broker under-reports its
high watermarks); outputs are read with ``load.kafka_io.OutputReader``.
The input id is the transaction id, which is also the record key: a score record
and a dead-letter record both keep the input's key.
"""

from __future__ import annotations

import collections
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from importlib.resources import as_file, files
from pathlib import Path
from typing import Any

import orjson
import yaml
from confluent_kafka import Consumer, Producer, TopicPartition

from load.kafka_io import OutputReader, Record, produce_one
from streamscore.broker import free_port
from streamscore.demo.transactions import TransactionGenerator
from streamscore.engines.kafka_admin import create_topics

REPO = Path(__file__).resolve().parents[2]

MALFORMED_RATE = 0.001
"""Share of deliberately bad inputs, so the dead-letter path is under fault too."""


@dataclass(frozen=True)
class Topics:
    source: str
    destination: str
    dead_letter: str
    group: str
    partitions: int


def make_topics(bootstrap: str, partitions: int = 4, prefix: str = "fault") -> Topics:
    """Fresh source, score and dead-letter topics (and a group name) for one run."""
    run = uuid.uuid4().hex[:8]
    t = Topics(f"{prefix}-in-{run}", f"{prefix}-scores-{run}", f"{prefix}-dlq-{run}", f"{prefix}-group-{run}",
               partitions)
    # oversize inputs (about 1 MB) must reach the service on brokers that enforce the 1 MB default
    create_topics(bootstrap, {t.source: partitions, t.destination: partitions, t.dead_letter: 1},
                  config={"max.message.bytes": "4000000"})
    return t


def write_config(workdir: Path, bootstrap: str, t: Topics, **overrides: Any) -> Path:
    """The demo features and model on the scenario's topics; ``overrides`` merge into sections."""
    with as_file(files("streamscore.demo") / "config.yaml") as demo:
        config = yaml.safe_load(Path(demo).read_text())
        config["model"]["path"] = str(Path(demo).parent / "fraud_model.onnx")
    config["kafka"].update(bootstrap_servers=bootstrap, group_id=t.group, source_topics=[t.source],
                           destination_topic=t.destination, dead_letter_topic=t.dead_letter,
                           session_timeout_ms=6000)
    config["model"]["provider"] = "cpu"
    config["batching"].update(max_batch_size=500, max_wait_ms=10, max_in_flight=5000, commit_interval_ms=200)
    config["metrics"] = {"host": "127.0.0.1", "port": free_port()}
    for section, values in overrides.items():
        if isinstance(values, dict) and isinstance(config.get(section), dict):
            config[section].update(values)
        else:
            config[section] = values
    path = workdir / f"config-{uuid.uuid4().hex[:6]}.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


class ServiceProcess:
    """``streamscore run`` (or another entry point taking ``-c``) as a real child process; the fault
    scenarios and the integration fixtures share it."""

    def __init__(self, config: Path, log_path: Path, entry: Sequence[str] = ("-m", "streamscore", "run"),
                 env: Mapping[str, str] | None = None, args: Sequence[str] = ()) -> None:
        self.config = config
        self.log_path = log_path
        self.entry = tuple(entry)
        self.env = dict(env or {})
        self.args = tuple(args)
        self.port = int(yaml.safe_load(config.read_text())["metrics"]["port"])
        """The metrics and health port, from the config."""
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> ServiceProcess:
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen([sys.executable, *self.entry, "-c", str(self.config), *self.args],
                                            stdout=log, stderr=subprocess.STDOUT, env={**_child_env(), **self.env})
        return self

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def wait_ready(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.alive():
                raise ScenarioError(f"service exited at start:\n{self.log_tail()}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/readyz", timeout=1) as r:
                    if r.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.1)
        raise ScenarioError(f"service not ready within {timeout:g}s:\n{self.log_tail()}")

    def metrics(self, port_offset: int = 0) -> str:
        """The exposition text of ``/metrics`` (``port_offset`` reaches worker ``n`` of a multi-worker run)."""
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port + port_offset}/metrics", timeout=5) as r:
            return str(r.read().decode())

    def scrape(self) -> dict[str, float]:
        """The service's metrics as name{labels} -> value (empty when it does not answer)."""
        try:
            text = self.metrics()
        except OSError:
            return {}
        return parse_metrics(text)

    def signal(self, signum: int) -> None:
        assert self.process is not None
        self.process.send_signal(signum)

    def wait(self, timeout: float) -> int:
        assert self.process is not None
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            raise ScenarioError(f"service did not exit within {timeout:g}s:\n{self.log_tail()}") from None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log().splitlines()[-lines:])

    def kill(self) -> None:
        if self.alive():
            self.signal(signal.SIGKILL)
            self.wait(10)


def _child_env() -> dict[str, str]:
    """The environment with this checkout importable (test-only entry points live in ``load``)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH", "")) if p)
    return env


class ScenarioError(AssertionError):
    """A scenario could not be carried out (a service did not start, did not stop ...)."""


def parse_metrics(text: str) -> dict[str, float]:
    """Prometheus exposition text as ``name{labels}`` -> value (comments skipped)."""
    pairs = (line.rsplit(" ", 1) for line in text.splitlines() if line and not line.startswith("#"))
    return {name: float(value) for name, value in pairs}


def rss_mb(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


class InputStream:
    """Produces ``events`` synthetic transactions (unique ids) at ``rate`` per second on a thread;
    ``rate`` 0 produces them as fast as the broker takes them."""

    def __init__(self, bootstrap: str, topic: str, events: int, rate: float = 0.0, seed: int = 0) -> None:
        self.pairs = TransactionGenerator(seed=seed, malformed_rate=MALFORMED_RATE).encoded(events)
        self.ids = frozenset(key for key, _ in self.pairs)
        self.bootstrap, self.topic, self.rate = bootstrap, topic, rate
        self.produced = 0
        self.error: str | None = None
        self._thread = threading.Thread(target=self._run, name="input-stream", daemon=True)

    def start(self) -> InputStream:
        self._thread.start()
        return self

    def run(self) -> None:
        """Produce everything now, on this thread."""
        self._run()
        self.check()

    def _run(self) -> None:
        producer = Producer({"bootstrap.servers": self.bootstrap, "linger.ms": 10, "enable.idempotence": True,
                             "message.max.bytes": 4_000_000})
        chunk = max(1, int(self.rate / 20)) if self.rate else 5000
        started = time.monotonic()
        for start in range(0, len(self.pairs), chunk):
            for key, value in self.pairs[start:start + chunk]:
                produce_one(producer, self.topic, value, key)
            producer.poll(0)
            self.produced = min(len(self.pairs), start + chunk)
            if self.rate:
                ahead = started + self.produced / self.rate - time.monotonic()
                if ahead > 0:
                    time.sleep(ahead)
        if producer.flush(300) != 0:
            self.error = "inputs not acknowledged by the broker"

    @property
    def done(self) -> bool:
        return self.produced == len(self.pairs) and not self._thread.is_alive()

    def join(self, timeout: float = 600.0) -> None:
        if self._thread.ident is not None:  # started on its thread (``run`` produces in place)
            self._thread.join(timeout)
        self.check()

    def check(self) -> None:
        if self.error:
            raise ScenarioError(self.error)


@dataclass(frozen=True)
class Accounting:
    """Every input id against the outputs: lost must be 0; duplicates are extra outputs."""

    events: int
    scored: int
    dead_lettered: int
    lost: int
    duplicated: int
    unknown: int
    """Output records whose key is no input id of this scenario (must be 0)."""


@dataclass(frozen=True)
class Output:
    key: bytes | None
    topic: str
    source: tuple[int, int]
    """(partition, offset) of the input it answers."""


def output_reader(bootstrap: str, t: Topics) -> OutputReader:
    """A reader of the score and dead-letter topics from their start (use it as a context manager)."""
    return OutputReader(bootstrap, [t.destination, t.dead_letter])


def outputs_of(records: Iterable[Record], t: Topics) -> list[Output]:
    return [Output(r.key, r.topic, _source(r, t)) for r in records]


def _source(r: Record, t: Topics) -> tuple[int, int]:
    if r.topic == t.dead_letter:
        return int(r.headers["streamscore.source.partition"]), int(r.headers["streamscore.source.offset"])
    source = orjson.loads(r.value or b"{}")["source"]
    return int(source["partition"]), int(source["offset"])


def account(outputs: list[Output], t: Topics, ids: frozenset[bytes]) -> Accounting:
    counts = collections.Counter(o.key for o in outputs)
    seen = {key for key in counts if key in ids}
    return Accounting(
        events=len(ids),
        scored=sum(1 for o in outputs if o.topic == t.destination),
        dead_lettered=sum(1 for o in outputs if o.topic == t.dead_letter),
        lost=len(ids) - len(seen),
        duplicated=sum(counts[key] - 1 for key in seen),
        unknown=sum(n for key, n in counts.items() if key not in ids),
    )


def committed(bootstrap: str, t: Topics) -> dict[int, int]:
    """The group's committed next offset per source partition (negative: nothing committed)."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": t.group, "enable.auto.commit": False})
    try:
        result = consumer.committed([TopicPartition(t.source, p) for p in range(t.partitions)], timeout=10)
    finally:
        consumer.close()
    return {tp.partition: tp.offset for tp in result}


def commits_past_outputs(positions: dict[int, int], outputs: list[Output]) -> dict[int, int]:
    """Partitions whose committed position covers an input offset that has no output, with the
    first such offset: a commit past an unwritten event (must be empty)."""
    written: dict[int, set[int]] = collections.defaultdict(set)
    for o in outputs:
        written[o.source[0]].add(o.source[1])
    gaps = {}
    for partition, position in positions.items():
        done = written[partition]
        first_gap = next((offset for offset in range(max(position, 0)) if offset not in done), None)
        if first_gap is not None:
            gaps[partition] = first_gap
    return gaps
