"""The int8 model that ``streamscore optimize`` writes serves through ``streamscore run`` on a real
broker: one output per input, each naming the int8 model's version (its file's digest)."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path

import orjson
import pytest

from streamscore.demo.transactions import TransactionGenerator
from tests.cli.test_validate import REPO
from tests.integration.test_service import by_key, score_all, valid_events
from tests.support import OutputReader, ServiceProcess, Topics

pytestmark = [pytest.mark.integration, pytest.mark.broker_agnostic]

DEMO = REPO / "streamscore" / "demo"


def test_the_int8_model_serves_through_run(
    bootstrap: str, topics: Callable[..., Topics], write_config: Callable[..., Path],
    service: Callable[..., ServiceProcess], output_reader: Callable[..., OutputReader],
    cli: Callable[..., int], tmp_path: Path,
) -> None:
    sample = tmp_path / "sample.jsonl"
    sample.write_bytes(b"\n".join(orjson.dumps(e) for e in TransactionGenerator(seed=8).events(300)))
    out = tmp_path / "out"
    assert cli("--log-level", "WARNING", "optimize", str(DEMO / "fraud_model.onnx"), "-c", str(DEMO / "config.yaml"),
               "--data", str(sample), "--seconds", "0.01", "--out-dir", str(out)) == 0
    int8 = out / "fraud_model.int8.onnx"

    t = topics()
    inputs = valid_events(1000)
    outputs = score_all(bootstrap, t, write_config(t, model={"path": str(int8)}), service,
                        output_reader, inputs)

    assert all(r.topic == t.destination for r in outputs), "valid events must not be dead-lettered"
    grouped = by_key(outputs)
    assert set(grouped) == {k for k, _, _ in inputs}
    records = [orjson.loads(r.value or b"") for r in outputs]
    assert {r["model_version"] for r in records} == {f"sha256:{hashlib.sha256(int8.read_bytes()).hexdigest()[:12]}"}
