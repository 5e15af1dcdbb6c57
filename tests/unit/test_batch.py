"""Pure parts of ``streamscore batch`` and the postgresql destination: the run's state, the
exactly-once checkpoint, rows of files as events, rejects, staging rows, option errors."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, cast

import orjson
import pyarrow as pa
import pytest

from streamscore.batch.checkpoint import Transactional
from streamscore.batch.inputs import chunks, events_of, format_of
from streamscore.batch.outputs import reject_line
from streamscore.batch.parts import Counts, Part, State
from streamscore.batch.run import BatchRun, Summary, check
from streamscore.config import DestinationSettings, Settings
from streamscore.core.records import DeadLetter, TopicPartition
from streamscore.destinations.postgres import postgres_table, row_of
from streamscore.errors import ConfigError, DeliveryError, TransactionAborted


def test_the_plan_is_kept_and_done_chunks_are_remembered(tmp_path: Path) -> None:
    state = State(tmp_path)
    made = [Part("a.jsonl", 0, "jsonl", rows=3)]
    assert state.load_or_save({"input": 1}, lambda: made) == made
    state.mark_done(0, 2, Counts(10, 8, 2))
    again = State(tmp_path)
    assert again.load_or_save({"input": 1}, lambda: pytest.fail("a saved plan is not made again")) == made
    assert again.done() == {(0, 2): Counts(10, 8, 2)}
    assert not list(tmp_path.rglob(".*.tmp")), "no temporary file left"
    with pytest.raises(ConfigError, match="another run"):
        again.load_or_save({"input": 2}, lambda: made)


def test_a_run_id_is_made_once_with_the_plan(tmp_path: Path) -> None:
    state = State(tmp_path)
    state.load_or_save({"input": 1}, list)
    again = State(tmp_path)
    again.load_or_save({"input": 1}, list)
    assert len(state.run_id) == 12
    assert again.run_id == state.run_id
    other = State(tmp_path / "other")
    other.load_or_save({"input": 1}, list)
    assert other.run_id != state.run_id, "a state folder made again never resumes an older run's progress"


class Committed:
    """A topic range's progress group, and the transactions that commit to it."""

    def __init__(self, positions: dict[tuple[str, int], int], fail_commits: int = 0) -> None:
        self.positions = positions
        self.calls: list[str] = []
        self.fail_commits = fail_commits

    def committed(self, partitions: list[tuple[str, int]]) -> dict[tuple[str, int], int]:
        return {tp: self.positions[tp] for tp in partitions if tp in self.positions}

    def group_metadata(self) -> object:
        return "group-metadata"

    def begin_transaction(self) -> None:
        self.calls.append("begin")

    def commit_transaction(self, positions: Mapping[TopicPartition, int], group_metadata: object,
                           timeout: float) -> None:
        if self.fail_commits:
            self.fail_commits -= 1
            raise TransactionAborted("coordinator moved")
        self.calls.append(f"commit {dict(positions)} {group_metadata}")
        self.positions.update(positions)

    def abort_transaction(self, timeout: float) -> None:
        self.calls.append("abort")


def transactional(tmp_path: Path, kafka: Committed) -> Transactional:
    state = State(tmp_path)
    state.load_or_save({"input": 1}, list)
    return Transactional(state, kafka, cast(Any, kafka), chunk_rows=10, timeout=5.0)


def test_exactly_once_a_chunk_is_done_when_its_end_is_committed_not_when_marked(tmp_path: Path) -> None:
    parts = [(0, Part("in", 0, "kafka", 5, 40)), (1, Part("in", 1, "kafka", 0, 8)), (2, Part("in", 2, "kafka", 0, 9))]
    kafka = Committed({("in", 0): 25, ("in", 1): 8})
    checkpoint = transactional(tmp_path, kafka)
    for index, chunk in [(0, 0), (0, 1), (0, 2), (1, 0), (2, 0)]:  # (0, 2) and (2, 0): marked, never committed
        checkpoint.state.mark_done(index, chunk, Counts(10, 9, 1))
    assert checkpoint.done(parts) == {(0, 0): Counts(10, 9, 1), (0, 1): Counts(10, 9, 1), (1, 0): Counts(10, 9, 1)}


def test_exactly_once_a_chunk_commits_its_end_offset_with_its_outputs(tmp_path: Path) -> None:
    kafka = Committed({})
    checkpoint = transactional(tmp_path, kafka)
    part = Part("in", 3, "kafka", 5, 32)
    for chunk in range(3):
        checkpoint.begin()
        checkpoint.commit(7, part, chunk, Counts(1, 1, 0))
    checkpoint.abort()  # nothing open: nothing to abort
    assert kafka.calls == ["begin", "commit {('in', 3): 15} group-metadata", "begin",
                           "commit {('in', 3): 25} group-metadata", "begin", "commit {('in', 3): 32} group-metadata"]
    assert set(checkpoint.state.done()) == {(7, 0), (7, 1), (7, 2)}


def test_exactly_once_a_failed_commit_leaves_the_transaction_to_abort(tmp_path: Path) -> None:
    kafka = Committed({}, fail_commits=1)
    checkpoint = transactional(tmp_path, kafka)
    checkpoint.begin()
    with pytest.raises(TransactionAborted):
        checkpoint.commit(0, Part("in", 0, "kafka", 0, 10), 0, Counts(10, 10, 0))
    checkpoint.abort()
    assert kafka.calls == ["begin", "abort"]
    assert checkpoint.done([(0, Part("in", 0, "kafka", 0, 10))]) == {}, "its marker alone does not make it done"


def test_exactly_once_refuses_files_into_the_destinations_in_one_line() -> None:
    base = {"kafka": {"source_topics": ["in"], "destination_topic": "out", "dead_letter_topic": "dlq"},
            "model": {"path": "m.onnx"}, "features": [{"name": "amount"}], "delivery": "exactly_once"}
    files = Settings.model_validate({**base, "batch": {"input": {"files": ["x.jsonl"]}, "state": "s"}})
    with pytest.raises(ConfigError) as caught:
        check(files)
    assert str(caught.value).startswith("delivery: exactly_once: 'streamscore batch' writes file inputs")
    assert "\n" not in str(caught.value)
    check(Settings.model_validate({**base, "batch": {"input": {"files": ["x.jsonl"]}, "output": "out"}}))
    check(Settings.model_validate({**base, "batch": {"input": {"kafka": {}}, "state": "s"}}))


def test_exactly_once_ids_are_the_state_folders_and_the_workers(tmp_path: Path) -> None:
    """A restart (same folder, same worker) fences its predecessor; workers and other runs never fence each other."""
    def run(folder: str, worker: int, **kafka: str) -> BatchRun:
        settings = Settings.model_validate({
            "kafka": {"source_topics": ["in"], "destination_topic": "out", "dead_letter_topic": "dlq",
                      "group_id": "g", **kafka},
            "model": {"path": "m.onnx"}, "features": [{"name": "amount"}], "delivery": "exactly_once",
            "batch": {"input": {"kafka": {}}, "state": str(tmp_path / folder)}})
        batch = BatchRun(settings)
        batch.share = (worker, 2)
        return batch

    first = run("a", 0)._transactional_id()
    assert first.startswith("streamscore-g-batch-") and first.endswith("-0")
    assert run("a", 0)._transactional_id() == first
    assert run("a", 1)._transactional_id() == first[:-1] + "1"
    assert run("b", 0)._transactional_id() != first
    assert run("a", 0, transactional_id="tx")._transactional_id() == "tx" + first.removeprefix("streamscore-g")
    again = run("a", 0)
    again.state.load_or_save(again._identity(), list)
    assert again._progress_group() == f"g-batch-{again.state.run_id}"
    assert again._identity()["delivery"] == "exactly_once", "never resumed from an at-least-once run's markers"
    assert again._identity()["workers"] == 1, "restarted with as many workers, so each fences its predecessor"


class AbortingCheckpoint:
    """Kafka says to abort the first ``aborts`` commits."""

    def __init__(self, aborts: int) -> None:
        self.aborts = aborts
        self.calls: list[str] = []

    def done(self, mine: object) -> dict[tuple[int, int], Counts]:
        return {}

    def begin(self) -> None:
        self.calls.append("begin")

    def commit(self, index: int, part: Part, chunk: int, counts: Counts) -> None:
        if self.aborts:
            self.aborts -= 1
            raise TransactionAborted("coordinator moved")
        self.calls.append("commit")

    def abort(self) -> None:
        self.calls.append("abort")


class OneRejectPerChunk(BatchRun):
    def _score_chunk(self, scorer: Any, sink: Any, part: int, chunk: int, messages: Any,
                     reasons: dict[str, int]) -> Counts:
        reasons["missing_field"] = reasons.get("missing_field", 0) + 1
        return Counts(2, 1, 1)


@pytest.mark.parametrize(("aborts", "calls"), [
    (0, ["begin", "commit"]),
    (2, ["begin", "abort", "begin", "abort", "begin", "commit"]),
])
def test_an_aborted_chunk_is_redone_and_counted_once(tmp_path: Path, aborts: int, calls: list[str]) -> None:
    run = OneRejectPerChunk(Settings.model_validate({
        "kafka": {"source_topics": ["in"], "destination_topic": "out", "dead_letter_topic": "dlq"},
        "model": {"path": "m.onnx"}, "features": [{"name": "amount"}],
        "batch": {"input": {"kafka": {}}, "state": str(tmp_path)}}))
    checkpoint, summary = AbortingCheckpoint(aborts), Summary()
    counts = run._checkpointed(cast(Any, None), cast(Any, None), checkpoint, 0, Part("in", 0, "kafka", 0, 2), 0,
                               [], summary)
    assert counts == Counts(2, 1, 1)
    assert checkpoint.calls == calls
    assert summary.reasons == {"missing_field": 1}
    with pytest.raises(DeliveryError, match="5 transactions in a row were aborted; last: coordinator moved"):
        run._checkpointed(cast(Any, None), cast(Any, None), AbortingCheckpoint(5), 0, Part("in", 0, "kafka", 0, 2),
                          0, [], summary)


def test_dotted_columns_become_nested_objects() -> None:
    table = pa.table({"card.present": [True], "card.id": ["c1"], "amount": [1.5]})
    assert [orjson.loads(v) for v in events_of(table)()] == [{"card": {"present": True, "id": "c1"}, "amount": 1.5}]


def test_jsonl_chunks_have_exact_sizes_and_keep_bad_lines(tmp_path: Path) -> None:
    path = tmp_path / "x.jsonl"
    path.write_bytes(b'{"a":1}\r\nnot json\n\n{"a":2}\n{"a":3}')
    got = [(n, build()) for n, build in chunks(str(path), "jsonl", 2)]
    assert got == [(0, [b'{"a":1}', b"not json"]), (1, [b"", b'{"a":2}']), (2, [b'{"a":3}'])]


def test_arrow_chunks_cut_at_chunk_rows(tmp_path: Path) -> None:
    import pyarrow.parquet as pq

    path = tmp_path / "x.parquet"
    pq.write_table(pa.table({"a": list(range(7))}), path, row_group_size=3)
    got = [[orjson.loads(v)["a"] for v in build()] for _, build in chunks(str(path), "parquet", 4)]
    assert got == [[0, 1, 2, 3], [4, 5, 6]]


def test_the_format_goes_by_the_extension_unless_given() -> None:
    assert format_of("/d/x.ndjson", "auto") == "jsonl"
    assert format_of("/d/x.csv.gz", "auto") == "csv"
    assert format_of("/d/x.data", "parquet") == "parquet"
    with pytest.raises(ConfigError, match=r"batch\.input\.format"):
        format_of("/d/x.data", "auto")


def test_a_reject_carries_the_streams_reason_and_source() -> None:
    letter = DeadLetter(None, b"x" * 10, [("streamscore.reason", b"oversize"), ("streamscore.detail", b"too big"),
                                          ("streamscore.source.topic", b"f.jsonl"),
                                          ("streamscore.source.partition", b"0"),
                                          ("streamscore.source.offset", b"7"), ("streamscore.time", b"5"),
                                          ("streamscore.value.truncated.from", b"2000000")])
    assert orjson.loads(reject_line(letter)) == {
        "reason": "oversize", "detail": "too big", "source": {"topic": "f.jsonl", "partition": 0, "offset": 7},
        "rejected_at_ms": 5, "value": "xxxxxxxxxx", "value_truncated_from": 2000000}


def test_a_score_record_becomes_a_staging_row() -> None:
    record = {"transaction_id": "t1", "score": 0.25, "decision": "approve", "model": "m", "model_version": "v1",
              "source": {"topic": "in", "partition": 3, "offset": 9}, "event_time_ms": 1000, "scored_at_ms": 2000}
    output = orjson.dumps(record)
    assert row_of(b"k", output) == ("in", 3, 9, b"k", 0.25, "approve", "m", "v1", None, 1000, 2000, output.decode())


def settings_with(options: dict[str, object]) -> tuple[DestinationSettings, Settings]:
    destination = DestinationSettings(kind="postgresql", options=options)
    settings = Settings.model_validate({
        "kafka": {"source_topics": ["in"], "destination_topic": "out", "dead_letter_topic": "dlq"},
        "model": {"path": "m.onnx"}, "features": [{"name": "amount"}],
        "destinations": [{"kind": "kafka"}, destination.model_dump()]})
    return settings.outputs[1], settings


@pytest.mark.parametrize(("options", "error"), [
    ({}, "destinations[1].options.dsn: required key is missing"),
    ({"dsn": "postgresql://h/db", "tabel": "x"}, "destinations[1].options.tabel: unknown key (expected one of: dsn"),
    ({"dsn": "postgresql://h/db", "table": "x; drop"}, "destinations[1].options.table: expected a table name"),
])
def test_bad_options_are_one_line_naming_the_key(options: dict[str, object], error: str) -> None:
    destination, settings = settings_with(options)
    with pytest.raises(ConfigError) as caught:
        postgres_table(destination, settings, None)
    assert str(caught.value).startswith(error)
    assert "\n" not in str(caught.value)


def test_valid_options_build_an_unconnected_destination() -> None:
    destination, settings = settings_with({"dsn": "postgresql://h/db", "table": "s.scores"})
    table = postgres_table(destination, settings, None)
    assert table.name == "postgresql:s.scores"
    assert not table.transactional
