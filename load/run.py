"""One command: load generator + ``streamscore run`` + latency probe, with a JSON and PNG report.

    python -m load.run --rate 20000 --duration 60 [--max-wait-ms 5] [--bootstrap-servers host:9092] [--checkout DIR]

Against the embedded broker unless a bootstrap server is given. The service runs as its own
process with the demo configuration on fresh topics; the report lands in ``--output-dir``
(``load-<rate>-<duration>s.json`` and ``.png``).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from importlib.resources import as_file, files
from pathlib import Path
from typing import Any

import yaml
from tqdm import tqdm

from load.benchmark import _scrape
from load.generate import LoadGenerator
from load.probe import LatencyProbe, summarize
from streamscore.broker import EmbeddedBroker, free_port
from streamscore.engines.kafka_admin import create_topics

PARTITIONS = 4


def service_config(bootstrap: str, topics: dict[str, str], args: argparse.Namespace, port: int) -> dict[str, Any]:
    with as_file(files("streamscore.demo") / "config.yaml") as demo:
        config = yaml.safe_load(Path(demo).read_text())
        config["model"]["path"] = str(Path(demo).parent / "fraud_model.onnx")
    config["kafka"].update(bootstrap_servers=bootstrap, group_id=f"load-{uuid.uuid4().hex[:6]}",
                           source_topics=[topics["in"]], destination_topic=topics["out"],
                           dead_letter_topic=topics["dlq"], session_timeout_ms=6000)
    config["batching"].update(max_batch_size=args.max_batch_size, max_wait_ms=args.max_wait_ms)
    config["model"]["provider"] = args.provider
    config["metrics"] = {"host": "127.0.0.1", "port": port}
    return config


def wait_assigned(port: int, proc: subprocess.Popen[bytes], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit("streamscore exited at start")
        if _scrape(port).get("streamscore_assigned_partitions", 0) >= PARTITIONS:
            return
        time.sleep(0.1)
    raise SystemExit("streamscore was not assigned its partitions in time")


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def _kill_if_running(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.kill()


def run(args: argparse.Namespace) -> dict[str, Any]:
    with contextlib.ExitStack() as stack:
        bootstrap = args.bootstrap_servers or stack.enter_context(EmbeddedBroker()).bootstrap_servers
        workdir = Path(stack.enter_context(tempfile.TemporaryDirectory()))
        run_id = uuid.uuid4().hex[:6]
        topics = {"in": f"load-in-{run_id}", "out": f"load-out-{run_id}", "dlq": f"load-dlq-{run_id}"}
        create_topics(bootstrap, {topics["in"]: PARTITIONS, topics["out"]: PARTITIONS, topics["dlq"]: 1})
        port = free_port()
        config = service_config(bootstrap, topics, args, port)
        (workdir / "config.yaml").write_text(yaml.safe_dump(config))
        env = {**os.environ, "PYTHONPATH": str(args.checkout)} if args.checkout else None
        proc = subprocess.Popen([sys.executable, "-m", "streamscore", "run", "-c", str(workdir / "config.yaml")],
                                stdout=subprocess.DEVNULL, stderr=(workdir / "service.log").open("wb"), env=env)
        stack.callback(_kill_if_running, proc)
        wait_assigned(port, proc)
        probe = LatencyProbe(bootstrap, topics["out"])
        probe.start()
        if not probe.ready.wait(30):
            raise SystemExit("latency probe was not assigned the score topic in time")

        generator = LoadGenerator(bootstrap, topics["in"], args.rate, duration=args.duration, seed=args.seed)
        gen_thread = threading.Thread(target=generator.run, daemon=True)
        gen_thread.start()
        rss: list[float] = []
        with tqdm(total=int(args.duration), unit="s", desc=f"{args.rate:,.0f} ev/s offered") as bar:
            while gen_thread.is_alive():
                time.sleep(1.0)
                rss.append(rss_mb(proc.pid))
                t = probe.result.timeline
                bar.set_postfix(produced=generator.stats.produced, scored=probe.result.received,
                                p99_ms=t[-1].get("p99_ms", "-") if t else "-")
                bar.update(1)
        deadline = time.monotonic() + 30
        while probe.result.received < generator.stats.acknowledged and time.monotonic() < deadline:
            time.sleep(0.2)
        probe.stop_event.set()
        probe.join(10)
        metrics = _scrape(port)
        proc.send_signal(signal.SIGTERM)
        exit_code = proc.wait(60)

    g, r = generator.stats, probe.result
    for entry in r.timeline:  # seconds since the generator started, as its own per-second counts are
        entry["second"] = round(entry.pop("at") - g.started, 1)
    timeline = [e for e in r.timeline if e["second"] > 0]
    return {
        "config": {"checkout": str(args.checkout or "."), "rate": args.rate, "duration_s": args.duration,
                   "max_wait_ms": args.max_wait_ms,
                   "max_batch_size": args.max_batch_size, "provider": args.provider, "partitions": PARTITIONS,
                   "broker": args.bootstrap_servers or "embedded (Tansu)"},
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()},
        "generator": {"produced": g.produced, "acknowledged": g.acknowledged, "failed": g.failed,
                      "achieved_rate": round(g.achieved_rate), "per_second": g.per_second},
        "service": {"exit_code": exit_code, "consumed": metrics.get("streamscore_events_consumed_total"),
                    "scored": metrics.get("streamscore_events_scored_total"),
                    "rss_mb_max": round(max(rss, default=0.0), 1)},
        "latency_ms": summarize(r.total),
        "received": r.received,
        "throughput_per_second": [e["events"] for e in timeline],
        "timeline": timeline,
    }


def chart(report: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    timeline = report["timeline"]
    seconds = [s["second"] for s in timeline]
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(10, 7), sharex=True)
    top.plot(range(1, len(report["generator"]["per_second"]) + 1), report["generator"]["per_second"], label="produced")
    top.plot(seconds, [s["events"] for s in timeline], label="scored (arrived at probe)")
    top.set_ylabel("events/s")
    top.legend()
    top.set_title(f"streamscore at {report['config']['rate']:,.0f} events/s offered, "
                  f"max_wait_ms={report['config']['max_wait_ms']}")
    for key in ("p50_ms", "p99_ms", "p99.9_ms"):
        bottom.plot(seconds, [s.get(key) for s in timeline], label=key.removesuffix("_ms"))
    bottom.set_ylabel("end-to-end latency (ms)")
    bottom.set_xlabel("second")
    bottom.set_yscale("log")
    bottom.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rate", type=float, default=20_000)
    parser.add_argument("--duration", type=float, default=60.0)
    parser.add_argument("--max-wait-ms", type=float, default=5.0)
    parser.add_argument("--max-batch-size", type=int, default=2000)
    parser.add_argument("--provider", default="cpu")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--bootstrap-servers", default=None)
    parser.add_argument("--output-dir", type=Path, default=Path("load/results"))
    parser.add_argument("--checkout", type=Path, default=None,
                        help="run the service from this checkout of another commit (git worktree add DIR COMMIT)")
    args = parser.parse_args()
    report = run(args)
    args.output_dir.mkdir(parents=True, exist_ok=True)
    stem = args.output_dir / f"load-{args.rate:.0f}-{args.duration:.0f}s"
    stem.with_suffix(".json").write_text(json.dumps(report, indent=2) + "\n")
    chart(report, stem.with_suffix(".png"))
    lat = report["latency_ms"]
    print(f"achieved {report['generator']['achieved_rate']:,} events/s; scored {report['received']:,} of "
          f"{report['generator']['acknowledged']:,}; latency p50 {lat.get('p50_ms')} ms, p99 {lat.get('p99_ms')} ms, "
          f"p99.9 {lat.get('p99.9_ms')} ms, max {lat.get('max_ms')} ms; service RSS max "
          f"{report['service']['rss_mb_max']} MB")
    print(f"report: {stem.with_suffix('.json')} and {stem.with_suffix('.png')}")


if __name__ == "__main__":
    main()
