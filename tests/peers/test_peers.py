"""The side-by-side benchmark's pure parts: the peers' scorer does streamscore's work, and the
output validator catches every way a variant can miscount."""

from __future__ import annotations

import json
from importlib.resources import as_file, files
from pathlib import Path

import orjson
import pytest

from load.peers.job import demo_job
from load.peers.scoring import Scorer as PeerScorer
from load.peers.validate import validate
from streamscore.config import load_settings
from streamscore.core.scorer import Scorer, ScoringSpec
from streamscore.demo.transactions import TransactionGenerator
from streamscore.runners.onnx import OnnxRunner


class Message:
    def __init__(self, partition: int, offset: int, key: bytes, value: bytes) -> None:
        self._p, self._o, self._k, self._v = partition, offset, key, value

    def topic(self) -> str: return "in"
    def partition(self) -> int: return self._p
    def offset(self) -> int: return self._o
    def key(self) -> bytes: return self._k
    def value(self) -> bytes: return self._v
    def headers(self) -> None: return None
    def timestamp(self) -> tuple[int, int]: return (1, 1_700_000_000_000 + self._o)


def test_peer_scorer_scores_and_dead_letters_like_streamscore() -> None:
    events = TransactionGenerator(seed=7, malformed_rate=0.05).encoded(3000)
    messages = [Message(i % 4, i, k, v) for i, (k, v) in enumerate(events)]
    with as_file(files("streamscore.demo") / "config.yaml") as demo:
        settings = load_settings(Path(demo), env={})
        runner = OnnxRunner(settings.single_model, settings.feature_width)
        runner.load()
    ours = Scorer(ScoringSpec.from_settings(settings), runner).score(messages)
    peers = PeerScorer(json.loads(json.dumps(demo_job()))).score(
        [(m.key(), m.value(), m.topic(), m.partition(), m.offset(), m.timestamp()[1]) for m in messages])

    assert len(peers) == len(messages)
    assert [i for i, out in enumerate(peers) if out[0]] == ours.scored
    theirs_reasons = {i: dict(out[3])["streamscore.reason"].decode() for i, out in enumerate(peers) if not out[0]}
    ours_reasons = {r.index: r.reason.value for r in ours.rejections}
    assert theirs_reasons.keys() == ours_reasons.keys() and len(ours_reasons) > 100
    # JSON errors are one reason for the peers; streamscore tells NaN literals (non_finite) apart
    assert all(theirs_reasons[i] in (reason, "malformed_json") for i, reason in ours_reasons.items())
    drop = ("scored_at_ms",)
    theirs = [{k: v for k, v in orjson.loads(out[2]).items() if k not in drop} for out in peers if out[0]]
    assert theirs == [{k: v for k, v in orjson.loads(o).items() if k not in drop} for o in ours.outputs]


def record(score: float) -> bytes:
    return orjson.dumps({"score": score})


def test_validator_accepts_one_output_per_input() -> None:
    result, scores = validate([b"a", b"b", b"c"], [(True, b"a", record(0.1)), (True, b"b", record(0.9)),
                                                    (False, b"c", b"junk")])
    assert result.ok and (result.scored, result.dead_lettered) == (2, 1)
    assert scores == {b"a": 0.1, b"b": 0.9, b"c": None}


@pytest.mark.parametrize(("records", "field"), [
    ([(True, b"a", record(0.1))], "missing"),
    ([(True, b"a", record(0.1)), (True, b"b", record(0.2)), (True, b"b", record(0.2))], "duplicated"),
    ([(True, b"a", record(0.1)), (True, b"b", record(0.2)), (True, b"z", record(0.2))], "unknown"),
    ([(True, b"a", record(0.1)), (True, b"b", b"{")], "malformed"),
    ([(True, b"a", record(0.1)), (True, b"b", record(1.5))], "malformed"),
    ([(True, b"a", record(0.1)), (True, b"b", orjson.dumps({"score": None}))], "malformed"),
])
def test_validator_counts_each_fault(records: list[tuple[bool, bytes, bytes]], field: str) -> None:
    result, _ = validate([b"a", b"b"], records)
    assert not result.ok and getattr(result, field) == 1 and result.examples


def test_validator_compares_with_the_reference() -> None:
    reference = {b"a": 0.5, b"b": None, b"c": 0.25}
    result, _ = validate([b"a", b"b", b"c"], [(True, b"a", record(0.5000001)), (True, b"b", record(0.3)),
                                               (True, b"c", record(0.26))], reference)
    assert result.mismatched == 2 and result.max_score_difference == pytest.approx(0.01)


def test_the_per_event_path_gives_the_batch_path_records() -> None:
    scorer = PeerScorer(demo_job())
    events = TransactionGenerator(seed=11, malformed_rate=0.2).encoded(2000)
    items: list[tuple[str, bytes, str, int, int, int | None]] = [
        ("k", v, "in", i % 4, i, 1_700_000_000_000) for i, (_, v) in enumerate(events)]
    items += [("k", orjson.dumps(e), "in", 0, 0, None) for e in (
        {"amount": 1, "merchant": {"category": "atm", "country": "XX"}, "card": {"present": True, "age_days": 3.0,
                                                                                  "id": None}, "hour": 2},
        {"amount": 1e39, "merchant": {"category": "atm", "country": "US"}, "card": {"present": True, "age_days": 3},
         "hour": 2, "activity": None},
        {"amount": 1, "merchant": 5, "card": {"present": True, "age_days": 3}, "hour": 2},
        {"amount": 1, "merchant": {"category": "atm", "country": "US"}, "card": {"present": 1, "age_days": 3},
         "hour": 2})]

    def comparable(out: tuple[bool, object, bytes, list[tuple[str, bytes]]]) -> tuple[object, ...]:
        if out[0]:
            return (True, {k: v for k, v in orjson.loads(out[2]).items() if k != "scored_at_ms"})
        return (False, out[2], dict(out[3])["streamscore.reason"])

    assert [comparable(scorer.score_one(item)) for item in items] == [comparable(o) for o in scorer.score(items)]
