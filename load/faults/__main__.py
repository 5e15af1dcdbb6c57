"""Run the fault scenarios at full size and print the reliability table.

    python -m load.faults                                   # every scenario, full sizes
    python -m load.faults --scenario kill9 --events 200000 --faults 10 --json out.json
    python -m load.faults --size ci                         # the sizes the pytest suite uses
    python -m load.faults --broker kafka                    # on Apache Kafka (scripts/kafka.sh fetch first)

Against a fresh broker per scenario, Tansu (embedded) unless ``--broker kafka`` (default:
``STREAMSCORE_TEST_BROKER``); the freeze and unwritable-destination scenarios always start their
own, ``--bootstrap-servers`` runs the others on an external cluster. The broker-crash scenarios
(``broker-kill9``, ``destination-deleted``, ``oversize-output[-exactly-once][-faust]``) run on Apache Kafka only, on a
broker of their own; on Tansu they are skipped.
Exits 1 when any scenario breaks an invariant (lost events, duplicates past the bound, ...).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import tempfile
import time
from pathlib import Path

from load.brokers import KINDS, broker_kind
from load.faults.catalog import SCENARIOS
from load.faults.scenarios import Env, Result, Size


def command(name: str, size: Size) -> str:
    rate = f" --rate {size.rate:g}" if size.rate else ""
    return f"python -m load.faults --scenario {name} --events {size.events} --faults {size.faults}{rate}"


def row(result: Result, cmd: str) -> str:
    return (f"| {result.scenario} | {result.runs} | {result.events:,} | {result.faults} | {result.lost} | "
            f"{result.duplicated:,} (bound {result.duplicate_bound:,}) | `{cmd}` |")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scenario", action="append", choices=sorted(SCENARIOS),
                        help="scenario to run (repeatable; default: all)")
    parser.add_argument("--size", choices=["ci", "full"], default="full")
    parser.add_argument("--events", type=int, help="override the input events")
    parser.add_argument("--faults", type=int, help="override the number of faults injected")
    parser.add_argument("--rate", type=float, help="override the input rate (events/s; 0 = backlog first)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--bootstrap-servers", default=None)
    parser.add_argument("--broker", choices=KINDS, default=None,
                        help="broker each scenario starts (default: STREAMSCORE_TEST_BROKER, else tansu)")
    parser.add_argument("--keep", action="store_true", help="keep the service and broker logs")
    parser.add_argument("--json", type=Path, help="write the results here")
    args = parser.parse_args()

    rows, results, failed = [], [], False
    workdir = Path(tempfile.mkdtemp(prefix="streamscore-faults-"))
    for name in args.scenario or list(SCENARIOS):
        scenario = SCENARIOS[name]
        size = getattr(scenario, args.size)
        size = dataclasses.replace(size, **{k: v for k, v in (("events", args.events), ("faults", args.faults),
                                                               ("rate", args.rate)) if v is not None})
        kind = args.broker or broker_kind()
        if kind not in scenario.brokers:
            print(f"{name}: skipped (runs on {', '.join(scenario.brokers)} only, not {kind})", flush=True)
            continue
        env = Env(workdir / name, args.bootstrap_servers, args.seed, kind=kind)
        env.workdir.mkdir(parents=True)
        started = time.monotonic()
        try:
            result = scenario.run(env, size)
        finally:
            env.close()
        result.seconds = round(time.monotonic() - started, 1)
        cmd = command(name, size)
        failures = result.failures()
        failed |= bool(failures)
        print(f"{name}: {'FAILED ' + '; '.join(failures) if failures else 'ok'} in {result.seconds} s; "
              f"checks {result.checks}; notes {result.notes}", flush=True)
        rows.append(row(result, cmd))
        results.append({**dataclasses.asdict(result), "name": name, "command": cmd, "failures": failures})
    print("\n| scenario | runs | events | faults injected | lost | duplicated | command |")
    print("| --- | ---: | ---: | --- | ---: | ---: | --- |")
    print("\n".join(rows))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2))
    print(f"logs: {workdir}" if args.keep or failed else "", file=sys.stderr)
    if not (args.keep or failed):
        import shutil

        shutil.rmtree(workdir, ignore_errors=True)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
