"""``streamscore run --workers 2``: two processes in one group split the partitions."""

from __future__ import annotations

import signal
import socket
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from streamscore.broker import free_port
from streamscore.demo.transactions import TransactionGenerator
from tests.integration.conftest import ServiceProcess, Topics
from tests.integration.kafka_helpers import consume, produce
from tests.integration.test_service import metric

pytestmark = pytest.mark.integration


def free_port_pair() -> int:
    """A port free together with the next one: worker n serves metrics on the base port + n."""
    while True:
        port = free_port()
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port + 1))
            except OSError:
                continue
        return port


def test_two_workers_share_the_partitions_and_write_each_output_once(
    bootstrap: str, topics: Callable[..., Topics], write_config: Callable[..., Path],
    service: Callable[..., ServiceProcess],
) -> None:
    t = topics()
    proc = service(write_config(t, metrics={"port": free_port_pair()}), args=("--workers", "2"))
    proc.wait_ready()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            parts = [metric(proc.metrics(i), "streamscore_assigned_partitions") for i in (0, 1)]
        except OSError:
            parts = [0.0, 0.0]
        if sum(parts) == 4 and min(parts) > 0:
            break
        time.sleep(0.2)
    assert sum(parts) == 4 and min(parts) > 0, f"{parts}\n{proc.log()[-6000:]}"

    inputs = [(k, v, None) for k, v in TransactionGenerator(seed=31).encoded(10_000)]
    produce(bootstrap, t.source, inputs)
    outputs = consume(bootstrap, [t.destination, t.dead_letter], expected=len(inputs))
    proc.signal(signal.SIGTERM)
    assert proc.wait(40) == 0, proc.log()
    assert sorted(r.key for r in outputs) == sorted(k for k, _, _ in inputs), "each input exactly once"
