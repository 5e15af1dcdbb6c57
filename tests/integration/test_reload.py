"""Hot reload on the real broker: under a steady input stream, a registry alias moved to a broken
version leaves the old one serving (a log line and a metric), moved to a good one swaps it in, and
SIGHUP reloads on request; nothing is lost and, per partition, the versions in offset order change
once (no batch mixes them)."""

from __future__ import annotations

import collections
import signal
from collections.abc import Callable
from importlib.resources import as_file, files
from pathlib import Path

import orjson
import pytest

from load.faults.harness import InputStream, account, outputs_of
from streamscore.registry import ModelMetadata, Registry
from tests.cli.test_validate import DEMO, linear_model
from tests.integration.test_service import all_done, valid_events
from tests.support import OutputReader, ServiceProcess, Topics, metric, produce, stop_and_read, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.broker_agnostic]


def registry(root: Path, tmp_path: Path) -> Registry:
    """fraud@1 the demo model, @2 a linear model, @3 one of the wrong width; production -> 1."""
    reg = Registry(root)
    names = [f["name"] for f in DEMO["features"]]
    meta = ModelMetadata(features=names, score_output="probabilities", score_column=1)
    with as_file(files("streamscore.demo") / "fraud_model.onnx") as demo:
        reg.publish("fraud", "1", Path(demo), meta)
    reg.publish("fraud", "2", linear_model(tmp_path / "two.onnx", 15), meta)
    reg.publish("fraud", "3", linear_model(tmp_path / "three.onnx", 14), meta)
    reg.set_alias("fraud", "production", "1")
    return reg


def test_hot_reload_under_load_loses_nothing_and_never_mixes_versions(
    bootstrap: str, topics: Callable[..., Topics], write_config: Callable[..., Path],
    service: Callable[..., ServiceProcess], output_reader: Callable[..., OutputReader], tmp_path: Path,
) -> None:
    reg = registry(tmp_path / "registry", tmp_path)
    t = topics()
    config = write_config(t, model={"path": "registry:fraud@production", "name": "fraud"},
                          registry={"root": str(reg.root)}, reload={"watch": True, "interval_s": 0.2},
                          batching={"max_batch_size": 100})
    proc = service(config)
    proc.wait_ready()
    stream = InputStream(bootstrap, t.source, 2_000, rate=500).start()

    def reloads(result: str, at_least: int = 1) -> Callable[[], bool]:
        return lambda: metric(proc.metrics(), "streamscore_model_reloads_total", f'{{result="{result}"}}') >= at_least

    wait_for(lambda: metric(proc.metrics(), "streamscore_events_scored_total") >= 300, 60, "scoring under way")
    reg.set_alias("fraud", "production", "3")
    wait_for(reloads("failed"), 60, "the broken version refused")
    assert ("model reload failed (model: fraud@3), the serving version stays: features: the spec gives 15 "
            "columns but model input 'features' expects 14") in proc.log()
    reg.set_alias("fraud", "production", "2")
    wait_for(reloads("ok"), 60, "version 2 swapped in")
    proc.signal(signal.SIGHUP)  # a reload on request, nothing changed: version 2 again, still serving
    wait_for(reloads("ok", 2), 60, "a second swap after SIGHUP")
    stream.join()
    tail = valid_events(200, seed=99)  # inputs that surely come after the swap
    produce(bootstrap, t.source, tail)
    total = len(stream.ids) + len(tail)
    wait_for(all_done(proc, total), 60, f"{total} inputs consumed and committed")
    records = stop_and_read(output_reader(t), proc)

    ids = stream.ids | {k for k, _, _ in tail}
    acct = account(outputs_of(records, t), t, frozenset(ids))
    assert (acct.lost, acct.unknown) == (0, 0), acct
    by_partition: dict[int, list[tuple[int, str]]] = collections.defaultdict(list)
    for r in records:
        if r.topic == t.destination:
            body = orjson.loads(r.value or b"")
            by_partition[body["source"]["partition"]].append((body["source"]["offset"], body["model_version"]))
    versions = {v for scored in by_partition.values() for _, v in scored}
    assert versions == {"1", "2"}, versions
    for scored in by_partition.values():
        in_order = [v for _, v in sorted(set(scored))]
        assert in_order == sorted(in_order), "per partition, version 1 then version 2: the swap fell between batches"
