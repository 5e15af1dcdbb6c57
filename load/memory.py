"""Resident memory of ``streamscore run`` while it drains backlogs of growing size.

    python -m load.memory --backlogs 1000000 5000000 [--bootstrap-servers host:9092]

For each backlog size: produce N synthetic events to a fresh 4-partition topic, start the
service, sample its RSS every 0.25 s until it has consumed N and committed everything, and
report the maximum. Flat maxima across sizes show the in-flight window bounding memory.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import yaml

from load.benchmark import _scrape, produce_all
from load.run import rss_mb, service_config
from streamscore.broker import EmbeddedBroker, free_port
from streamscore.demo.transactions import TransactionGenerator
from streamscore.engines.kafka_admin import create_topics

CHUNK = 500_000


def drain(bootstrap: str, events: int, workdir: Path, seed: int) -> dict[str, Any]:
    run_id = uuid.uuid4().hex[:6]
    topics = {"in": f"mem-in-{run_id}", "out": f"mem-out-{run_id}", "dlq": f"mem-dlq-{run_id}"}
    create_topics(bootstrap, {topics["in"]: 4, topics["out"]: 4, topics["dlq"]: 1})
    generator = TransactionGenerator(seed=seed)
    for start in range(0, events, CHUNK):
        produce_all(bootstrap, topics["in"], generator.encoded(min(CHUNK, events - start)))
    port = free_port()
    options = argparse.Namespace(max_batch_size=2000, max_wait_ms=20, provider="cpu")
    (workdir / f"{run_id}.yaml").write_text(yaml.safe_dump(service_config(bootstrap, topics, options, port)))
    proc = subprocess.Popen([sys.executable, "-m", "streamscore", "run", "-c", str(workdir / f"{run_id}.yaml")],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    samples: list[float] = []
    started = time.monotonic()
    try:
        while True:
            samples.append(rss_mb(proc.pid))
            values = _scrape(port)
            if values.get("streamscore_events_consumed_total", 0) >= events and \
                    values.get("streamscore_uncommitted_events", 1) == 0:
                break
            if proc.poll() is not None:
                raise SystemExit("streamscore exited while draining")
            time.sleep(0.25)
    finally:
        proc.terminate()
        proc.wait(60)
    return {"backlog": events, "rss_mb_max": round(max(samples), 1),
            "rss_mb_median": round(sorted(samples)[len(samples) // 2], 1),
            "seconds": round(time.monotonic() - started, 1), "samples": len(samples)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backlogs", type=int, nargs="+", default=[1_000_000, 5_000_000])
    parser.add_argument("--bootstrap-servers", default=None)
    parser.add_argument("--output", type=Path, default=Path("load/results/memory.json"))
    args = parser.parse_args()
    results = []
    with contextlib.ExitStack() as stack:
        bootstrap = args.bootstrap_servers or stack.enter_context(EmbeddedBroker()).bootstrap_servers
        workdir = Path(stack.enter_context(tempfile.TemporaryDirectory()))
        for i, n in enumerate(args.backlogs):
            result = drain(bootstrap, n, workdir, seed=i)
            print(f"backlog {n:>10,}: RSS max {result['rss_mb_max']} MB, median {result['rss_mb_median']} MB, "
                  f"drained in {result['seconds']} s", flush=True)
            results.append(result)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
