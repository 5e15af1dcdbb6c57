"""Shadow and canary on the real broker, in one run: the shadow's records go to its own topic only
(one per scored event, never in the score topic), agreement is exported; the canary scores and
decides for exactly the keys its share takes. A missing shadow topic is refused before the run."""

from __future__ import annotations

from collections.abc import Callable
from importlib.resources import as_file, files
from pathlib import Path

import orjson
import pytest

from streamscore.config import load_settings
from streamscore.core.challengers import canary_rows
from streamscore.engines.kafka_admin import create_topics
from streamscore.errors import BrokerError
from streamscore.plugins import Plugins
from streamscore.service import assemble
from tests.integration.test_graph import linear_model
from tests.integration.test_service import all_done, by_key, valid_events
from tests.support import OutputReader, ServiceProcess, Topics, metric, produce, stop_and_read, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.broker_agnostic]


def test_shadow_writes_only_its_own_topic_and_the_canary_decides_for_its_keys(
    bootstrap: str, topics: Callable[..., Topics], write_config: Callable[..., Path],
    service: Callable[..., ServiceProcess], tmp_path: Path,
) -> None:
    t = topics()
    shadow_topic = f"{t.destination}-shadow"
    with as_file(files("streamscore.demo") / "fraud_model.onnx") as demo:
        shadow = {"path": str(demo), "name": "shadow", "version": "s1", "provider": "cpu",
                  "score_output": "probabilities"}
    canary = {"path": str(linear_model(tmp_path / "linear.onnx")), "name": "canary", "version": "c1",
              "provider": "cpu"}
    config = write_config(t, shadow={"model": shadow, "topic": shadow_topic}, canary={"model": canary, "share": 0.25})
    with pytest.raises(BrokerError, match=rf"^shadow.topic: topic '{shadow_topic}' does not exist"):
        assemble(load_settings(config, env={}), Plugins.default()).engine.check(10)  # what validate checks
    create_topics(bootstrap, {shadow_topic: 2})
    inputs = valid_events(800)
    produce(bootstrap, t.source, inputs)
    proc = service(config)
    proc.wait_ready()
    wait_for(all_done(proc, len(inputs)), 60, f"{len(inputs)} inputs consumed and committed")
    metrics = proc.metrics()
    records = stop_and_read(OutputReader(bootstrap, [t.destination, t.dead_letter, shadow_topic]).start(), proc)

    scores = by_key([r for r in records if r.topic == t.destination])
    shadows = by_key([r for r in records if r.topic == shadow_topic])
    keys = [k for k, _, _ in inputs]
    assert set(scores) == set(shadows) == set(keys), "one score and one shadow record per input"
    taken = dict(zip(keys, canary_rows(keys, 0.25).tolist(), strict=True))
    assert 0 < sum(taken.values()) < len(keys)
    for key in keys:
        body = orjson.loads(scores[key][0].value or b"")
        assert body["model"] == ("canary" if taken[key] else "fraud-demo"), "never the shadow"
        side = orjson.loads(shadows[key][0].value or b"")
        assert (side["model"], side["model_version"]) == ("shadow", "s1")
        assert side["champion"] == {"score": body["score"], "decision": body["decision"]}
    assert metric(metrics, "streamscore_shadow_compared_total") >= len(keys)
    assert metric(metrics, "streamscore_canary_events_total") >= sum(taken.values())
    assert 0 <= metric(metrics, "streamscore_shadow_decision_agreement_ratio") <= 1
