"""REST benchmark: requests/s and latency percentiles of single-event ``/v1/score`` requests, measured
by wrk (Debian's ``wrk``, a Lua script for the POST body) at several concurrencies, against the
same app under several ASGI servers.

    python -m load.rest [--duration 10] [--concurrency 1 16 64] [--servers streamscore uvicorn-h11 granian]

Servers (each its own process, one at a time, on the demo model, CPU provider):
- ``streamscore``: ``streamscore serve`` itself: Starlette on uvicorn with uvloop and httptools;
- ``uvicorn-h11``: the same app on uvicorn with the asyncio loop and the pure-Python h11 parser;
- ``granian``: the same app on granian (Rust HTTP server, ASGI interface, uvloop).
Each row also gives the mean events per model call (``streamscore_serve_batch_size``), so the
effect of dynamic batching under concurrency shows next to the rates. Needs ``wrk`` on PATH
(``apt-get install wrk``); granian only for its rows (``pip install granian``).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx

from load.faults.harness import Topics, parse_metrics, write_config
from streamscore.broker import free_port
from streamscore.demo.transactions import TransactionGenerator

APP_FACTORY = "load.rest_app:app"
CONFIG_VARIABLE = "RESTBENCH_CONFIG"
"""The config file of the app factory (not STREAMSCORE_*, which would be read as a setting)."""
REPO = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Result:
    server: str
    concurrency: int
    requests_per_s: float
    p50_ms: float
    p99_ms: float
    errors: int
    mean_batch: float


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
    raise SystemExit(f"unknown server {server!r}")


@contextlib.contextmanager
def running(server: str, port: int, config: Path, log: Path) -> Iterator[str]:
    env = {**os.environ, CONFIG_VARIABLE: str(config),
           "PYTHONPATH": os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p)}
    with open(log, "ab") as out:
        proc = subprocess.Popen(server_command(server, port, config), stdout=out, stderr=subprocess.STDOUT, env=env,
                                cwd=REPO)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"{server} did not start: {log.read_text()[-2000:]}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{url}/v2/health/ready", timeout=1).status_code == 200:
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


def lua_script(body: bytes, folder: Path) -> Path:
    path = folder / "post.lua"
    escaped = body.decode().replace("\\", "\\\\").replace('"', '\\"')
    path.write_text(f'wrk.method = "POST"\nwrk.body = "{escaped}"\nwrk.headers["Content-Type"] = "application/json"\n')
    return path


_UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0}


def _ms(text: str) -> float:
    number, unit = re.fullmatch(r"([\d.]+)(us|ms|s)", text).groups()  # type: ignore[union-attr]
    return float(number) * _UNITS[unit]


def wrk(url: str, script: Path, concurrency: int, duration: float) -> tuple[float, float, float, int]:
    """(requests/s, p50 ms, p99 ms, non-2xx or socket errors) of one wrk run."""
    out = subprocess.run(["wrk", "-t1", f"-c{concurrency}", f"-d{duration:g}s", "--latency", "-s", str(script),
                          f"{url}/v1/score/fraud-demo"], capture_output=True, text=True, check=True).stdout
    rate = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    p50 = _ms(re.search(r"\s50%\s+(\S+)", out).group(1))  # type: ignore[union-attr]
    p99 = _ms(re.search(r"\s99%\s+(\S+)", out).group(1))  # type: ignore[union-attr]
    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    socket = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    errors = (int(non2xx.group(1)) if non2xx else 0) + (sum(map(int, socket.groups())) if socket else 0)
    return rate, p50, p99, errors


def batch_totals(url: str) -> tuple[float, float]:
    values = parse_metrics(httpx.get(f"{url}/metrics", timeout=10).text)
    return values.get("streamscore_serve_batch_size_sum", 0.0), values.get("streamscore_serve_batch_size_count", 0.0)


def measure(server: str, concurrencies: list[int], duration: float, folder: Path) -> list[Result]:
    port = free_port()
    config = write_config(folder, "127.0.0.1:1", Topics("in", "out", "dlq", "g", 1),
                          serve={"host": "127.0.0.1", "port": port})
    body = next(iter(TransactionGenerator(seed=3).encoded(1)))[1]
    script = lua_script(body, folder)
    results = []
    with running(server, port, config, folder / f"{server}.log") as url:
        wrk(url, script, 4, 2)  # warm-up
        for c in concurrencies:
            events0, calls0 = batch_totals(url)
            rate, p50, p99, errors = wrk(url, script, c, duration)
            events1, calls1 = batch_totals(url)
            mean_batch = (events1 - events0) / max(calls1 - calls0, 1)
            results.append(Result(server, c, rate, p50, p99, errors, mean_batch))
            print(f"  {server} c={c}: {rate:,.0f} req/s, p50 {p50:.2f} ms, p99 {p99:.2f} ms, "
                  f"{mean_batch:.1f} events/call, {errors} errors", flush=True)
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per wrk run")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 16, 64])
    parser.add_argument("--servers", nargs="+", default=["streamscore", "uvicorn-h11", "granian"])
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not on PATH: apt-get install wrk")
    print(f"python {platform.python_version()}, {os.cpu_count()} CPUs, {platform.processor() or platform.machine()}")
    results: list[Result] = []
    with tempfile.TemporaryDirectory(prefix="restbench-") as tmp:
        for server in args.servers:
            results += measure(server, args.concurrency, args.duration, Path(tmp))
    print("\n| server | concurrency | requests/s | p50 ms | p99 ms | events per model call | errors |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for r in results:
        print(f"| {r.server} | {r.concurrency} | {r.requests_per_s:,.0f} | {r.p50_ms:.2f} | {r.p99_ms:.2f} | "
              f"{r.mean_batch:.1f} | {r.errors} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
