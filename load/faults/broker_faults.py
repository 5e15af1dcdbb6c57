"""The fault scenarios only a broker with disk storage allows (issue 10): Apache Kafka only.

Each runs ``streamscore run`` against its own Apache Kafka node (``scripts/kafka.sh``) and ends in
the same accounting as ``scenarios``: every input id maps to its outputs, lost = 0, duplicates
within the at-least-once bound.

- ``broker_kill9``: the broker is killed with -9 mid-stream and restarted on the same data.
- ``destination_deleted``: the score topic is deleted mid-stream; the service must stop with one
  line naming the topic and commit nothing past its last acknowledged output.
- ``oversize_output``: one output is larger than the score topic's ``max.message.bytes``; its input
  must be dead-lettered (``output_too_large``) with no exit, on either engine (``oversize-output-faust``
  runs it under ``engine: faust``); ``oversize_output_exactly_once``: the same under ``delivery:
  exactly_once``, where it must stop with one line instead (``-faust``: under ``engine: faust``).

The broker SIGSTOP longer than the session timeout is ``scenarios.broker_freeze``, which runs on
Apache Kafka as it does on Tansu.
"""

from __future__ import annotations

import base64
import functools
import random
import re
import signal
import time
import uuid
from collections.abc import Callable
from typing import Any

import orjson
from confluent_kafka import KafkaException
from confluent_kafka.admin import (  # type: ignore[attr-defined]
    AdminClient,
    AlterConfigOpType,
    ConfigEntry,
    ConfigResource,
)

from load.brokers import KafkaBroker
from load.faults.harness import (
    InputStream,
    Output,
    ServiceProcess,
    Topics,
    account,
    commits_past_outputs,
    committed,
    make_topics,
    output_reader,
    outputs_of,
    write_config,
)
from load.faults.scenarios import PER_FAULT, Env, Result, Scenario, Size, _finish
from load.kafka_io import OutputReader, Record
from load.waiting import wait_for
from streamscore.engines.kafka_admin import create_topics

ERROR_LINE = re.compile(r"^streamscore: error: .*$", re.MULTILINE)
"""The one line the CLI prints when the service stops on an error."""


def _consumed(proc: ServiceProcess) -> float:
    return proc.scrape().get("streamscore_events_consumed_total", 0.0)


def _flowing(stream: InputStream, produced: int, proc: ServiceProcess) -> Callable[[], bool]:
    """A condition: ``produced`` inputs were handed to the producer and ``proc`` has consumed some."""
    return lambda: stream.produced >= produced and _consumed(proc) > 0


def _error_line(proc: ServiceProcess) -> str:
    lines = ERROR_LINE.findall(proc.log())
    return lines[-1] if lines else ""


def _split(stream: InputStream, at: int) -> InputStream:
    """Cut ``stream`` after its first ``at`` inputs; the rest become a second stream (not started)."""
    tail = InputStream(stream.bootstrap, stream.topic, 0, stream.rate)
    tail.pairs, stream.pairs = stream.pairs[at:], stream.pairs[:at]
    tail.ids, stream.ids = frozenset(k for k, _ in tail.pairs), frozenset(k for k, _ in stream.pairs)
    return tail


def _set_topic_config(bootstrap: str, topic: str, key: str, value: str) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    entry = ConfigEntry(key, value, incremental_operation=AlterConfigOpType.SET)
    resource = ConfigResource("topic", topic, incremental_configs=[entry])
    for future in admin.incremental_alter_configs([resource]).values():
        future.result(15)


# -- a. broker kill -9 and restart -----------------------------------------------------------------

RESUME_TIMEOUT = 360.0
"""Seconds the service has to commit again after the broker is back, or to exit: outputs stuck in
the producer fail after ``message.timeout.ms`` (300 s by default), and then the service exits 1."""


def broker_kill9(env: Env, size: Size, down: float = 2.0) -> Result:
    """kill -9 the broker mid-stream, restart it ``down`` s later on the same data and port. The
    service either rides it out (commits again once the broker is back) or exits non-zero, and
    then its restart resumes from the last commit."""
    with env.broker(own=True) as (bootstrap, broker):
        assert isinstance(broker, KafkaBroker)
        t = make_topics(bootstrap)
        config = write_config(env.workdir, bootstrap, t)
        proc = env.service(config).start()
        proc.wait_ready()
        stream = InputStream(bootstrap, t.source, size.events, size.rate, env.seed).start()
        procs, exit_codes, rode_out, mid_stream = [proc], [], 0, 0
        outage: list[float] = []
        resumed_after: list[float] = []
        for i in range(size.faults):
            target = size.events * (i + 1) // (size.faults + 2)
            wait_for(_flowing(stream, target, procs[-1]), 300, "the stream to flow")
            before = _committed_total(bootstrap, t)
            mid_stream += int(not stream.done)
            killed = time.monotonic()
            broker.kill()
            time.sleep(down)
            broker.start()
            back = time.monotonic()
            outage.append(round(back - killed, 1))
            wait_for(_resumed(procs[-1], bootstrap, t, before, size.events), RESUME_TIMEOUT,
                     "the service to commit again or exit after the broker restart", interval=1.0)
            resumed_after.append(round(time.monotonic() - back, 1))
            if procs[-1].alive():
                rode_out += 1
                continue
            exit_codes.append(procs[-1].wait(10))
            procs.append(env.service(config).start())
            procs[-1].wait_ready()
        result = Result("broker kill -9 and restart", size.events,
                        f"{size.faults} × broker kill -9, restarted after {down:g} s", 0, 0, size.faults * PER_FAULT)
        result.checks["every kill hit a flowing stream"] = mid_stream == size.faults
        result.checks["rode it out, or exited non-zero and the restart resumed"] = all(c != 0 for c in exit_codes)
        result.notes.update(rode_out=rode_out, exit_codes=exit_codes, broker_outage_seconds=outage,
                            seconds_to_first_commit_or_exit_after_restart=resumed_after)
        return _finish(env, bootstrap, t, stream, procs[-1:], result)


def _committed_total(bootstrap: str, t: Topics) -> int:
    """Events the group has committed, over all source partitions (-1 while the broker does not answer)."""
    try:
        return sum(max(0, position) for position in committed(bootstrap, t).values())
    except KafkaException:
        return -1


def _resumed(proc: ServiceProcess, bootstrap: str, t: Topics, before: int, events: int) -> Callable[[], bool]:
    """A condition: ``proc`` exited, or the group committed past ``before`` (or everything): a
    commit needs the broker to have acknowledged outputs and accepted the offsets."""
    def resumed() -> bool:
        total = _committed_total(bootstrap, t)
        return not proc.alive() or total > before or total >= events
    return resumed


# -- c. destination topic deleted ------------------------------------------------------------------

def destination_deleted(env: Env, size: Size, message_timeout: float = 10.0) -> Result:
    """The first half of the stream is scored and read back; the score topic is deleted; the
    second half arrives. The service must exit non-zero with one line naming the topic and commit
    nothing past an unwritten event; once the topic is created again, a restart loses nothing.

    The service's producer does not ask the broker to create topics (``allow.auto.create.topics:
    false``, as ``auto.create.topics.enable=false`` does on a production broker): otherwise its
    next metadata request re-creates the topic with the broker's defaults (1 partition here).
    ``message.timeout.ms`` is ``message_timeout``: librdkafka retries writes to an unknown topic
    until then (300 s by default).
    """
    with env.broker(own=True) as (bootstrap, broker):
        assert isinstance(broker, KafkaBroker)
        t = make_topics(bootstrap)
        config = write_config(env.workdir, bootstrap, t, kafka={"producer": {
            "message.timeout.ms": int(message_timeout * 1000), "allow.auto.create.topics": False}})
        head = InputStream(bootstrap, t.source, size.events, size.rate, env.seed)
        everything = head.ids
        tail = _split(head, size.events // 2)
        proc = env.service(config).start()
        proc.wait_ready()
        head.start().join()
        with output_reader(bootstrap, t) as reader:
            reader.read_until(_answers(head.ids), 180, "an output for every input of the first half")
            scores = [o for o in outputs_of(reader.records, t) if o.topic == t.destination]
        _delete_topic(bootstrap, t.destination)
        tail.start()
        code = proc.wait(message_timeout + 120)
        positions = committed(bootstrap, t)
        with OutputReader(bootstrap, [t.dead_letter]) as letters_reader:  # its only writer has exited
            letters = outputs_of(letters_reader.read_to_end(), t)
        error = _error_line(proc)
        create_topics(bootstrap, {t.destination: t.partitions})  # the operator puts it back
        final = env.service(config).start()
        tail.join()
        result = Result("destination topic deleted", size.events, "score topic deleted mid-stream", 0, 0, PER_FAULT)
        result.checks["exits non-zero"] = code != 0
        result.checks["one error line naming the topic"] = t.destination in error
        result.checks["no commit past an unwritten event"] = not commits_past_outputs(positions, scores + letters)
        result.checks["the first half was written before the deletion"] = \
            head.ids <= {o.key for o in scores + letters}
        result.notes.update(exit_code=code, error=error)
        return _account_final(bootstrap, t, everything, tail.ids, scores, final, result)


def _delete_topic(bootstrap: str, topic: str) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    for future in admin.delete_topics([topic], request_timeout=15).values():
        future.result(30)
    wait_for(lambda: topic not in admin.list_topics(timeout=5).topics, 30, f"{topic} to disappear")


def _answers(ids: frozenset[bytes]) -> Callable[[list[Record]], bool]:
    return lambda records: ids <= {r.key for r in records}


def _account_final(bootstrap: str, t: Topics, ids: frozenset[bytes], rest: frozenset[bytes],
                   deleted: list[Output], final: ServiceProcess, result: Result) -> Result:
    """Wait for an output of every id in ``rest`` (or the final instance's exit), SIGTERM it (it
    must exit 0), read the topics to the end and account them plus the ``deleted`` score records
    against every input id."""
    with output_reader(bootstrap, t) as reader:
        reader.read_until(lambda records: rest <= {r.key for r in records} or not final.alive(), 180,
                          "an output for every input of the second half")
        if final.alive():
            final.wait_ready()  # as in scenarios._finish: it must have started before it is stopped
            final.signal(signal.SIGTERM)
        code = final.wait(60)
        outputs = deleted + outputs_of(reader.read_to_end(), t)
    result.checks["final SIGTERM exits 0"] = code == 0
    acc = account(outputs, t, ids)
    result.lost, result.duplicated = acc.lost, acc.duplicated
    result.checks["no output for an unknown id"] = acc.unknown == 0
    result.notes.update(scored=acc.scored, dead_lettered=acc.dead_lettered)
    return result


# -- d. an output over max.message.bytes -----------------------------------------------------------

TOPIC_LIMIT = 256 * 1024
"""The score topic's ``max.message.bytes`` in the oversize scenario (Kafka's default is 1 MiB)."""
MEMO_BYTES = 450_000
"""Random bytes in the large field (base64: 600 kB), under ``batching.max_message_bytes`` (1 MB)
as an input, over ``TOPIC_LIMIT`` as an output even after lz4."""


def oversize_output(env: Env, size: Size, engine: str = "confluent-kafka") -> Result:
    """One event carries a large field that ``output.copy_fields`` copies into its score record,
    over the score topic's ``max.message.bytes``. It must be dead-lettered (``output_too_large``,
    the detail naming the topic and the size) while the service runs on: no exit, no restart, every
    other event scored. (Before the fix the service exited 1 here, and every restart again at the
    same event: a poison pill; so did the Faust engine.) Should it exit anyway, the scenario raises
    the topic's limit and restarts it, so that the accounting still runs."""
    with env.broker(own=True) as (bootstrap, broker):
        assert isinstance(broker, KafkaBroker)
        t = make_topics(bootstrap)
        _set_topic_config(bootstrap, t.destination, "max.message.bytes", str(TOPIC_LIMIT))
        config = write_config(env.workdir, bootstrap, t, output={
            "copy_fields": ["transaction_id", "card.id", "amount", "memo"]}, **_engine(env, engine))
        stream = InputStream(bootstrap, t.source, size.events, size.rate, env.seed)
        poison = _plant_large_field(stream, random.Random(env.seed))
        proc = env.service(config).start()
        proc.wait_ready()
        stream.start()
        outcome, found = _first_of(bootstrap, t, proc, poison)
        codes: list[int] = []
        if outcome == "exit":  # the old behaviour: the operator's fix, then a restart
            codes.append(proc.wait(10))
            _set_topic_config(bootstrap, t.destination, "max.message.bytes", "4000000")
            proc = env.service(config).start()
        counted = proc.scrape().get('streamscore_events_dead_lettered_total{reason="output_too_large"}', 0.0)
        headers = found.headers if found is not None else {}
        detail = headers.get("streamscore.detail", b"").decode()
        result = Result("output over max.message.bytes" + (", engine faust" if engine == "faust" else ""), size.events,
                        f"1 output of ~{MEMO_BYTES * 4 // 3 // 1000} kB, topic limit {TOPIC_LIMIT // 1024} KiB",
                        0, 0, PER_FAULT * len(codes))
        result.checks["dead-lettered as output_too_large"] = (
            outcome == "dead-lettered" and headers.get("streamscore.reason") == b"output_too_large")
        result.checks["the detail names the topic and the size"] = t.destination in detail and " bytes" in detail
        result.checks["counted in the dead-letter metrics"] = counted == 1
        result.checks["no exit"] = not codes
        result.notes.update(outcome=outcome, exit_codes=codes, error=_error_line(proc) if codes else "",
                            detail=detail)
        result = _finish(env, bootstrap, t, stream, [proc], result)
        resent = RESENT.findall(proc.log())
        result.notes["records sent again alone"] = int(resent[-1]) if resent else 0
        with OutputReader(bootstrap, [t.dead_letter]) as reader:  # every instance has exited
            too_large = [r.key for r in reader.read_to_end()
                         if r.headers.get("streamscore.reason") == b"output_too_large"]
        result.checks["only the large event is dead-lettered output_too_large"] = too_large == [poison]
        return result


def oversize_output_exactly_once(env: Env, size: Size, engine: str = "confluent-kafka") -> Result:
    """``oversize_output`` under ``delivery: exactly_once``. The broker's refusal fails the open
    transaction, and the redone transaction renders the record anew, so the event is not
    dead-lettered there: the service must stop with one line naming the topic and exactly_once,
    with nothing committed past an unwritten event (outputs read ``read_committed``, librdkafka's
    default); once the topic's limit is raised, a restart loses and duplicates nothing."""
    with env.broker(own=True) as (bootstrap, broker):
        assert isinstance(broker, KafkaBroker)
        t = make_topics(bootstrap)
        _set_topic_config(bootstrap, t.destination, "max.message.bytes", str(TOPIC_LIMIT))
        overrides = _engine(env, engine)  # the Faust engine names its transactional ids itself
        overrides.setdefault("kafka", {"transactional_id": f"faults-{t.group}"})
        config = write_config(env.workdir, bootstrap, t, delivery="exactly_once",
                              output={"copy_fields": ["transaction_id", "card.id", "amount", "memo"]}, **overrides)
        stream = InputStream(bootstrap, t.source, size.events, size.rate, env.seed)
        _plant_large_field(stream, random.Random(env.seed))
        proc = env.service(config).start()
        proc.wait_ready()
        stream.start()
        code = proc.wait(180)
        error = _error_line(proc)
        positions = committed(bootstrap, t)
        with output_reader(bootstrap, t) as reader:  # its only writer has exited
            outputs = outputs_of(reader.read_to_end(), t)
        _set_topic_config(bootstrap, t.destination, "max.message.bytes", "4000000")  # the operator's fix
        final = env.service(config).start()
        fault = f"1 output of ~{MEMO_BYTES * 4 // 3 // 1000} kB, topic limit {TOPIC_LIMIT // 1024} KiB"
        result = Result("output over max.message.bytes, exactly-once", size.events, fault, 0, 0, 0)
        result.checks["exits non-zero"] = code != 0
        result.checks["one error line naming the topic and exactly_once"] = (
            t.destination in error and "exactly_once" in error and "not dead-lettered" in error)
        result.checks["no commit past an unwritten event"] = not commits_past_outputs(positions, outputs)
        result.notes.update(exit_code=code, error=error)
        return _finish(env, bootstrap, t, stream, [final], result)


def _engine(env: Env, engine: str) -> dict[str, Any]:
    """Config overrides for ``engine``: for ``faust`` a data directory of the run's, the memory table
    store and a short fetch wait, as the integration tests' ``engine_config``."""
    if engine == "confluent-kafka":
        return {}
    return {"engine": engine, "kafka": {"consumer": {"fetch.wait.max.ms": 10}},
            "faust": {"data_dir": str(env.workdir / f"faust-{uuid.uuid4().hex[:6]}"), "store": "memory"}}


RESENT = re.compile(r"(\d+) records refused in a batch for size were sent again alone")
"""The service's log line at exit: how many refused records the Kafka edge sent again alone."""


def _plant_large_field(stream: InputStream, rng: random.Random) -> bytes:
    """Give one valid event, mid-stream, a ``memo`` of ``MEMO_BYTES`` random bytes (base64); its key."""
    for index in range(len(stream.pairs) // 2, len(stream.pairs)):
        key, value = stream.pairs[index]
        try:
            event = orjson.loads(value)
        except orjson.JSONDecodeError:
            continue
        if isinstance(event, dict) and "amount" in event:
            event["memo"] = base64.b64encode(rng.randbytes(MEMO_BYTES)).decode()
            stream.pairs[index] = (key, orjson.dumps(event))
            return key
    raise AssertionError("no valid event in the second half of the stream")


def _first_of(bootstrap: str, t: Topics, proc: ServiceProcess, poison: bytes, timeout: float = 180.0
              ) -> tuple[str, Record | None]:
    """``exit`` when the service exits first, else where the large event's output went, and that output."""
    with output_reader(bootstrap, t) as reader:
        records = reader.read_until(lambda rs: not proc.alive() or any(r.key == poison for r in rs), timeout,
                                    "the service to exit or the large event's output")
        found = [r for r in records if r.key == poison]
    if not found:
        return "exit", None
    return ("dead-lettered" if found[0].topic == t.dead_letter else "scored"), found[0]


SCENARIOS: dict[str, Scenario] = {
    # a broker restart after kill -9 takes 20-30 s on the shared 2-core VM (JVM start, log
    # recovery): the stream is paced to outlast every outage, so each kill lands mid-stream
    "broker-kill9": Scenario(broker_kill9, Size(4_000, 1, 400), Size(100_000, 3, 1_000), brokers=("kafka",)),
    "destination-deleted": Scenario(destination_deleted, Size(4_000, 1, 1_000), Size(100_000, 1, 5_000),
                                    brokers=("kafka",)),
    "oversize-output": Scenario(oversize_output, Size(4_000, 1, 1_000), Size(100_000, 1, 5_000),
                                brokers=("kafka",)),
    "oversize-output-faust": Scenario(functools.partial(oversize_output, engine="faust"), Size(1_000, 1, 500),
                                      Size(20_000, 1, 1_000), brokers=("kafka",)),
    "oversize-output-exactly-once": Scenario(oversize_output_exactly_once, Size(2_000, 1, 1_000),
                                             Size(100_000, 1, 5_000), brokers=("kafka",)),
    "oversize-output-exactly-once-faust": Scenario(functools.partial(oversize_output_exactly_once, engine="faust"),
                                                   Size(2_000, 1, 1_000), Size(20_000, 1, 1_000), brokers=("kafka",)),
}
"""Apache Kafka only: name -> scenario with its CI and full sizes."""
