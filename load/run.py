"""One command: load generator + ``streamscore run`` + latency probe, with a JSON and PNG report.

    python -m load.run --rate 10000 20000 --duration 60 --broker kafka [--breakdown] [--checkout DIR ...]
    python -m load.run --rate 20000 --bootstrap-servers host:9092 [--max-wait-ms 5] [--max-batch-size 2000]

Against the broker ``--broker`` starts (the embedded Tansu by default, or Apache Kafka through
scripts/kafka.sh), or one that runs already (``--bootstrap-servers``). The service runs as its own
process on fresh topics with the demo's model, features and decisions and otherwise its **default
settings** (batching, consumer, producer) unless an option here sets one; on the embedded broker the
consumer's ``fetch.wait.max.ms`` is 10, as in the demo configuration (Tansu holds a fetch until that
wait runs out; Apache Kafka answers as soon as data is there). Each rate runs in turn; with several
``--checkout`` (``.`` is this one) each rate runs once per checkout, alternately, on the same broker.

``--breakdown`` splits the latency per event (``load.probe.breakdown``): the score topic gets
``message.timestamp.type=LogAppendTime`` and a bare consumer on the input topic records when each
event could first be read, so the report says how long each event took from its event time to a
bare consumer, from there to being scored, to its score record being appended, and to the probe.

Reports land in ``--output-dir`` (``load-<rate>-<duration>s[-<checkout>].json`` and ``.png``).
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
from load.brokers import KINDS, make_broker
from load.generate import LoadGenerator
from load.probe import ArrivalProbe, LatencyProbe, breakdown, summarize
from streamscore.broker import free_port
from streamscore.engines.kafka_admin import create_topics
from streamscore.errors import BrokerError

PARTITIONS = 4
EMBEDDED_FETCH_WAIT_MS = 10
"""The consumer's fetch.wait.max.ms on the embedded broker, as in the demo configuration."""


def service_config(bootstrap: str, topics: dict[str, str], args: argparse.Namespace, port: int,
                   fetch_wait_ms: int | None = EMBEDDED_FETCH_WAIT_MS) -> dict[str, Any]:
    """The demo's model, features and decisions; batching, consumer and producer at their defaults
    except what the options set."""
    with as_file(files("streamscore.demo") / "config.yaml") as demo:
        config = yaml.safe_load(Path(demo).read_text())
        config["model"]["path"] = str(Path(demo).parent / "fraud_model.onnx")
    config["kafka"] = {"bootstrap_servers": bootstrap, "group_id": f"load-{uuid.uuid4().hex[:6]}",
                       "source_topics": [topics["in"]], "destination_topic": topics["out"],
                       "dead_letter_topic": topics["dlq"], "session_timeout_ms": 6000}
    if fetch_wait_ms is not None:
        config["kafka"]["consumer"] = {"fetch.wait.max.ms": fetch_wait_ms}
    if getattr(args, "linger_ms", None) is not None:
        config["kafka"]["producer"] = {"linger.ms": args.linger_ms}
    batching = {"max_batch_size": args.max_batch_size, "max_wait_ms": args.max_wait_ms}
    config["batching"] = {key: value for key, value in batching.items() if value is not None}
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


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time of a process so far."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _kill_if_running(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.kill()


def _make_topics(bootstrap: str, topics: dict[str, str], append_time: bool) -> None:
    create_topics(bootstrap, {topics["in"]: PARTITIONS, topics["dlq"]: 1})
    if append_time:
        try:
            create_topics(bootstrap, {topics["out"]: PARTITIONS}, config={"message.timestamp.type": "LogAppendTime"})
            return
        except BrokerError:
            pass  # a broker without the setting: the breakdown leaves out the rows that need it
    create_topics(bootstrap, {topics["out"]: PARTITIONS})


def _started(probe: LatencyProbe | ArrivalProbe) -> None:
    probe.start()
    if not probe.ready.wait(30):
        raise SystemExit(f"{probe.name} was not assigned its topic in time")


def _mean(metrics: dict[str, float], name: str) -> float | None:
    count = metrics.get(f"{name}_count", 0)
    return round(metrics[f"{name}_sum"] / count, 6) if count else None


def run(args: argparse.Namespace, bootstrap: str, rate: float, checkout: Path | None,
        fetch_wait_ms: int | None) -> dict[str, Any]:
    with contextlib.ExitStack() as stack:
        workdir = Path(stack.enter_context(tempfile.TemporaryDirectory()))
        run_id = uuid.uuid4().hex[:6]
        topics = {"in": f"load-in-{run_id}", "out": f"load-out-{run_id}", "dlq": f"load-dlq-{run_id}"}
        _make_topics(bootstrap, topics, args.breakdown)
        port = free_port()
        config = service_config(bootstrap, topics, args, port, fetch_wait_ms)
        (workdir / "config.yaml").write_text(yaml.safe_dump(config))
        env = {**os.environ, "PYTHONPATH": str(checkout)} if checkout else None
        proc = subprocess.Popen([sys.executable, "-m", "streamscore", "run", "-c", str(workdir / "config.yaml")],
                                stdout=subprocess.DEVNULL, stderr=(workdir / "service.log").open("wb"), env=env)
        stack.callback(_kill_if_running, proc)
        wait_assigned(port, proc)
        probe = LatencyProbe(bootstrap, topics["out"], stages=args.breakdown)
        _started(probe)
        arrivals = ArrivalProbe(bootstrap, topics["in"]) if args.breakdown else None
        if arrivals is not None:
            _started(arrivals)

        generator = LoadGenerator(bootstrap, topics["in"], rate, duration=args.duration, seed=args.seed)
        gen_thread = threading.Thread(target=generator.run, daemon=True)
        gen_thread.start()
        cpu_at_start = cpu_seconds(proc.pid)
        rss: list[float] = []
        with tqdm(total=int(args.duration), unit="s", desc=f"{rate:,.0f} ev/s offered") as bar:
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
        for thread in (probe, arrivals):
            if thread is not None:
                thread.stop_event.set()
                thread.join(10)
        cpu = cpu_seconds(proc.pid) - cpu_at_start
        metrics = _scrape(port)
        proc.send_signal(signal.SIGTERM)
        exit_code = proc.wait(60)

    g, r = generator.stats, probe.result
    for entry in r.timeline:  # seconds since the generator started, as its own per-second counts are
        entry["second"] = round(entry.pop("at") - g.started, 1)
    timeline = [e for e in r.timeline if e["second"] > 0]
    return {
        "config": {"checkout": str(checkout or "."), "rate": rate, "duration_s": args.duration,
                   "max_wait_ms": args.max_wait_ms, "max_batch_size": args.max_batch_size,
                   "linger_ms": args.linger_ms, "fetch_wait_ms": fetch_wait_ms,
                   "provider": args.provider, "partitions": PARTITIONS, "broker": args.broker_name},
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
                    "load_average": os.getloadavg()},
        "generator": {"produced": g.produced, "acknowledged": g.acknowledged, "failed": g.failed,
                      "achieved_rate": round(g.achieved_rate), "per_second": g.per_second},
        "service": {"exit_code": exit_code, "consumed": metrics.get("streamscore_events_consumed_total"),
                    "scored": metrics.get("streamscore_events_scored_total"),
                    "mean_batch_size": _mean(metrics, "streamscore_batch_size"),
                    "mean_inference_s": _mean(metrics, "streamscore_model_inference_seconds"),
                    "commits": metrics.get("streamscore_commits_total"),
                    "cpu_us_per_event": round(cpu / max(1, r.received) * 1e6, 1),
                    "rss_mb_max": round(max(rss, default=0.0), 1)},
        "latency_ms": summarize(r.total),
        "breakdown_ms": breakdown(r.stages, arrivals.data) if r.stages is not None and arrivals is not None else None,
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
                  f"{report['config']['broker']}, checkout {report['config']['checkout']}")
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
    parser.add_argument("--rate", type=float, nargs="+", default=[20_000], help="events/s offered; each in turn")
    parser.add_argument("--duration", type=float, default=60.0)
    parser.add_argument("--max-wait-ms", type=float, default=None, help="default: the service's")
    parser.add_argument("--max-batch-size", type=int, default=None, help="default: the service's")
    parser.add_argument("--linger-ms", type=float, default=None, help="the service producer's (default: the service's)")
    parser.add_argument("--fetch-wait-ms", type=int, default=None,
                        help="the service consumer's (default: the service's; 10 on the embedded broker)")
    parser.add_argument("--provider", default="cpu")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--broker", choices=KINDS, default="tansu", help="the broker to start (default tansu)")
    parser.add_argument("--bootstrap-servers", default=None, help="a broker that runs already (instead of --broker)")
    parser.add_argument("--breakdown", action="store_true", help="split the latency per stage (see above)")
    parser.add_argument("--output-dir", type=Path, default=Path("load/results"))
    parser.add_argument("--checkout", type=Path, action="append", default=None,
                        help="run the service from this checkout of another commit (git worktree add DIR COMMIT); "
                             "repeat to compare, '.' is this one")
    args = parser.parse_args()
    args.broker_name = args.bootstrap_servers or args.broker
    embedded = args.bootstrap_servers is None and args.broker == "tansu"
    fetch_wait_ms = args.fetch_wait_ms if args.fetch_wait_ms is not None or not embedded else EMBEDDED_FETCH_WAIT_MS
    checkouts: list[Path | None] = list(args.checkout or [None])
    args.output_dir.mkdir(parents=True, exist_ok=True)
    reports = []
    with contextlib.ExitStack() as stack:
        bootstrap = args.bootstrap_servers
        if bootstrap is None:
            workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="load-run-")))
            broker = make_broker(workdir, args.broker)
            stack.enter_context(broker)
            bootstrap = broker.bootstrap_servers
        for rate in args.rate:
            for checkout in checkouts:
                report = run(args, bootstrap, rate, checkout, fetch_wait_ms)
                suffix = f"-{_label(checkout)}" if len(checkouts) > 1 else ""
                stem = args.output_dir / f"load-{rate:.0f}-{args.duration:.0f}s{suffix}"
                stem.with_suffix(".json").write_text(json.dumps(report, indent=2) + "\n")
                chart(report, stem.with_suffix(".png"))
                print(f"report: {stem.with_suffix('.json')} and {stem.with_suffix('.png')}")
                reports.append(report)
    print_summary(reports)


def _label(checkout: Path | None) -> str:
    return "this" if checkout is None or checkout.resolve() == Path.cwd().resolve() else checkout.resolve().name


def print_summary(reports: list[dict[str, Any]]) -> None:
    print("\n| checkout | offered | achieved | scored | p50 | p99 | p99.9 | max | mean batch | service CPU/event "
          "| RSS max | load avg |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for r in reports:
        lat, s = r["latency_ms"], r["service"]
        ms = [f"{lat[k]:,.1f} ms" if k in lat else "-" for k in ("p50_ms", "p99_ms", "p99.9_ms", "max_ms")]
        print(f"| {_label(Path(r['config']['checkout']))} | {r['config']['rate']:,.0f}/s "
              f"| {r['generator']['achieved_rate']:,}/s | {r['received']:,} of {r['generator']['acknowledged']:,} "
              f"| {' | '.join(ms)} | {s['mean_batch_size'] or 0:,.0f} | {s['cpu_us_per_event']} µs "
              f"| {s['rss_mb_max']} MB "
              f"| {r['machine']['load_average'][0]:.1f} |")
    for r in reports:
        if r["breakdown_ms"]:
            print(f"\n{_label(Path(r['config']['checkout']))}, {r['config']['rate']:,.0f}/s offered:")
            print("| from -> to | p50 | p99 | p99.9 | max | events |")
            print("| --- | ---: | ---: | ---: | ---: | ---: |")
            for name, row in r["breakdown_ms"].items():
                if row:
                    print(f"| {name} | {row['p50_ms']:,.1f} | {row['p99_ms']:,.1f} | {row['p99.9_ms']:,.1f} "
                          f"| {row['max_ms']:,.1f} | {row['count']:,} |")


if __name__ == "__main__":
    main()
