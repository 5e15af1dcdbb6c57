"""Command line: ``streamscore run|serve|validate|batch|demo|models|broker``. Builds settings and calls in;
no logic.

Exit codes: 0 success; 1 a runtime failure (broker, delivery, unfinished drain); 2 a configuration
error, reported on one line that names the key.
"""

from __future__ import annotations

import argparse
import logging
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path

from streamscore import __version__
from streamscore.commands import optimize, profile
from streamscore.errors import ConfigError, StreamScoreError
from streamscore.logs import configure_logging
from streamscore.registry.commands import add_models_command

log = logging.getLogger("streamscore")

EXIT_FAILURE = 1
EXIT_CONFIG = 2


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    configure_logging(args.log_level or "INFO")
    try:
        return int(args.command(args))
    except ConfigError as exc:
        print(f"streamscore: error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    except StreamScoreError as exc:
        print(f"streamscore: error: {exc}", file=sys.stderr)
        return EXIT_FAILURE


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="streamscore", description="Score Kafka event streams with ONNX models.")
    parser.add_argument("--version", action="version", version=f"streamscore {__version__}")
    parser.add_argument("--log-level", default=None, choices=["DEBUG", "INFO", "WARNING", "ERROR"],
                        help="override the configured log level")
    commands = parser.add_subparsers(required=True, metavar="COMMAND")

    run = commands.add_parser("run", help="consume, score and produce until stopped")
    run.add_argument("-c", "--config", type=Path, required=True, help="YAML configuration file")
    run.add_argument("--workers", type=int, default=1,
                     help="processes in the same consumer group on this host (metrics on port, port+1, ...)")
    run.add_argument("--serve", action="store_true",
                     help="also serve REST (the 'serve' section) beside the consumer, over the same models")
    run.set_defaults(command=_run)

    serve = commands.add_parser("serve", help="serve the models over REST (Open Inference Protocol, /v1/score)")
    serve.add_argument("-c", "--config", type=Path, required=True, help="YAML configuration file")
    serve.set_defaults(command=_serve)

    validate = commands.add_parser("validate", help="check configuration, model and broker, then exit")
    validate.add_argument("-c", "--config", type=Path, required=True, help="YAML configuration file")
    validate.add_argument("--timeout", type=float, default=5.0, help="seconds to wait for the broker")
    validate.add_argument("--skip-broker", action="store_true", help="check configuration and model only")
    validate.set_defaults(command=_validate)

    batch = commands.add_parser("batch", help="score files or a Kafka topic range (the config's batch section)")
    batch.add_argument("-c", "--config", type=Path, required=True, help="YAML configuration file")
    batch.add_argument("--progress", choices=["auto", "bar", "log"], default="auto",
                       help="a progress bar (default on a terminal) or a log line every 10 s")
    batch.add_argument("--workers", type=int, default=None, metavar="N",
                       help="score with N processes, each with its own files or partitions (default: batch.workers)")
    batch.set_defaults(command=_batch)

    demo = commands.add_parser("demo", help="score synthetic card transactions with the demo fraud model")
    demo.add_argument("--bootstrap-servers", default=None, help="use this Kafka cluster instead of the embedded broker")
    demo.add_argument("--events", type=int, default=100_000, help="how many transactions to produce")
    demo.add_argument("--rate", type=float, default=20_000, help="events per second (0: as fast as possible)")
    demo.add_argument("--malformed-rate", type=float, default=0.002, help="fraction of deliberately bad events")
    demo.add_argument("--provider", default=None, choices=["auto", "cpu", "cuda", "tensorrt"])
    demo.add_argument("-c", "--config", type=Path, default=None,
                      help="run this configuration (e.g. examples/cascade.yaml) instead of the packaged one")
    demo.add_argument("--engine", default="confluent-kafka", choices=["confluent-kafka", "faust"],
                      help="faust: a Faust application whose tables compute the activity counts")
    demo.set_defaults(command=_demo)

    add_models_command(commands)

    broker = commands.add_parser("broker", help="run the embedded development broker (Tansu) until Ctrl+C")
    broker.add_argument("--host", default="127.0.0.1")
    broker.add_argument("--port", type=int, default=9092)
    broker.set_defaults(command=_broker)
    profile.register(commands)
    optimize.register(commands)
    return parser


def _load(path: Path, level_override: str | None) -> object:
    from streamscore.config import load_settings

    settings = load_settings(path)
    configure_logging(level_override or settings.log_level, settings.log_format)
    return settings


def _run(args: argparse.Namespace) -> int:
    from streamscore.signals import reload_on_sighup, stop_on_signals

    stop, reload = threading.Event(), threading.Event()
    if args.workers == 1:  # first, before the heavy imports: a stop during start-up is a clean stop
        stop_on_signals(stop)
        reload_on_sighup(reload)
    from streamscore.config import Settings
    from streamscore.service import Service, transactional_id

    settings = _load(args.config, args.log_level)
    assert isinstance(settings, Settings)
    if args.workers > 1:
        if args.serve:
            raise ConfigError("--serve: serves from one process; run without --workers (or 'streamscore serve')")
        from streamscore.workers import run_workers

        return run_workers(args.config, args.workers, settings.metrics.port, args.log_level,
                           transactional_id(settings))
    return Service(settings, serve=args.serve, reload=reload).run(stop)


def _serve(args: argparse.Namespace) -> int:
    from streamscore.config import Settings
    from streamscore.service import serve

    settings = _load(args.config, args.log_level)
    assert isinstance(settings, Settings)
    return serve(settings)


def _validate(args: argparse.Namespace) -> int:
    from streamscore.config import Settings
    from streamscore.plugins import Plugins
    from streamscore.service import assemble

    settings = _load(args.config, args.log_level)
    assert isinstance(settings, Settings)
    parts = assemble(settings, Plugins.default())  # what run builds, refused the same way
    if settings.batch is not None:
        from streamscore.batch.run import check

        check(settings)  # what batch refuses
    try:
        settings.serve.bearer_token()  # what run --serve and serve would read
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    runner = parts.runner
    runner.load()
    parts.challengers.load()
    print(f"config ok: {args.config}")
    print(f"model ok: {runner.name} {runner.version} on {runner.provider}, {settings.feature_width} feature columns")
    if not args.skip_broker:
        parts.engine.check(args.timeout)
        print(f"broker ok: {settings.kafka.bootstrap_servers}, output topics exist")
    return 0


def _batch(args: argparse.Namespace) -> int:
    from streamscore.signals import stop_on_signals

    stop = threading.Event()
    stop_on_signals(stop)
    from streamscore.batch.run import BatchRun
    from streamscore.config import Settings

    settings = _load(args.config, args.log_level)
    assert isinstance(settings, Settings)
    if args.workers is not None and settings.batch is not None:
        if args.workers < 1:
            raise ConfigError(f"--workers: expected a whole number of at least 1, got {args.workers}")
        settings = settings.model_copy(update={"batch": settings.batch.model_copy(update={"workers": args.workers})})
    summary = BatchRun(settings, progress={"auto": None, "bar": True, "log": False}[args.progress]).run(stop)
    print(f"batch {'stopped' if stop.is_set() else 'done'}: {summary.line()}")
    return 0


def _demo(args: argparse.Namespace) -> int:
    from streamscore.demo.run import DemoOptions, run_demo

    if args.log_level is None:  # the progress line and summary are the demo's output
        logging.getLogger().setLevel(logging.WARNING)
    return run_demo(DemoOptions(
        bootstrap_servers=args.bootstrap_servers, events=args.events, rate=args.rate,
        malformed_rate=args.malformed_rate, provider=args.provider, config=args.config, engine=args.engine,
    ))


def _broker(args: argparse.Namespace) -> int:
    from streamscore.broker import EmbeddedBroker

    with EmbeddedBroker(port=args.port, host=args.host) as broker:
        print(f"embedded broker (Tansu, in-memory) on {broker.bootstrap_servers}; Ctrl+C stops it", flush=True)
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
