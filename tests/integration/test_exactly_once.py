"""``delivery: exactly_once`` against a real broker: transactions, aborts, kill -9.

The embedded broker does not honour ``read_committed`` (records of aborted transactions stay
visible) and does not fence a producer whose transactional id a newer one took, so downstream
duplicates and fencing are checked only on Apache Kafka (``STREAMSCORE_TEST_BROKER=kafka``) or a
broker given by ``STREAMSCORE_TEST_BOOTSTRAP``; on Tansu those tests are skipped. What every
broker shows: committed offsets move only with committed transactions, and nothing is lost.
Repeated ``kill -9`` under exactly-once is the fault scenario ``kill9-exactly-once`` (tests/faults).
"""

from __future__ import annotations

import os
import signal
from collections.abc import Callable
from pathlib import Path

import pytest

from load.brokers import broker_kind
from tests.integration.test_service import (
    SLOWER,
    all_done,
    by_engine,
    by_key,
    kill_9_then_restart,
    positions_from,
    valid_events,
)
from tests.support import OutputReader, ServiceProcess, Topics, committed, metric, produce, stop_and_read, wait_for

pytestmark = pytest.mark.integration

HONOURS_READ_COMMITTED = bool(os.environ.get("STREAMSCORE_TEST_BOOTSTRAP")) or broker_kind() == "kafka"
NO_READ_COMMITTED = ("the embedded broker shows aborted records (read_committed is not honoured) and fences "
                     "no producer; run with STREAMSCORE_TEST_BROKER=kafka to check duplicates and fencing")


def exactly_once_config(engine_config: Callable[..., Path], t: Topics, engine: str = "confluent-kafka",
                        **batching: float) -> Path:
    """The Faust engine names its transactional ids itself (one per source partition)."""
    kafka = {"transactional_id": f"tx-{t.group}"} if engine == "confluent-kafka" else {}
    return engine_config(t, engine, delivery="exactly_once", kafka=kafka, batching=batching)


def scored(proc: ServiceProcess) -> float:
    return metric(proc.metrics(), "streamscore_events_scored_total")


def test_clean_run_commits_outputs_and_offsets_in_transactions(
    bootstrap: str, topics: Callable[..., Topics], engine_config: Callable[..., Path],
    service: Callable[..., ServiceProcess], output_reader: Callable[..., OutputReader],
) -> None:
    t = topics()
    inputs = valid_events(10_000, seed=21)
    produce(bootstrap, t.source, inputs)
    proc = service(exactly_once_config(engine_config, t))
    proc.wait_ready()
    wait_for(all_done(proc, len(inputs)), 60, "every input consumed and committed")
    text = proc.metrics()  # the whole run's counts: nothing is left for the drain
    outputs = stop_and_read(output_reader(t), proc)

    assert metric(text, "streamscore_transaction_aborts_total") == 0
    assert metric(text, "streamscore_commits_total") >= 1
    grouped = by_key(outputs)
    assert set(grouped) == {k for k, _, _ in inputs}
    assert all(len(v) == 1 for v in grouped.values()), "no aborts, so one output per input on any broker"
    assert committed(bootstrap, t.group, t.source, t.partitions) == positions_from(outputs, t)


def test_an_open_transaction_killed_commits_nothing_and_is_redone_after_restart(
    bootstrap: str, topics: Callable[..., Topics], engine_config: Callable[..., Path],
    service: Callable[..., ServiceProcess], output_reader: Callable[..., OutputReader],
) -> None:
    t = topics(partitions=2)
    inputs = valid_events(3_000, seed=22)
    produce(bootstrap, t.source, inputs)
    # one long transaction: nothing commits until the window fills or a minute passes
    held = exactly_once_config(engine_config, t, commit_interval_ms=60_000, max_in_flight=100_000)
    first = service(held)
    first.wait_ready()
    wait_for(lambda: scored(first) >= len(inputs), 60, "every input scored inside the open transaction")
    first.signal(signal.SIGKILL)
    first.wait(10)
    assert all(pos < 0 for pos in committed(bootstrap, t.group, t.source, t.partitions).values()), \
        "the killed transaction committed no offsets"

    # same transactional.id: the restart fences the dead producer and aborts its transaction
    second = service(exactly_once_config(engine_config, t))
    second.wait_ready()
    wait_for(lambda: scored(second) >= len(inputs), 60, "the work redone")
    wait_for(lambda: sum(committed(bootstrap, t.group, t.source, t.partitions).values()) == len(inputs), 30,
             "the redone work committed")
    outputs = stop_and_read(output_reader(t), second)
    assert {k for k, _, _ in inputs} <= set(by_key(outputs)), "nothing lost"
    if HONOURS_READ_COMMITTED:
        assert len(outputs) == len(inputs), "the aborted transaction's outputs are invisible"


@pytest.mark.skipif(not HONOURS_READ_COMMITTED, reason=NO_READ_COMMITTED)
@by_engine
def test_read_committed_reader_sees_no_duplicates_after_kill_9(
    engine: str, bootstrap: str, topics: Callable[..., Topics], engine_config: Callable[..., Path],
    service: Callable[..., ServiceProcess], output_reader: Callable[..., OutputReader],
) -> None:
    t = topics()
    inputs = valid_events(20_000 // SLOWER[engine], seed=24)
    produce(bootstrap, t.source, inputs)
    outputs = kill_9_then_restart(t, exactly_once_config(engine_config, t, engine), service, output_reader,
                                  {k for k, _, _ in inputs}, scored_first=8_000 // SLOWER[engine])
    grouped = by_key(outputs)
    assert set(grouped) == {k for k, _, _ in inputs}
    assert all(len(v) == 1 for v in grouped.values()), "exactly one visible output per input"


@pytest.mark.skipif(not HONOURS_READ_COMMITTED, reason=NO_READ_COMMITTED)
def test_a_second_instance_with_the_same_transactional_id_fences_the_first(
    bootstrap: str, topics: Callable[..., Topics], engine_config: Callable[..., Path],
    service: Callable[..., ServiceProcess], output_reader: Callable[..., OutputReader],
) -> None:
    t = topics(partitions=2)
    inputs = valid_events(5_000, seed=25)
    produce(bootstrap, t.source, inputs)
    # the first instance scores everything inside one open transaction, then waits to commit it
    first = service(exactly_once_config(engine_config, t, commit_interval_ms=60_000, max_in_flight=100_000))
    first.wait_ready()
    wait_for(lambda: scored(first) >= len(inputs), 60, "every input scored inside the open transaction")

    # same transactional id and group: its producer fences the first one's, whose transaction is aborted
    second = service(exactly_once_config(engine_config, t))
    code = first.wait(60)
    assert code != 0, f"a fenced instance stops with an error:\n{first.log_tail()}"
    assert "fenced" in first.log().lower(), first.log_tail()
    second.wait_ready()
    wait_for(lambda: sum(committed(bootstrap, t.group, t.source, t.partitions).values()) == len(inputs), 60,
             "the second instance committed every input")
    outputs = stop_and_read(output_reader(t), second)  # read_committed: librdkafka's default isolation
    grouped = by_key(outputs)
    assert set(grouped) == {k for k, _, _ in inputs}, "nothing lost"
    assert all(len(v) == 1 for v in grouped.values()), "the fenced transaction's outputs stay invisible"
