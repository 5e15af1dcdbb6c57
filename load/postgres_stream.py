"""The stream into PostgreSQL: ``streamscore run`` with one ``postgresql`` destination draining a
backlog, timed from ready until every event is consumed and committed (each committed offset's row
is in the table by then), rows counted afterwards.

    python -m load.postgres_stream --events 200000 [--max-rows 5000] [--destination kafka]

``--destination kafka`` runs the same with the score topic instead, for a baseline taken under the
same conditions.

Starts the broker of ``STREAMSCORE_TEST_BROKER`` (default: the embedded one) and a PostgreSQL server
(``load.postgres``) in a temporary folder, and removes both at the end.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import psycopg

from load.brokers import make_broker
from load.faults.harness import InputStream, ServiceProcess, make_topics, parse_metrics, rss_mb, write_config
from load.postgres import PostgresServer, binaries


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--max-rows", type=int, default=5000, help="options.max_rows: records per transaction")
    parser.add_argument("--destination", choices=["postgresql", "kafka"], default="postgresql")
    args = parser.parse_args()
    bin_dir = binaries()
    if bin_dir is None:
        raise SystemExit("PostgreSQL is not installed")
    workdir = Path(tempfile.mkdtemp(prefix="pg-stream-"))
    server = PostgresServer(bin_dir).init().start()
    try:
        with make_broker(workdir / "broker") as broker:
            t = make_topics(broker.bootstrap_servers, 4, prefix="pgbench")
            InputStream(broker.bootstrap_servers, t.source, args.events).run()
            destination = ({"kind": "postgresql", "options": {"dsn": server.dsn, "table": "bench_scores",
                                                              "max_rows": args.max_rows}}
                           if args.destination == "postgresql" else {"kind": "kafka"})
            config = write_config(workdir, broker.bootstrap_servers, t, batching={"max_batch_size": 2000},
                                  destinations=[destination])
            proc = ServiceProcess(config, workdir / "service.log").start()
            try:
                proc.wait_ready(120)
                started, peak = time.monotonic(), 0.0
                while True:
                    peak = max(peak, rss_mb(proc.pid))
                    m = proc.scrape()
                    if (m.get("streamscore_events_consumed_total", 0) >= args.events
                            and m.get("streamscore_uncommitted_events", 1) == 0):
                        break
                    if not proc.alive():
                        raise SystemExit(f"the service exited:\n{proc.log_tail()}")
                    time.sleep(0.2)
                seconds = time.monotonic() - started
                final = parse_metrics(proc.metrics())
            finally:
                proc.kill()
        rows = final.get("streamscore_events_scored_total", 0)
        if args.destination == "postgresql":
            with psycopg.connect(server.dsn) as conn:
                rows = conn.execute("SELECT count(*) FROM bench_scores").fetchone()[0]  # type: ignore[index]
        print(json.dumps({"events": args.events, "rows": rows, "seconds": round(seconds, 1),
                          "events_per_s": round(args.events / seconds), "rows_per_s": round(rows / seconds),
                          "scored": final.get("streamscore_events_scored_total"), "peak_rss_mb": round(peak),
                          "destination": args.destination, "max_rows": args.max_rows}, indent=2))
    finally:
        server.remove()


if __name__ == "__main__":
    main()
