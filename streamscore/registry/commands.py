"""``streamscore models list|show|validate``: what the registry holds, one version in detail, and a
check of every file against its metadata. Imports nothing heavy until a command runs."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

EXIT_PROBLEMS = 1


def add_models_command(commands: Any) -> None:
    """Adds ``models`` to the top-level subparsers ``commands``."""
    models = commands.add_parser("models", help="list, show and check the models of a registry folder")
    models.add_argument("--registry", type=Path, default=None, help="registry folder (default: the config's)")
    models.add_argument("-c", "--config", type=Path, default=None, help="take the registry folder from this config")
    sub = models.add_subparsers(required=True, metavar="ACTION")
    sub.add_parser("list", help="every model with its versions and aliases").set_defaults(command=_list)
    show = sub.add_parser("show", help="one version's metadata: NAME, NAME@ALIAS or NAME@VERSION")
    show.add_argument("model")
    show.set_defaults(command=_show)
    check = sub.add_parser("validate", help="check every version's file against its metadata, and the aliases")
    check.add_argument("model", nargs="?", default=None, help="only this model")
    check.set_defaults(command=_validate)


def _registry(args: argparse.Namespace) -> Any:
    from streamscore.config import load_settings
    from streamscore.errors import ConfigError
    from streamscore.registry.store import Registry

    root = args.registry
    if root is None and args.config is not None:
        settings = load_settings(args.config)
        root = settings.registry.root if settings.registry else None
    if root is None:
        raise ConfigError("registry: give --registry DIR, or --config FILE with a 'registry' section")
    return Registry(root)


def _list(args: argparse.Namespace) -> int:
    registry = _registry(args)
    for name in registry.models():
        aliases = registry.aliases(name)
        by_version: dict[str, list[str]] = {}
        for alias, version in sorted(aliases.items()):
            by_version.setdefault(version, []).append(alias)
        versions = [f"{v} ({', '.join(by_version[v])})" if v in by_version else v for v in registry.versions(name)]
        print(f"{name}: {', '.join(versions) or 'no versions'}")
    return 0


def _show(args: argparse.Namespace) -> int:
    import yaml

    registry = _registry(args)
    text = args.model if "@" in args.model else f"{args.model}@production"
    found = registry.resolve(f"registry:{text}")
    print(f"{found.name}@{found.version}" + (f" (alias {found.alias})" if found.alias else ""))
    print(f"file: {found.path}")
    print(yaml.safe_dump(found.metadata.model_dump(exclude_none=True), sort_keys=False).rstrip())
    return 0


def _validate(args: argparse.Namespace) -> int:
    registry = _registry(args)
    names = [args.model] if args.model else registry.models()
    problems = [p for name in names for p in registry.problems(name)]
    for problem in problems:
        print(f"problem: {problem}")
    checked = sum(len(registry.versions(n)) for n in names)
    print(f"{checked} versions of {len(names)} models checked, {len(problems)} problems")
    return EXIT_PROBLEMS if problems else 0
