"""Bad input through the real service: hypothesis-generated events, produced to a real topic, scored
by ``streamscore run`` as a subprocess, read back from the score and dead-letter topics.

Every input must come out exactly once, scored or dead-lettered with a known reason (and the
reason foreseen where the input's kind fixes it), nothing else may be written, and the service
must stay healthy and exit 0 on SIGTERM.

Size and seed: ``STREAMSCORE_TEST_FUZZ_EXAMPLES`` (default 1,000, the CI size) and
``STREAMSCORE_TEST_FUZZ_SEED``. The full run, recorded in docs/reliability.md::

    STREAMSCORE_TEST_FUZZ_EXAMPLES=10000 .venv/bin/python -m pytest tests/integration/test_fuzz.py

``STREAMSCORE_TEST_FUZZ_REPORT=path.json`` writes the counts per kind and per outcome.

The inputs are drawn by hypothesis's own engine (one example per input, generate phase only,
fixed seed), collected first, then produced in one go: a service in a subprocess cannot sit inside
hypothesis's example loop. A failure names the input's index, kind and bytes.
"""

from __future__ import annotations

import collections
import json
import os
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest
from confluent_kafka import Producer
from hypothesis import HealthCheck, Phase, given, seed, settings
from hypothesis import strategies as st

from streamscore.demo.transactions import TransactionGenerator
from tests.support import OutputReader, Record, ServiceProcess, Topics, produce_one, stop_and_read

pytestmark = pytest.mark.integration

EXAMPLES = int(os.environ.get("STREAMSCORE_TEST_FUZZ_EXAMPLES", "1000"))
SEED = int(os.environ.get("STREAMSCORE_TEST_FUZZ_SEED", "20261124"))
MAX_MESSAGE_BYTES = 65_536
"""The service's limit in this test: low, so that oversize inputs stay cheap to produce."""
MAX_JSON_DEPTH = 64
"""The default ``batching.max_json_depth``."""
REASONS = frozenset({"malformed_json", "not_an_object", "missing_field", "wrong_type", "non_finite", "oversize",
                     "too_deep", "empty", "model_error"})
LABELS = frozenset({"approve", "review", "reject"})


@dataclass(frozen=True)
class FuzzInput:
    kind: str
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes | None]] | None
    expect: str | None
    """``scored``, a dead-letter reason, or None where the kind allows several outcomes."""


# -- strategies -----------------------------------------------------------------------------------------------------

BASE_EVENTS = [orjson.loads(v) for _, v in TransactionGenerator(seed=21).encoded(40)]
ODD_TEXT = st.sampled_from(["\ud800", "\udfff", "a\udc00b", "\u0000", "\ufeff", "\u202eevil", "\uffff", "e\u0301",
                            "\U0001d518\U0001d52b", "\u2028", "\\", '"', "", " " * 50])
TEXT = st.text(max_size=40) | ODD_TEXT
FINITE_SCALARS = st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats(allow_nan=False,
                                                                                      allow_infinity=False)
SCALARS = FINITE_SCALARS | st.floats() | st.integers() | TEXT


def containers(inner: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.lists(inner, max_size=4) | st.dictionaries(TEXT, inner, max_size=4)


JSON_VALUES = st.recursive(SCALARS, containers, max_leaves=12)
SAFE_JSON_VALUES = st.recursive(FINITE_SCALARS | st.text(max_size=20), lambda inner: st.lists(inner, max_size=3)
                                | st.dictionaries(st.text(max_size=8), inner, max_size=3), max_leaves=8)
"""Values that never make an event invalid when put under a field the model does not read."""
FEATURE_PATHS = ["amount", "merchant.category", "merchant.country", "card.present", "hour", "card.age_days",
                 "activity.tx_1h", "activity.tx_24h", "transaction_id", "card.id", "merchant", "card", "activity"]
NUMERIC_PATHS = ["amount", "hour", "card.age_days", "activity.tx_1h"]
NON_FINITE_LITERALS = [b"NaN", b"Infinity", b"-Infinity", b"1e999", b"-1e999", b"1e39", b"9" * 400]


def dumps(value: Any, ascii_only: bool = True) -> bytes:
    """The stdlib's writer: NaN/Infinity literals, any integer, lone surrogates (escaped, or as the
    invalid UTF-8 of ``surrogatepass`` when not ``ascii_only``), none of which orjson would write."""
    return json.dumps(value, ensure_ascii=ascii_only).encode("utf-8", "surrogatepass")


def base(draw: st.DrawFn) -> dict[str, Any]:
    return json.loads(json.dumps(draw(st.sampled_from(BASE_EVENTS))))


def set_path(event: dict[str, Any], path: str, value: Any) -> None:
    *parents, leaf = path.split(".")
    node = event
    for p in parents:
        if not isinstance(node.get(p), dict):
            node[p] = {}
        node = node[p]
    node[leaf] = value


def depth(value: Any) -> int:
    """Levels of objects and arrays, the value itself counting as one."""
    if isinstance(value, dict | list):
        children = value.values() if isinstance(value, dict) else value
        return 1 + max(map(depth, children), default=0)
    return 0


def nested(depth: int, leaf: bytes, array: bool) -> bytes:
    opener, closer = (b"[", b"]") if array else (b'{"a":', b"}")
    return opener * depth + leaf + closer * depth


@st.composite
def valid(draw: st.DrawFn) -> tuple[str, bytes, str | None]:
    event = base(draw)
    for name, value in draw(st.dictionaries(st.sampled_from(["note", "extra", "meta", "tags"]), SAFE_JSON_VALUES,
                                            max_size=3)).items():
        event[name] = value
    return "valid", dumps(event), "too_deep" if depth(event) > MAX_JSON_DEPTH else "scored"


@st.composite
def random_bytes(draw: st.DrawFn) -> tuple[str, bytes, str | None]:
    return "random_bytes", draw(st.binary(max_size=300)), None


@st.composite
def truncated(draw: st.DrawFn) -> tuple[str, bytes, str | None]:
    whole = dumps(base(draw))
    cut = draw(st.integers(0, len(whole) - 1))
    return "truncated_json", whole[:cut], "empty" if cut == 0 else "malformed_json"


@st.composite
def deep(draw: st.DrawFn) -> tuple[str, bytes, str | None]:
    levels = draw(st.sampled_from([62, 63, 64, 65, 1022, 1023, 1024, 1025]) | st.integers(1, 1500))
    leaf = draw(st.sampled_from([b"1", b"{}", b"[]", b'"x"']))
    inner = nested(levels, leaf, draw(st.booleans()))
    where = draw(st.sampled_from(["top", "meta", "card.id"]))
    if where == "top":
        return "deep_nesting", inner, None
    event = base(draw)
    set_path(event, where, "@")
    total = 1 + where.count(".") + levels + (leaf in (b"{}", b"[]"))
    return "deep_nesting", dumps(event).replace(b'"@"', inner), "too_deep" if total > MAX_JSON_DEPTH else "scored"


@st.composite
def huge_string(draw: st.DrawFn) -> tuple[str, bytes, str | None]:
    event = base(draw)
    size = draw(st.sampled_from([MAX_MESSAGE_BYTES - 400, MAX_MESSAGE_BYTES, MAX_MESSAGE_BYTES + 1, 150_000])
                 | st.integers(1_000, 100_000))
    where = draw(st.sampled_from(["note", "transaction_id", "merchant.category"]))
    set_path(event, where, "x")
    value = dumps(event)
    value = value.replace(b'"x"', b'"' + b"x" * max(0, size - len(value)) + b'"', 1)
    return "huge_string", value, "oversize" if len(value) > MAX_MESSAGE_BYTES else "scored"


@st.composite
def wrong_type(draw: st.DrawFn) -> tuple[str, bytes, str | None]:
    event = base(draw)
    set_path(event, draw(st.sampled_from(FEATURE_PATHS)), draw(JSON_VALUES))
    return "wrong_type", dumps(event, draw(st.booleans())), None


@st.composite
def non_finite(draw: st.DrawFn) -> tuple[str, bytes, str | None]:
    event = base(draw)
    set_path(event, draw(st.sampled_from(NUMERIC_PATHS)), "@")
    return "non_finite", dumps(event).replace(b'"@"', draw(st.sampled_from(NON_FINITE_LITERALS))), "non_finite"


@st.composite
def odd_unicode(draw: st.DrawFn) -> tuple[str, bytes, str | None]:
    event = base(draw)
    set_path(event, draw(st.sampled_from(["transaction_id", "card.id", "merchant.category", "note", "\u0000\ud800"])),
             draw(TEXT))
    return "odd_unicode", dumps(event, draw(st.booleans())), None


EMPTY_VALUES: dict[bytes | None, str | None] = {
    None: "empty", b"": "empty", b" ": "malformed_json", b"\n\t": "malformed_json", b"{}": "missing_field",
    b"[]": "not_an_object", b'""': "not_an_object", b"null": "not_an_object", b"0": "not_an_object",
    b"\xef\xbb\xbf{}": "malformed_json", b"\x00": "malformed_json",
}


@st.composite
def empty(draw: st.DrawFn) -> tuple[str, bytes | None, str | None]:
    value = draw(st.sampled_from(list(EMPTY_VALUES)))
    return "empty_value", value, EMPTY_VALUES[value]


@st.composite
def not_an_object(draw: st.DrawFn) -> tuple[str, bytes, str | None]:
    value = draw(JSON_VALUES.filter(lambda v: not isinstance(v, dict)))
    return "json_not_object", dumps(value), None


@st.composite
def fuzz_inputs(draw: st.DrawFn) -> FuzzInput:
    kind, value, expect = draw(st.one_of(valid(), valid(), random_bytes(), truncated(), deep(), huge_string(),
                                         wrong_type(), non_finite(), odd_unicode(), empty(), not_an_object()))
    key = draw(st.none() | st.just(b"") | st.binary(max_size=40) | st.text(max_size=20).map(str.encode))
    # header names are C strings to librdkafka, so a NUL would end the name before it reached the broker;
    # and confluent-kafka 2.x crashes (SIGSEGV) producing a name with a lone surrogate: both are left out
    name = (st.text(st.characters(exclude_categories=["Cs"], exclude_characters="\x00"), max_size=20)
            | st.just("streamscore.reason"))
    header = st.tuples(name, st.none() | st.binary(max_size=40))
    headers = draw(st.none() | st.lists(header, max_size=4))
    return FuzzInput(kind, key, value, headers, expect)


def generate(count: int, seed_value: int) -> list[FuzzInput]:
    """``count`` inputs from hypothesis's engine, reproducible from ``seed_value``."""
    drawn: list[FuzzInput] = []

    @seed(seed_value)
    @settings(max_examples=count, database=None, phases=[Phase.generate], deadline=None,
              suppress_health_check=list(HealthCheck))
    @given(fuzz_inputs())
    def collect(item: FuzzInput) -> None:
        drawn.append(item)

    collect()
    return drawn


# -- producing that keeps what the shared helper drops (the offset of each input) ----------------------------------

def produce_all(bootstrap: str, topic: str, inputs: list[FuzzInput]) -> dict[tuple[int, int], int]:
    """Produce every input; returns (partition, offset) -> input index, from the delivery reports."""
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5, "enable.idempotence": True,
                         "message.max.bytes": 4_000_000})
    placed: dict[tuple[int, int], int] = {}
    failed: list[str] = []

    def on_delivery(index: int) -> Callable[[Any, Any], None]:
        def report(err: Any, msg: Any) -> None:
            if err is not None:
                failed.append(f"input {index}: {err}")
            else:
                placed[(msg.partition(), msg.offset())] = index
        return report

    for i, item in enumerate(inputs):
        produce_one(producer, topic, item.value, item.key, headers=item.headers, on_delivery=on_delivery(i))
        producer.poll(0)
    assert producer.flush(60) == 0, "inputs not acknowledged by the broker"
    assert not failed, failed[:5]
    return placed


# -- the test -------------------------------------------------------------------------------------------------------

def source_of(out: Record) -> tuple[str, int, int]:
    if any(name == "streamscore.source.offset" for name, _ in out.header_list):
        h = out.headers  # the service's headers come last, so they win over the input's of the same name
        return (h["streamscore.source.topic"].decode(), int(h["streamscore.source.partition"]),
                int(h["streamscore.source.offset"]))
    src = orjson.loads(out.value or b"")["source"]
    return src["topic"], src["partition"], src["offset"]


def describe(index: int, item: FuzzInput) -> str:
    shown = item.value if item.value is None or len(item.value) <= 200 else item.value[:200] + b"..."
    return f"input {index} ({item.kind}, expected {item.expect}): {shown!r}"


@pytest.mark.timeout(300 + EXAMPLES // 10)
def test_generated_bad_input_is_scored_or_dead_lettered_exactly_once(
    bootstrap: str, topics: Callable[..., Topics], write_config: Callable[..., Path],
    service: Callable[..., ServiceProcess], output_reader: Callable[..., OutputReader],
) -> None:
    inputs = generate(EXAMPLES, SEED)
    assert len(inputs) == EXAMPLES
    t = topics()
    placed = produce_all(bootstrap, t.source, inputs)
    assert len(placed) == len(inputs)
    proc = service(write_config(t, batching={"max_message_bytes": MAX_MESSAGE_BYTES}))
    proc.wait_ready()
    reader = output_reader(t)
    reader.read_until(lambda records: len(records) >= len(inputs) or not proc.alive(), 120 + EXAMPLES / 50,
                      f"{len(inputs)} outputs")
    assert proc.alive(), f"the service died:\n{proc.log()[-3000:]}"
    with urllib.request.urlopen(f"http://127.0.0.1:{proc.port}/healthz", timeout=5) as r:
        assert r.status == 200, "the service is still turning"
    outputs = stop_and_read(reader, proc, timeout=60)
    assert "Traceback" not in proc.log(), proc.log()[-5000:]

    fates: dict[int, str] = {}
    for out in outputs:
        topic, partition, offset = source_of(out)
        assert topic == t.source
        index = placed[(partition, offset)]
        item = inputs[index]
        assert index not in fates, f"two outputs for {describe(index, item)}"
        assert out.key == item.key, describe(index, item)
        if out.topic == t.destination:
            record = orjson.loads(out.value or b"")
            assert record["decision"] in LABELS and 0.0 <= record["score"] <= 1.0
            fates[index] = "scored"
        else:
            fates[index] = check_dead_letter(out, index, item)
    missing = [describe(i, inputs[i]) for i in range(len(inputs)) if i not in fates]
    assert not missing, f"{len(missing)} inputs without an output, e.g. {missing[:3]}"
    assert len(outputs) == len(inputs), "nothing but one output per input is written"
    wrong = [f"{describe(i, item)} -> {fates[i]}" for i, item in enumerate(inputs)
             if item.expect is not None and fates[i] != item.expect]
    assert not wrong, f"{len(wrong)} unexpected outcomes, e.g. {wrong[:3]}"
    write_report(inputs, fates)


def check_dead_letter(out: Record, index: int, item: FuzzInput) -> str:
    headers = dict(out.header_list)
    reason = (headers.get("streamscore.reason") or b"").decode()
    assert reason in REASONS, f"unknown reason {reason!r} for {describe(index, item)}"
    assert headers.get("streamscore.detail"), describe(index, item)
    original = list(item.headers or [])
    assert list(out.header_list[:len(original)]) == original, f"original headers kept: {describe(index, item)}"
    if reason == "oversize":
        assert item.value is not None and item.value.startswith(out.value or b"")
        assert int(headers["streamscore.value.truncated.from"] or b"") == len(item.value)
    else:
        assert (out.value or b"") == (item.value or b""), f"value kept: {describe(index, item)}"
    return reason


def write_report(inputs: list[FuzzInput], fates: dict[int, str]) -> None:
    path = os.environ.get("STREAMSCORE_TEST_FUZZ_REPORT")
    if not path:
        return
    by_kind: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
    for i, item in enumerate(inputs):
        by_kind[item.kind][fates[i]] += 1
    report = {"inputs": len(inputs), "seed": SEED, "outcomes": dict(collections.Counter(fates.values())),
              "by_kind": {k: dict(v) for k, v in sorted(by_kind.items())}}
    Path(path).write_text(json.dumps(report, indent=2) + "\n")
