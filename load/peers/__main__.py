"""Side by side with the peers: streamscore, a tight confluent-kafka loop, Quix Streams, Bytewax
and Faust on the same job, the same broker and the same backlog, in one run.

    python -m load.peers --setup                 # once: one virtual environment per peer
    python -m load.peers --events 500000 [--variants streamscore tight bytewax quix faust]

The backlog (demo transactions, 0.2% malformed, 4 partitions) is produced once; each variant then
drains it from the start on its own output and dead-letter topics and its own consumer group.
streamscore runs as ``streamscore run`` with the demo configuration (``load.benchmark``); each
peer runs as a script in ``load/peers/`` with its own environment's Python and the shared scorer
(``load/peers/scoring.py``). Every variant's outputs are read back and validated (one output per
input key, scores equal to the first variant's), and its group's committed offsets compared with
the end of the input. JSON in ``load/results/peers.json``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import subprocess
import tempfile
import uuid
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer, TopicPartition

from load.benchmark import PARTITIONS, produce_all, streamscore
from load.kafka_io import OutputReader, ReadTimeout
from load.peers.job import write_job
from load.peers.validate import validate
from load.peers.venvs import COMMON, VENVS, make_venv
from streamscore.broker import EmbeddedBroker
from streamscore.demo.transactions import TransactionGenerator
from streamscore.engines.kafka_admin import create_topics

HERE = Path(__file__).parent
PEERS: dict[str, tuple[str, list[str]]] = {
    "tight": ("tight_loop.py", ["confluent-kafka==2.16.1"]),
    "bytewax": ("bytewax_flow.py", ["bytewax[kafka]==0.21.1"]),
    "quix": ("quix_app.py", ["quixstreams==3.28.1"]),  # pulls confluent-kafka 2.12.x (<2.13)
    "faust": ("faust_app.py", ["faust-streaming==0.15.3"]),  # aiokafka 0.14
}
"""Peer -> (script in load/peers, pinned requirements besides ``COMMON``)."""
VARIANTS = ["streamscore", *PEERS]
COMMITS = {"streamscore": True, "tight": True, "bytewax": False, "quix": True, "faust": True}
"""Whether the variant commits its input offsets to Kafka (Bytewax keeps positions only in its
recovery snapshots)."""


def setup(peers: list[str]) -> None:
    """One virtual environment per peer under ``load/peers/.venvs``; rebuilt when its pins change."""
    for peer in peers:
        make_venv(peer, [*PEERS[peer][1], *COMMON])


def run_peer(peer: str, bootstrap: str, topics: dict[str, str], group: str, total: int, workdir: Path,
             timeout: float) -> float:
    """The peer's script in its environment; returns its own timing (first consumed -> done)."""
    python = VENVS / peer / "bin" / "python"
    if not python.exists():
        raise RuntimeError(f"no environment for {peer}: run python -m load.peers --setup")
    result, log = workdir / f"{peer}.json", workdir / f"{peer}.log"
    command = [str(python), str(HERE / PEERS[peer][0]), "--bootstrap", bootstrap, "--source", topics["source"],
               "--out", topics["out"], "--dlq", topics["dlq"], "--group", group, "--job", str(workdir / "job.json"),
               "--result", str(result), "--events", str(total)]
    with log.open("wb") as err:
        try:
            code = subprocess.run(command, stdout=err, stderr=subprocess.STDOUT, timeout=timeout,
                                  check=False).returncode
        except subprocess.TimeoutExpired as exc:
            raise RuntimeError(f"{peer} ran past {timeout:g} s; see {log}:\n{_tail(log)}") from exc
    if code != 0 or not result.exists():
        raise RuntimeError(f"{peer} exited with {code}; {log}:\n{_tail(log)}")
    timing = json.loads(result.read_text())
    return float(timing["ended"] - timing["started"])


READ_FETCH_WAIT_MS = 2000
"""``fetch.wait.max.ms`` of the consumer that reads a variant's outputs back (no variant's own
setting). The embedded broker (Tansu 0.6) answers a fetch with what it has found when this wait
runs out, and finding the batch at an offset takes it longer the more record batches the
partition holds: with 10 or 100 ms, a partition of 125,000 one-record batches came back empty on
every fetch (Quix Streams and Faust write their outputs in batches of a few records each), and the
read stalled. The cost: the broker holds a fetch it has data for too, but each answer carries
up to 5 MB, so a 500,000-output read takes about a minute."""


def read_outputs(bootstrap: str, out: str, dlq: str,
                 timeout: float = 300.0) -> list[tuple[bool, bytes | None, bytes | None]]:
    """Every record of ``out`` and ``dlq`` from the start to the end of each partition (the shared
    ``OutputReader.read_to_end``: an exact end, so duplicates are read too, and no group to join).
    A read that does not reach the end within ``timeout`` is reported; what it read is validated."""
    with OutputReader(bootstrap, [out, dlq], fetch_wait_ms=READ_FETCH_WAIT_MS) as reader:
        try:
            reader.read_to_end(timeout)
        except ReadTimeout as exc:
            print(f"reading {out}, {dlq}: {exc}", flush=True)
        return [(r.topic == out, r.key, r.value) for r in reader.records]


def committed(bootstrap: str, group: str, source: str, ends: dict[int, int]) -> bool:
    """Whether the group's committed offsets reach the end of every input partition."""
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False})
    try:
        offsets = c.committed([TopicPartition(source, p) for p in ends], timeout=10)
    finally:
        c.close()
    return all(tp.offset >= ends[tp.partition] for tp in offsets)


def measure(variant: str, bootstrap: str, topics: dict[str, str], total: int, workdir: Path,
            timeout: float) -> tuple[float, str]:
    group = f"peers-{variant}-{uuid.uuid4().hex[:6]}"
    if variant == "streamscore":
        rate = streamscore(bootstrap, topics["source"], topics["out"], topics["dlq"], total, workdir, group=group)
        return total / rate, group
    return run_peer(variant, bootstrap, topics, group, total, workdir, timeout), group


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=500_000)
    parser.add_argument("--variants", nargs="+", choices=VARIANTS, default=VARIANTS)
    parser.add_argument("--setup", action="store_true", help="make the peers' environments first")
    parser.add_argument("--bootstrap-servers", default=None, help="default: an embedded broker")
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds a peer may run")
    parser.add_argument("--output", type=Path, default=Path("load/results/peers.json"))
    args = parser.parse_args()
    if args.setup:
        setup([v for v in args.variants if v in PEERS])
    with contextlib.ExitStack() as stack:
        bootstrap = args.bootstrap_servers or stack.enter_context(EmbeddedBroker()).bootstrap_servers
        workdir = Path(stack.enter_context(tempfile.TemporaryDirectory()))
        results = run_all(args, bootstrap, workdir)
    report = {"events": args.events, "partitions": PARTITIONS,
              "broker": args.bootstrap_servers or "embedded (Tansu)",
              "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()},
              "variants": results}
    print_table(results)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(report, indent=2) + "\n")
    print(f"figures written to {args.output}")
    if any(not r.get("valid") for r in results.values()):
        raise SystemExit(1)


def run_all(args: argparse.Namespace, bootstrap: str, workdir: Path) -> dict[str, dict[str, Any]]:
    run = uuid.uuid4().hex[:6]
    source = f"peers-in-{run}"
    topics = {v: {"source": source, "out": f"peers-{v}-{run}", "dlq": f"peers-{v}-dlq-{run}"} for v in args.variants}
    create_topics(bootstrap, {source: PARTITIONS, **{t: PARTITIONS for v in topics.values()
                                                     for t in (v["out"], v["dlq"])}})
    write_job(workdir / "job.json")
    print(f"producing {args.events:,} events to {source} ...", flush=True)
    items = TransactionGenerator(seed=42, malformed_rate=0.002).encoded(args.events)
    ends = produce_all(bootstrap, source, items)
    keys = [key for key, _ in items]
    del items
    results: dict[str, dict[str, Any]] = {}
    reference = None
    for variant in args.variants:
        print(f"{variant} ...", flush=True)
        try:
            elapsed, group = measure(variant, bootstrap, topics[variant], args.events, workdir, args.timeout)
        except (RuntimeError, SystemExit) as exc:
            print(f"{variant} failed: {exc}", flush=True)
            results[variant] = {"error": str(exc)}
            continue
        records = read_outputs(bootstrap, topics[variant]["out"], topics[variant]["dlq"])
        verdict, scores = validate(keys, records, reference)
        reference = reference if reference is not None else scores
        results[variant] = {"events_per_second": round(args.events / elapsed), "seconds": round(elapsed, 3),
                            "valid": verdict.ok, "validation": verdict.as_dict(),
                            "offsets_committed": committed(bootstrap, group, source, ends) if COMMITS[variant]
                            else None}
    return results


def print_table(results: dict[str, dict[str, Any]]) -> None:
    print(f"\n{'variant':<12} {'events/s':>10} {'seconds':>8} {'outputs':>9} {'scored':>9} {'dead':>6}  "
          f"{'valid':<5} offsets committed")
    for name, r in results.items():
        if "error" in r:
            print(f"{name:<12} failed: {r['error'].splitlines()[0]}")
            continue
        v = r["validation"]
        commit = {True: "yes", False: "NO", None: "n/a (does not commit)"}[r["offsets_committed"]]
        print(f"{name:<12} {r['events_per_second']:>10,} {r['seconds']:>8.2f} {v['outputs']:>9,} {v['scored']:>9,} "
              f"{v['dead_lettered']:>6,}  {'yes' if r['valid'] else 'NO':<5} {commit}")
        for example in v["examples"]:
            print(f"{'':<12} {example}")


def _tail(path: Path, lines: int = 15) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


if __name__ == "__main__":
    main()
