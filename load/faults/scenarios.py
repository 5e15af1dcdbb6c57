"""The six fault scenarios of issue 4, each a function ``(env, size) -> Result``.

Every scenario runs ``streamscore run`` as a subprocess against a real broker, feeds it synthetic
transactions with unique ids, injects its fault, and ends with the accounting step: every input id
must appear in the score or dead-letter topic (lost = 0); extra outputs are duplicates, allowed
only within the at-least-once bound (``max_in_flight`` plus one batch per crash or rebalance).
The pytest suite (``tests/faults``) runs them at CI sizes; ``python -m load.faults`` at full size.
"""

from __future__ import annotations

import contextlib
import functools
import os
import random
import re
import signal
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from load.brokers import KafkaBroker, make_broker
from load.faults.harness import (
    InputStream,
    ScenarioError,
    ServiceProcess,
    Topics,
    account,
    commits_past_outputs,
    committed,
    make_topics,
    output_reader,
    outputs_of,
    rss_mb,
    write_config,
)
from load.faults.proxy import BlockingProxy
from load.kafka_io import Record
from load.waiting import wait_for
from streamscore.broker import EmbeddedBroker, free_port

BATCH = 500
WINDOW = 5000
"""``max_batch_size`` and ``max_in_flight`` of every scenario but the slow model's."""
PER_FAULT = WINDOW + BATCH
"""Duplicates one crash or rebalance may cause: the in-flight window plus the batch being scored."""


@dataclass(frozen=True)
class Size:
    events: int
    faults: int
    rate: float = 0.0
    """Input events per second while the faults are injected (0: produce a backlog first)."""


@dataclass
class Result:
    scenario: str
    events: int
    faults: str
    lost: int
    duplicated: int
    duplicate_bound: int
    seconds: float = 0.0
    runs: int = 1
    checks: dict[str, bool] = field(default_factory=dict)
    """Scenario-specific invariants, by what they state."""
    notes: dict[str, Any] = field(default_factory=dict)
    """Observations for the report, asserted nowhere."""

    def failures(self) -> list[str]:
        failed = [name for name, ok in self.checks.items() if not ok]
        if self.lost:
            failed.append(f"{self.lost} events lost")
        if self.duplicated > self.duplicate_bound:
            failed.append(f"{self.duplicated} duplicates exceed the bound of {self.duplicate_bound}")
        return failed


@dataclass
class Env:
    """Where scenarios run: a scratch directory and, optionally, an external broker."""

    workdir: Path
    external: str | None = None
    seed: int = 0
    kind: str | None = None
    """The broker to start, ``tansu`` or ``kafka`` (default: ``STREAMSCORE_TEST_BROKER``, else tansu)."""
    logs: list[Path] = field(default_factory=list)
    processes: list[ServiceProcess] = field(default_factory=list)

    def close(self) -> None:
        """Kill every service process still running (a scenario that failed midway leaves some)."""
        for proc in self.processes:
            proc.kill()

    @contextlib.contextmanager
    def broker(self, own: bool = False, advertised_port: int | None = None,
               ) -> Iterator[tuple[str, EmbeddedBroker | KafkaBroker | None]]:
        """(bootstrap, broker): the external one unless ``own``, else a fresh broker of ``kind``."""
        if self.external and not own:
            yield self.external, None
            return
        advertised = f"127.0.0.1:{advertised_port}" if advertised_port else None
        with make_broker(self.workdir, self.kind, advertised=advertised) as broker:
            yield broker.bootstrap_servers, broker

    def service(self, config: Path, entry: tuple[str, ...] | None = None) -> ServiceProcess:
        log = self.workdir / f"service-{len(self.logs)}.log"
        self.logs.append(log)
        proc = ServiceProcess(config, log, entry) if entry else ServiceProcess(config, log)
        self.processes.append(proc)
        return proc


def _finish(env: Env, bootstrap: str, t: Topics, stream: InputStream, procs: list[ServiceProcess],
            result: Result, timeout: float = 180.0) -> Result:
    """Wait until an output for every input id was written (or no final instance is left to write
    one), stop the final instances with SIGTERM, then read every output and account.

    Every final instance must exit 0, one that had already exited (crashed) included; outputs are
    read to the end only after they all exited, so duplicates written while draining are counted."""
    stream.join()
    with output_reader(bootstrap, t) as reader:
        def all_answered_or_none_left(records: list[Record]) -> bool:
            return stream.ids <= {r.key for r in records} or not any(proc.alive() for proc in procs)

        reader.read_until(all_answered_or_none_left, timeout, "an output for every input id")
        for proc in procs:
            if proc.alive():
                proc.wait_ready()  # a final instance may have nothing left to do, but it must have started
                proc.signal(signal.SIGTERM)
        codes = [proc.wait(60) for proc in procs]
        outputs = outputs_of(reader.read_to_end(), t)
    result.checks["final SIGTERM exits 0"] = all(code == 0 for code in codes)
    result.notes["final exit codes"] = codes
    acc = account(outputs, t, stream.ids)
    result.lost, result.duplicated = acc.lost, acc.duplicated
    result.checks["no output for an unknown id"] = acc.unknown == 0
    result.notes.update(scored=acc.scored, dead_lettered=acc.dead_lettered)
    return result


REVOKED = "streamscore.pipeline: revoked "
LOST = "streamscore.pipeline: lost "
"""Log lines of the pipeline's rebalance callbacks."""


def _consumed_at_least(proc: ServiceProcess, events: float) -> Callable[[], bool]:
    """A condition: ``proc`` has consumed at least ``events`` events."""
    return lambda: proc.scrape().get("streamscore_events_consumed_total", 0) >= events


def _wait_consuming(proc: ServiceProcess, timeout: float = 60.0) -> None:
    """Until the process owns partitions and has scored something: a fault before that hits nothing."""
    wait_for(_consumed_at_least(proc, 1), timeout, "consumption")


def _log_count(procs: list[ServiceProcess], needle: str) -> int:
    return sum(proc.log().count(needle) for proc in procs)


def kill_and_restart(env: Env, config: Path, stream: InputStream, faults: int, rng: random.Random,
                     ) -> tuple[list[tuple[dict[str, float], bool]], ServiceProcess]:
    """``faults`` times: start an instance, wait until it scores, let it run 0 to 2 s, scrape it and
    ``kill -9`` it; then start the final instance. Returns each kill's scrape with whether inputs
    were still arriving then, and the final instance."""
    kills: list[tuple[dict[str, float], bool]] = []
    for _ in range(faults):
        proc = env.service(config).start()
        proc.wait_ready()
        _wait_consuming(proc)
        time.sleep(rng.uniform(0.0, 2.0))
        kills.append((proc.scrape(), not stream.done))
        proc.kill()
    return kills, env.service(config).start()


# -- 1. kill -9 ------------------------------------------------------------------------------------

def kill9(env: Env, size: Size, delivery: str = "at_least_once") -> Result:
    """``kill -9`` at random moments while the stream flows, restarting each time.

    Under ``exactly_once`` each restart reuses the transactional id, fencing the killed producer
    and aborting its open transaction; the embedded broker still shows the aborted records, so
    duplicates are counted against the same bound there. On Apache Kafka the reader
    (read_committed) must see none: the bound is 0.
    """
    rng = random.Random(env.seed)
    with env.broker() as (bootstrap, broker):
        t = make_topics(bootstrap)
        config = write_config(env.workdir, bootstrap, t, delivery=delivery,
                              kafka={"transactional_id": f"faults-{t.group}"})
        stream = InputStream(bootstrap, t.source, size.events, size.rate, env.seed).start()
        kills, final = kill_and_restart(env, config, stream, size.faults, rng)
        mid_stream = sum(flowing or m.get("streamscore_uncommitted_events", 0.0) > 0 for m, flowing in kills)
        with_uncommitted = sum(m.get("streamscore_uncommitted_events", 0.0) > 0 for m, _ in kills)
        title = "kill -9 and restart" + (" (exactly-once)" if delivery == "exactly_once" else "")
        exactly_once_on_kafka = delivery == "exactly_once" and isinstance(broker, KafkaBroker)
        result = Result(title, size.events, f"{size.faults} × kill -9", 0, 0,
                        0 if exactly_once_on_kafka else size.faults * PER_FAULT)
        result.checks["every kill hit unfinished work (inputs arriving or uncommitted)"] = mid_stream == size.faults
        result.notes["kills with uncommitted events"] = with_uncommitted
        return _finish(env, bootstrap, t, stream, [final], result)


# -- 2. broker frozen ------------------------------------------------------------------------------

def broker_freeze(env: Env, size: Size, freeze_seconds: float = 10.0) -> Result:
    """SIGSTOP the broker for ``freeze_seconds`` mid-stream, then SIGCONT; the service must ride it out."""
    with env.broker(own=True) as (bootstrap, broker):
        assert broker is not None and broker.pid is not None
        t = make_topics(bootstrap)
        proc = env.service(write_config(env.workdir, bootstrap, t)).start()
        proc.wait_ready()
        stream = InputStream(bootstrap, t.source, size.events, size.rate, env.seed).start()
        alive_after: list[bool] = []
        for i in range(size.faults):
            target = size.events * (i + 1) // (size.faults + 2)
            wait_for(_consumed_at_least(proc, target), 120, "scoring")
            os.kill(broker.pid, signal.SIGSTOP)
            try:
                time.sleep(freeze_seconds)
            finally:
                os.kill(broker.pid, signal.SIGCONT)
            time.sleep(1.0)
            alive_after.append(proc.alive())
        result = Result("broker frozen (SIGSTOP/SIGCONT)", size.events,
                        f"{size.faults} × broker SIGSTOP {freeze_seconds:g} s", 0, 0, size.faults * PER_FAULT)
        result.checks["service alive after every freeze (no restart)"] = all(alive_after)
        result = _finish(env, bootstrap, t, stream, [proc], result)
        result.notes.update(lost_partitions_logged=_log_count([proc], LOST),
                            revocations_logged=_log_count([proc], REVOKED))
        return result


# -- 3. rebalance storm ----------------------------------------------------------------------------

def rebalance_storm(env: Env, size: Size, interval: float = 3.0) -> Result:
    """Three instances in one group; every ``interval`` seconds one leaves (SIGTERM) or joins.

    On the embedded broker a leave waits until the group has settled (every partition owned, every
    member owning some): it wedges a group for good when the member it elected leader leaves
    before the assignment is synced. On another broker (Apache Kafka elects a new leader) leaves,
    like joins, land at any moment.
    """
    rng = random.Random(env.seed)
    with env.broker() as (bootstrap, broker):
        t = make_topics(bootstrap, partitions=6)
        configs = [write_config(env.workdir, bootstrap, t) for _ in range(3)]
        slots: dict[int, ServiceProcess] = {i: env.service(c).start() for i, c in enumerate(configs)}
        everyone = list(slots.values())
        for proc in everyone:
            proc.wait_ready()
        stream = InputStream(bootstrap, t.source, size.events, size.rate, env.seed).start()
        leave_codes: list[int] = []
        for change in range(size.faults):
            time.sleep(interval)
            if change % 2 == 0:  # leave
                if isinstance(broker, EmbeddedBroker):
                    _wait_settled(list(slots.values()), t.partitions)
                slot = rng.choice(sorted(slots))
                leaving = slots.pop(slot)
                leaving.signal(signal.SIGTERM)
                leave_codes.append(leaving.wait(60))
            else:  # join where one left
                slot = next(i for i in range(3) if i not in slots)
                slots[slot] = env.service(configs[slot]).start()
                everyone.append(slots[slot])
                slots[slot].wait_ready()
        result = Result("rebalance storm (3 instances)", size.events,
                        f"{size.faults} membership changes, one every {interval:g} s", 0, 0, size.faults * PER_FAULT)
        result.checks["every leaving instance drains and exits 0"] = all(code == 0 for code in leave_codes)
        result = _finish(env, bootstrap, t, stream, list(slots.values()), result)
        result.notes.update(revocations_logged=_log_count(everyone, REVOKED),
                            lost_partitions_logged=_log_count(everyone, LOST))
        return result


def _wait_settled(procs: list[ServiceProcess], partitions: int, timeout: float = 60.0) -> None:
    def settled() -> bool:
        owned = [p.scrape().get("streamscore_assigned_partitions", 0) for p in procs]
        return sum(owned) == partitions and all(owned)
    wait_for(settled, timeout, f"the group to settle ({partitions} partitions over {len(procs)} members)")


# -- 4. destination not writable -------------------------------------------------------------------

def unwritable_destination(env: Env, size: Size, message_timeout: float = 5.0) -> Result:
    """The service's producer is cut off (its requests never answered) mid-stream. Today's
    behaviour, asserted: it exits 1 once ``message.timeout.ms`` fails an output, with no commit
    past an unwritten event; a restart after writes work again loses nothing."""
    proxy_port = free_port()
    with env.broker(own=True, advertised_port=proxy_port) as (_, broker):
        assert broker is not None
        proxy = BlockingProxy(broker.port, proxy_port).start()
        try:
            return _unwritable(env, size, f"127.0.0.1:{proxy_port}", proxy, message_timeout)
        finally:
            proxy.stop()


def _unwritable(env: Env, size: Size, bootstrap: str, proxy: BlockingProxy, message_timeout: float) -> Result:
    t = make_topics(bootstrap)
    sink_id = f"streamscore-sink-{uuid.uuid4().hex[:6]}"
    config = write_config(env.workdir, bootstrap, t, kafka={"producer": {
        "client.id": sink_id, "message.timeout.ms": int(message_timeout * 1000)}})
    stream = InputStream(bootstrap, t.source, size.events, size.rate, env.seed).start()
    codes, gaps, unwritten = [], 0, 0
    for _ in range(size.faults):
        proc = env.service(config).start()
        proc.wait_ready()
        base = proc.scrape().get("streamscore_events_consumed_total", 0)
        wait_for(_consumed_at_least(proc, base + 2 * BATCH), 120, "scoring before the fault")
        proxy.block(sink_id)
        try:
            codes.append(proc.wait(message_timeout + 60))
            positions = committed(bootstrap, t)
        finally:
            proxy.unblock(sink_id)
        with output_reader(bootstrap, t) as reader:  # every instance so far has exited
            outputs = outputs_of(reader.read_to_end(), t)
        gaps += len(commits_past_outputs(positions, outputs))
        unwritten = max(unwritten, stream.produced - len({o.source for o in outputs}))
    final = env.service(config).start()
    result = Result("destination not writable", size.events,
                    f"{size.faults} × sink cut off (message.timeout {message_timeout:g} s)", 0, 0,
                    size.faults * PER_FAULT)
    result.checks["exits non-zero (1) when an output fails"] = all(code == 1 for code in codes)
    result.checks["no commit past an unwritten event"] = gaps == 0
    result.checks["the fault left events unwritten"] = unwritten > 0
    result.notes["behaviour"] = "exits 1; restart resumes from the last commit"
    return _finish(env, bootstrap, t, stream, [final], result)


# -- 5. slow model ---------------------------------------------------------------------------------

SLOW_BATCH = 200
MAX_POLL_INTERVAL = 10.0


def slow_model(env: Env, size: Size, delay: float = 0.3) -> Result:
    """Every model call takes ``delay`` s longer, for longer in total than max.poll.interval: the
    consumer must stay in its group, memory stay bounded, and the in-flight window pause reading."""
    with env.broker() as (bootstrap, _):
        t = make_topics(bootstrap)
        stream = InputStream(bootstrap, t.source, size.events, 0.0, env.seed)
        stream.run()
        config = write_config(
            env.workdir, bootstrap, t,
            batching={"max_batch_size": SLOW_BATCH, "max_in_flight": SLOW_BATCH, "max_wait_ms": 10},
            kafka={"consumer": {"fetch.wait.max.ms": 10, "max.poll.interval.ms": int(MAX_POLL_INTERVAL * 1000)}},
        )
        proc = env.service(config, ("-m", "load.faults.slow_service", "--delay", str(delay))).start()
        proc.wait_ready()
        samples = _sample_until_drained(proc, size.events)
        log_before_stop = proc.log()
        result = Result("slow model", size.events, f"+{delay:g} s per batch of {SLOW_BATCH}", 0, 0, 0)
        slow_for = samples[-1]["t"] - next(s["t"] for s in samples if s["consumed"] > 0)
        assigned = {s["assigned"] for s in samples if s["consumed"] > 0}
        rss = max(s["rss"] for s in samples)
        slow_enough = slow_for > MAX_POLL_INTERVAL
        result.checks[f"slow for longer than max.poll.interval ({MAX_POLL_INTERVAL:g} s)"] = slow_enough
        result.checks["partitions paused when the window was full"] = "partitions paused" in log_before_stop
        result.checks["never revoked or lost (stayed in the group)"] = not any(
            w in log_before_stop for w in (REVOKED, LOST, "maximum poll interval"))
        result.checks["assigned partitions constant"] = assigned == {float(t.partitions)}
        result.checks["RSS below 700 MB"] = rss < 700
        result.notes.update(slow_seconds=round(slow_for, 1), rss_mb_max=round(rss, 1),
                            pauses_logged=log_before_stop.count("partitions paused"))
        return _finish(env, bootstrap, t, stream, [proc], result)


def _sample_until_drained(proc: ServiceProcess, events: int, timeout: float = 900.0) -> list[dict[str, Any]]:
    samples: list[dict[str, Any]] = []
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if not proc.alive():
            raise ScenarioError(f"slow service exited:\n{proc.log_tail()}")
        values = proc.scrape()
        consumed = values.get("streamscore_events_consumed_total", 0.0)
        samples.append({"t": time.monotonic() - started, "consumed": consumed, "rss": rss_mb(proc.pid),
                        "assigned": values.get("streamscore_assigned_partitions")})
        if consumed >= events and values.get("streamscore_uncommitted_events", 1) == 0:
            return samples
        time.sleep(0.5)
    raise ScenarioError(f"slow service did not drain {events} events within {timeout:g}s")


# -- 6. SIGTERM under load -------------------------------------------------------------------------

DRAIN_TIMEOUT = 20.0
EXIT_GRACE = 15.0
"""Allowed on top of the drain bound for closing the consumer and the process exit."""


def sigterm_under_load(env: Env, size: Size) -> Result:
    """SIGTERM while a backlog is being scored: drain, commit, exit 0 within the drain bound; the
    restarts then redo nothing (no duplicates) and lose nothing."""
    rng = random.Random(env.seed)
    with env.broker() as (bootstrap, _):
        t = make_topics(bootstrap)
        stream = InputStream(bootstrap, t.source, size.events, 0.0, env.seed)
        stream.run()
        config = write_config(env.workdir, bootstrap, t, batching={"drain_timeout_s": DRAIN_TIMEOUT})
        codes, stop_seconds, backlog_left = [], [], []
        done_before = 0.0
        for _ in range(size.faults):
            proc = env.service(config).start()
            proc.wait_ready()
            _wait_consuming(proc)
            time.sleep(rng.uniform(0.0, 0.5))
            consumed = proc.scrape().get("streamscore_events_consumed_total", 0.0)
            backlog_left.append(int(size.events - done_before - consumed))
            started = time.monotonic()
            proc.signal(signal.SIGTERM)
            codes.append(proc.wait(DRAIN_TIMEOUT + 60))
            stop_seconds.append(time.monotonic() - started)
            done_before += float(_stopped_totals(proc).get("consumed", 0))
        final = env.service(config).start()
        result = Result("SIGTERM under load", size.events, f"{size.faults} × SIGTERM", 0, 0, 0)
        result.checks["every SIGTERM exits 0"] = all(code == 0 for code in codes)
        result.checks[f"exits within drain_timeout_s ({DRAIN_TIMEOUT:g} s) + {EXIT_GRACE:g} s"] = \
            max(stop_seconds) <= DRAIN_TIMEOUT + EXIT_GRACE
        result.checks["every SIGTERM while a backlog remained"] = min(backlog_left) > 0
        result.notes.update(stop_seconds_max=round(max(stop_seconds), 1), backlog_at_sigterm=backlog_left)
        return _finish(env, bootstrap, t, stream, [final], result)


def _stopped_totals(proc: ServiceProcess) -> dict[str, int]:
    """The counts of the service's last log line ("stopped: consumed N, scored N, dead-lettered N")."""
    match = re.search(r"stopped: consumed (\d+), scored (\d+), dead-lettered (\d+)", proc.log())
    return dict(zip(("consumed", "scored", "dead_lettered"), map(int, match.groups()), strict=True)) if match else {}


@dataclass(frozen=True)
class Scenario:
    run: Callable[[Env, Size], Result]
    ci: Size
    full: Size
    brokers: tuple[str, ...] = ("tansu", "kafka")
    """The brokers it can run on (the broker-crash scenarios need Apache Kafka's disk storage)."""
    why_brokers: str = ""
    """Why it runs on only some brokers, when that is not the broker-crash reason."""


SCENARIOS: dict[str, Scenario] = {
    # a restart after kill -9 waits out the dead member's session (6 s) before it is assigned
    # anything: ~13 s per kill, so the input rate stretches the stream over every kill
    # CI sizes stream for 40 s: both kills must land while inputs arrive, also when each restart
    # spends seconds joining the group and, under exactly-once, initialising its transactions
    "kill9": Scenario(kill9, Size(8_000, 2, 200), Size(200_000, 10, 1_200)),
    "kill9-exactly-once": Scenario(functools.partial(kill9, delivery="exactly_once"),
                                   Size(8_000, 2, 200), Size(200_000, 10, 1_200)),
    "broker-freeze": Scenario(broker_freeze, Size(12_000, 1, 1_000), Size(200_000, 1, 5_000)),
    "rebalance-storm": Scenario(rebalance_storm, Size(12_000, 4, 1_000), Size(200_000, 20, 2_000)),
    "unwritable-destination": Scenario(unwritable_destination, Size(8_000, 1, 1_000), Size(200_000, 3, 5_000)),
    "slow-model": Scenario(slow_model, Size(3_000, 1), Size(20_000, 1)),
    "sigterm-under-load": Scenario(sigterm_under_load, Size(30_000, 2), Size(200_000, 5)),
}
"""Name -> scenario with its CI size (pytest) and its full size (``python -m load.faults``)."""
