"""``streamscore run --workers 2``: two processes in one group split the partitions."""

from __future__ import annotations

import re
import signal
import socket
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest

from streamscore.broker import free_port
from streamscore.demo.transactions import TransactionGenerator
from tests.support import OutputReader, ServiceProcess, Topics, metric, produce, stop_and_read, wait_for

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
    service: Callable[..., ServiceProcess], output_reader: Callable[..., OutputReader],
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
    reader = output_reader(t)
    reader.read_until(lambda records: len(records) >= len(inputs), 60, f"{len(inputs)} outputs")
    outputs = stop_and_read(reader, proc, timeout=40)
    assert Counter(r.key for r in outputs) == Counter(k for k, _, _ in inputs), "each input exactly once"


def test_a_worker_that_cannot_start_stops_the_others_and_the_parent_exits_non_zero(
    topics: Callable[..., Topics], write_config: Callable[..., Path], service: Callable[..., ServiceProcess],
) -> None:
    t = topics()
    port = free_port_pair()
    with socket.socket() as taken:  # worker 1's metrics port
        taken.bind(("127.0.0.1", port + 1))
        taken.listen()
        proc = service(write_config(t, metrics={"port": port}), args=("--workers", "2"))
        assert proc.wait(60) == 2, proc.log()
    log = proc.log()
    assert f"metrics.port: cannot listen on 127.0.0.1:{port + 1}" in log
    assert "a worker exited with 2: stopping the others" in log
    assert "workers exited with [0, 2]" in log, "worker 0 drained and exited cleanly"


def test_workers_do_not_outlive_a_killed_parent(
    topics: Callable[..., Topics], write_config: Callable[..., Path], service: Callable[..., ServiceProcess],
) -> None:
    t = topics()
    proc = service(write_config(t, metrics={"port": free_port_pair()}), args=("--workers", "2"))
    proc.wait_ready()  # worker 0; worker 1 handles SIGTERM once it serves metrics (handlers come first)
    wait_for(lambda: _serves_metrics(proc, 1), 60, "worker 1 serving metrics")
    started = re.search(r"started 2 workers \(pids (\d+), (\d+)\)", proc.log())
    assert started, proc.log()
    pids = [int(p) for p in started.groups()]
    proc.signal(signal.SIGKILL)
    proc.wait(10)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and any(_running(pid) for pid in pids):
        time.sleep(0.2)
    assert not any(_running(pid) for pid in pids), proc.log()
    assert proc.log().count("SIGTERM received: draining") == 2, "each worker was told to drain"


def _serves_metrics(proc: ServiceProcess, worker: int) -> bool:
    try:
        proc.metrics(worker)
    except OSError:
        return False
    return True


def _running(pid: int) -> bool:
    """Alive and not a zombie (an orphan's exit is reaped by whoever adopted it, maybe never)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False
