"""The brokers the test suite and the load tools start: Tansu (embedded, in memory) or Apache Kafka.

``STREAMSCORE_TEST_BROKER`` chooses (``tansu``, the default, or ``kafka``). Apache Kafka runs
through ``scripts/kafka.sh`` (one KRaft node on 127.0.0.1, data and logs on disk); its jars come
from ``scripts/kafka.sh fetch``. ``KafkaBroker`` has the shape of ``streamscore.broker.EmbeddedBroker``
(``start()``, ``stop()``, a context manager, ``bootstrap_servers``, ``port``, ``pid``).
"""

from __future__ import annotations

import atexit
import os
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import Self

from streamscore.broker import EmbeddedBroker, free_port

REPO = Path(__file__).resolve().parents[1]
KAFKA_SH = REPO / "scripts" / "kafka.sh"
KINDS = ("tansu", "kafka")


class BrokerStartError(RuntimeError):
    """``scripts/kafka.sh start`` failed; the message carries its output (the broker log's tail)."""


class KafkaBroker:
    """One Apache Kafka node (broker and controller) on 127.0.0.1:``port``, data and logs in ``data``.

    ``stop()`` then ``start()`` on the same object restarts it on the same data and port (the
    broker-crash scenarios); ``kill()`` is kill -9.
    """

    def __init__(self, data: Path | None = None, port: int | None = None, advertised: str | None = None,
                 start_timeout: float = 120.0) -> None:
        self.data = data or Path(tempfile.mkdtemp(prefix="streamscore-kafka-"))
        self.port = port or free_port()
        self.advertised = advertised
        self.start_timeout = start_timeout
        self._pid: int | None = None
        atexit.register(self.stop)

    @property
    def bootstrap_servers(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def pid(self) -> int | None:
        return self._pid

    @property
    def log_file(self) -> Path:
        return self.data / "broker.log"

    def start(self) -> Self:
        command = [str(KAFKA_SH), "start", "--port", str(self.port), "--data", str(self.data),
                   "--timeout", f"{self.start_timeout:g}", "--watch", str(os.getpid())]
        if self.advertised:
            command += ["--advertised", self.advertised]
        done = subprocess.run(command, capture_output=True, text=True, timeout=self.start_timeout + 60, check=False)
        if done.returncode != 0:
            raise BrokerStartError(f"{' '.join(command)} exited {done.returncode}:\n{done.stderr}{done.stdout}")
        fields = dict(line.split("=", 1) for line in done.stdout.splitlines() if "=" in line)
        self._pid = int(fields["pid"])
        return self

    def stop(self, timeout: float = 30.0) -> None:
        """SIGTERM (a controlled shutdown), SIGKILL after ``timeout``; waits until it is gone."""
        pid, self._pid = self._pid, None
        if pid is not None:
            _end(pid, signal.SIGTERM, timeout)

    def kill(self) -> None:
        """kill -9, and wait until it is gone; ``start()`` restarts it on the same data."""
        pid, self._pid = self._pid, None
        if pid is not None:
            _end(pid, signal.SIGKILL, 10.0)

    def __enter__(self) -> Self:
        return self.start() if self._pid is None else self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _end(pid: int, signum: int, timeout: float) -> None:
    try:
        os.kill(pid, signum)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout
    while _alive(pid):
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            deadline = time.monotonic() + 10.0
        time.sleep(0.1)


def broker_kind() -> str:
    kind = os.environ.get("STREAMSCORE_TEST_BROKER", "tansu") or "tansu"
    if kind not in KINDS:
        raise ValueError(f"STREAMSCORE_TEST_BROKER={kind!r}: expected one of {', '.join(KINDS)}")
    return kind


def make_broker(workdir: Path, kind: str | None = None, advertised: str | None = None) -> EmbeddedBroker | KafkaBroker:
    """A broker of ``kind`` (default: ``STREAMSCORE_TEST_BROKER``) with its log (and data) under
    ``workdir``; not started."""
    kind = kind or broker_kind()
    workdir.mkdir(parents=True, exist_ok=True)
    if kind == "kafka":
        return KafkaBroker(data=Path(tempfile.mkdtemp(prefix="kafka-", dir=workdir)), advertised=advertised)
    fd, log = tempfile.mkstemp(prefix="tansu-", suffix=".log", dir=workdir)
    os.close(fd)
    return EmbeddedBroker(log_file=Path(log), advertised=advertised)
