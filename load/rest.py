"""REST benchmark: requests/s and latency percentiles of single-event requests, measured by wrk
(Debian's ``wrk``, a Lua script for the POST body) at several concurrencies, against
``streamscore serve``, the same app under other ASGI servers, and MLServer 1.7 serving the same
ONNX model, one server at a time, in one run.

    python -m load.rest --setup                  # once: MLServer's own environment (load/peers/.venvs)
    python -m load.rest [--duration 10] [--concurrency 1 16 64] [--intra-op-threads 0]
                        [--servers streamscore streamscore-infer mlserver mlserver-worker]

Targets (each server its own process on the demo model, CPU provider):
- ``streamscore``: ``streamscore serve`` itself (Starlette on uvicorn, uvloop, httptools),
  ``POST /v1/score/fraud-demo`` with one JSON transaction (features, model, decision);
- ``streamscore-infer``: the same server, ``POST /v2/models/fraud-demo/infer`` with that
  transaction's feature row as a V2 tensor [1, 15] (model and decision);
- ``uvicorn-h11``: the same app on uvicorn with the asyncio loop and the pure-Python h11 parser;
- ``granian``: the same app on granian (Rust HTTP server, ASGI interface, uvloop);
- ``mlserver``: MLServer 1.7 with the custom runtime ``load/mlserver_onnx.py`` (onnxruntime on the
  same model file, the same intra-op threads, the same score and decision outputs),
  ``parallel_workers: 0`` (one process, as ``streamscore serve``), the model called inline in
  ``predict`` as MLServer's own runtimes do, its adaptive batching set to streamscore's
  ``serve.max_batch_size`` and ``serve.max_wait_ms``; the same ``infer`` body as ``streamscore-infer``;
- ``mlserver-thread``: the same, the model called on one thread of its own (as streamscore does);
- ``mlserver-worker``: the first with ``parallel_workers: 1`` (MLServer's default: inference in one
  worker process beside the HTTP process).
Each row also gives the mean rows per model call (streamscore: ``streamscore_serve_batch_size``;
MLServer: the runtime's ``fraud_batch_rows`` metric), so dynamic batching shows next to the rates,
and the load average of the machine when the row was measured. Needs ``wrk`` on PATH
(``apt-get install wrk``); granian only for its rows (``pip install granian``); MLServer only for
its rows, in its own environment (``--setup``): it is no dependency of streamscore.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import httpx

from load.faults.harness import Topics, parse_metrics, write_config
from load.peers.venvs import COMMON, VENVS, make_venv
from streamscore.broker import free_port
from streamscore.config import load_settings
from streamscore.core.features import FeatureExtractor
from streamscore.demo.transactions import TransactionGenerator

APP_FACTORY = "load.rest_app:app"
CONFIG_VARIABLE = "RESTBENCH_CONFIG"
"""The config file of the app factory (not STREAMSCORE_*, which would be read as a setting)."""
REPO = Path(__file__).resolve().parents[1]
MODEL = "fraud-demo"
MLSERVER_PINS = ["mlserver==1.7.1", "uvloop==0.21.0", "httptools==0.9.0", *COMMON]
"""MLServer's environment, ``load/peers/.venvs/mlserver``: the same onnxruntime as streamscore's, and
httptools, so that MLServer's uvicorn parses HTTP as streamscore's does (uvloop comes with MLServer)."""
MLSERVER_RUNTIME = Path(__file__).with_name("mlserver_onnx.py")


@dataclass(frozen=True)
class Target:
    server: str
    """streamscore, uvicorn-h11, granian or mlserver: what ``running`` starts."""
    path: str
    """The URL path wrk POSTs to."""
    body: str
    """event (one JSON transaction) or tensor (its feature row as a V2 infer request)."""
    workers: int = 0
    """MLServer's ``parallel_workers``."""
    offload: bool = False
    """MLServer runtime: onnxruntime on a thread of its own (as streamscore) rather than inline."""


TARGETS = {
    "streamscore": Target("streamscore", f"/v1/score/{MODEL}", "event"),
    "streamscore-infer": Target("streamscore", f"/v2/models/{MODEL}/infer", "tensor"),
    "uvicorn-h11": Target("uvicorn-h11", f"/v1/score/{MODEL}", "event"),
    "granian": Target("granian", f"/v1/score/{MODEL}", "event"),
    "mlserver": Target("mlserver", f"/v2/models/{MODEL}/infer", "tensor", workers=0),
    "mlserver-thread": Target("mlserver", f"/v2/models/{MODEL}/infer", "tensor", workers=0, offload=True),
    "mlserver-worker": Target("mlserver", f"/v2/models/{MODEL}/infer", "tensor", workers=1),
}
DEFAULT_TARGETS = ["streamscore", "streamscore-infer", "mlserver", "mlserver-thread", "mlserver-worker"]


@dataclass(frozen=True)
class Result:
    target: str
    concurrency: int
    requests_per_s: float
    p50_ms: float
    p99_ms: float
    errors: int
    mean_batch: float | None
    load_average: float
    """The 1-minute load average of the machine right after the wrk run."""


def server_command(server: str, port: int, config: Path) -> list[str]:
    venv = Path(sys.executable).parent
    if server == "streamscore":
        return [sys.executable, "-m", "streamscore", "--log-level", "WARNING", "serve", "-c", str(config)]
    if server == "uvicorn-h11":
        return [str(venv / "uvicorn"), "--factory", APP_FACTORY, "--host", "127.0.0.1", "--port", str(port),
                "--http", "h11", "--loop", "asyncio", "--no-access-log", "--log-level", "warning"]
    if server == "granian":
        return [str(venv / "granian"), "--interface", "asgi", "--factory", APP_FACTORY, "--host", "127.0.0.1",
                "--port", str(port), "--loop", "uvloop", "--no-access-log", "--log-level", "warning"]
    if server == "mlserver":
        mlserver = VENVS / "mlserver" / "bin" / "mlserver"
        if not mlserver.exists():
            raise SystemExit("no environment for MLServer: run python -m load.rest --setup")
        return [str(mlserver), "start", str(config)]
    raise SystemExit(f"unknown server {server!r}")


def mlserver_repository(folder: Path, config: Path, port: int, target: Target) -> Path:
    """An MLServer model repository serving the demo model with ``load/mlserver_onnx.py``, set up
    like ``config``'s streamscore: model file, intra-op threads, decisions and batching."""
    settings = load_settings(config)
    root = folder / f"mlserver-{target.workers}-{target.offload}"
    model = root / MODEL
    model.mkdir(parents=True, exist_ok=True)
    shutil.copy(MLSERVER_RUNTIME, model / MLSERVER_RUNTIME.name)
    (root / "settings.json").write_text(json.dumps({
        "host": "127.0.0.1", "http_port": port, "grpc_port": free_port(), "metrics_port": free_port(),
        "parallel_workers": target.workers, "debug": False}))
    decisions, model_settings = settings.decisions, settings.model
    assert model_settings is not None, "the demo config has one model"
    (model / "model-settings.json").write_text(json.dumps({
        "name": MODEL,
        "implementation": f"{MLSERVER_RUNTIME.stem}.OnnxFraudModel",
        "max_batch_size": settings.serve.max_batch_size,
        "max_batch_time": settings.serve.max_wait_ms / 1000,
        "parameters": {"extra": {
            "model": str(model_settings.path), "intra_op_threads": model_settings.intra_op_threads,
            "score_column": model_settings.score_column, "stats": str(root / "stats.txt"), "offload": target.offload,
            "default": decisions.default,
            "rules": [{"label": r.label, "min_score": r.min_score} for r in decisions.rules]}},
    }))
    return root


@contextlib.contextmanager
def running(target: Target, port: int, config: Path, log: Path) -> Iterator[str]:
    env = {**os.environ, CONFIG_VARIABLE: str(config),
           "PYTHONPATH": os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p)}
    if target.server == "mlserver":  # its own environment: nothing of the project's on its path
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
        env["PYTHONPATH"] = str(config / MODEL)
    with open(log, "ab") as out:
        proc = subprocess.Popen(server_command(target.server, port, config), stdout=out, stderr=subprocess.STDOUT,
                                env=env, cwd=REPO)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"{target.server} did not start: {log.read_text()[-2000:]}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{url}/v2/models/{MODEL}/ready", timeout=1).status_code == 200:
                    break
            time.sleep(0.2)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def bodies(config: Path) -> dict[str, bytes]:
    """One demo transaction as JSON (``event``) and its feature row as a V2 infer request (``tensor``)."""
    event = next(iter(TransactionGenerator(seed=3).encoded(1)))[1]
    extraction = FeatureExtractor(load_settings(config).features).extract([json.loads(event)])
    assert extraction.reasons == [None], extraction.reasons
    row = extraction.matrix[0]
    tensor = {"inputs": [{"name": "features", "datatype": "FP32", "shape": [1, len(row)], "data": row.tolist()}]}
    return {"event": event, "tensor": json.dumps(tensor, separators=(",", ":")).encode()}


def lua_script(body: bytes, path: Path) -> Path:
    escaped = body.decode().replace("\\", "\\\\").replace('"', '\\"')
    path.write_text(f'wrk.method = "POST"\nwrk.body = "{escaped}"\nwrk.headers["Content-Type"] = "application/json"\n')
    return path


_UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0}


def _ms(text: str) -> float:
    number, unit = re.fullmatch(r"([\d.]+)(us|ms|s)", text).groups()  # type: ignore[union-attr]
    return float(number) * _UNITS[unit]


def wrk(url: str, script: Path, concurrency: int, duration: float) -> tuple[float, float, float, int]:
    """(requests/s, p50 ms, p99 ms, non-2xx or socket errors) of one wrk run."""
    out = subprocess.run(["wrk", "-t1", f"-c{concurrency}", f"-d{duration:g}s", "--latency", "-s", str(script), url],
                         capture_output=True, text=True, check=True).stdout
    rate = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    p50 = _ms(re.search(r"\s50%\s+(\S+)", out).group(1))  # type: ignore[union-attr]
    p99 = _ms(re.search(r"\s99%\s+(\S+)", out).group(1))  # type: ignore[union-attr]
    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    socket = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    errors = (int(non2xx.group(1)) if non2xx else 0) + (sum(map(int, socket.groups())) if socket else 0)
    return rate, p50, p99, errors


def batch_totals(url: str, target: Target, served: Path) -> tuple[float, float]:
    """(rows, model calls) so far: streamscore's ``streamscore_serve_batch_size`` histogram, or
    the totals the MLServer runtime writes to ``stats.txt`` in its repository."""
    if target.server == "mlserver":
        stats = served / "stats.txt"
        rows, calls = stats.read_text().split() if stats.exists() else ("0", "0")
        return float(rows), float(calls)
    values = parse_metrics(httpx.get(f"{url}/metrics", timeout=10).text)
    return values.get("streamscore_serve_batch_size_sum", 0.0), values.get("streamscore_serve_batch_size_count", 0.0)


def measure(name: str, concurrencies: list[int], duration: float, intra_op_threads: int,
            folder: Path) -> list[Result]:
    target = TARGETS[name]
    port = free_port()
    config = write_config(folder, "127.0.0.1:1", Topics("in", "out", "dlq", "g", 1),
                          serve={"host": "127.0.0.1", "port": port}, model={"intra_op_threads": intra_op_threads})
    script = lua_script(bodies(config)[target.body], folder / f"{target.body}.lua")
    served = mlserver_repository(folder, config, port, target) if target.server == "mlserver" else config
    results = []
    with running(target, port, served, folder / f"{name}.log") as url:
        wrk(url + target.path, script, 4, 2)  # warm-up
        for c in concurrencies:
            rows0, calls0 = batch_totals(url, target, served)
            rate, p50, p99, errors = wrk(url + target.path, script, c, duration)
            load = os.getloadavg()[0]
            time.sleep(0.3)  # the MLServer runtime writes its totals every 0.1 s
            rows1, calls1 = batch_totals(url, target, served)
            mean_batch = (rows1 - rows0) / (calls1 - calls0) if calls1 > calls0 else None
            results.append(Result(name, c, rate, p50, p99, errors, mean_batch, load))
            batch = f"{mean_batch:.1f}" if mean_batch is not None else "n/a"
            print(f"  {name} c={c}: {rate:,.0f} req/s, p50 {p50:.2f} ms, p99 {p99:.2f} ms, "
                  f"{batch} rows/call, {errors} errors, load average {load:.1f}", flush=True)
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per wrk run")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 16, 64])
    parser.add_argument("--servers", nargs="+", choices=list(TARGETS), default=DEFAULT_TARGETS)
    parser.add_argument("--intra-op-threads", type=int, default=0,
                        help="onnxruntime intra-op threads of every server (0: onnxruntime's default)")
    parser.add_argument("--setup", action="store_true", help="make MLServer's environment first")
    parser.add_argument("--output", type=Path, default=Path("load/results/rest.json"))
    args = parser.parse_args()
    if args.setup:
        make_venv("mlserver", MLSERVER_PINS)
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not on PATH: apt-get install wrk")
    print(f"python {platform.python_version()}, {os.cpu_count()} CPUs, {platform.processor() or platform.machine()}, "
          f"load average {os.getloadavg()[0]:.1f}", flush=True)
    results: list[Result] = []
    with tempfile.TemporaryDirectory(prefix="restbench-") as tmp:
        for name in args.servers:
            results += measure(name, args.concurrency, args.duration, args.intra_op_threads, Path(tmp))
    print("\n| target | concurrency | requests/s | p50 ms | p99 ms | rows per model call | errors | load average |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for r in results:
        batch = f"{r.mean_batch:.1f}" if r.mean_batch is not None else "n/a"
        print(f"| {r.target} | {r.concurrency} | {r.requests_per_s:,.0f} | {r.p50_ms:.2f} | {r.p99_ms:.2f} | "
              f"{batch} | {r.errors} | {r.load_average:.1f} |")
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps({"cpus": os.cpu_count(), "intra_op_threads": args.intra_op_threads,
                                       "results": [asdict(r) for r in results]}, indent=2) + "\n")
    print(f"figures written to {args.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
