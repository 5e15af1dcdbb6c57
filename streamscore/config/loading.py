"""Reading settings: the YAML file, the ``STREAMSCORE_*`` overrides, one-line errors naming the key."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from streamscore.config.settings import Settings
from streamscore.errors import ConfigError

ENV_PREFIX = "STREAMSCORE_"
_PASSTHROUGH_MAPS = frozenset({("kafka", "client"), ("kafka", "consumer"), ("kafka", "producer")})
_NOT_SETTINGS = frozenset({"STREAMSCORE_TANSU", "STREAMSCORE_TEST_BOOTSTRAP", "STREAMSCORE_TEST_BROKER"})
"""Variables with the prefix that configure the embedded broker and the tests, not the service."""
_TEST_PREFIX = "STREAMSCORE_TEST_"
"""Any variable under this prefix sets a test knob (fuzz size, seed ...), never a setting."""


def load_settings(path: Path | str | None, env: Mapping[str, str] | None = None) -> Settings:
    """Read, override from the environment, and validate; raises ConfigError with one line."""
    raw: dict[str, Any] = {}
    if path is not None:
        raw = _read_yaml(Path(path))
        _resolve_model_path(raw, Path(path).parent)  # the file's paths are relative to the file
    apply_env_overrides(raw, os.environ if env is None else env)
    _resolve_model_path(raw, Path.cwd())  # an override's, like a command line's, to the working directory
    try:
        return Settings.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(describe_validation_error(exc)) from None


def _resolve_model_path(raw: dict[str, Any], base: Path) -> None:
    models = raw.get("models")
    named = list(models.values()) if isinstance(models, dict) else []
    challengers = [c.get("model") for c in (raw.get("shadow"), raw.get("canary")) if isinstance(c, dict)]
    for model in [raw.get("model"), *named, *challengers]:
        if isinstance(model, dict) and isinstance(model.get("path"), str) and not Path(model["path"]).is_absolute() \
                and not model["path"].startswith("registry:"):
            model["path"] = str((base / model["path"]).resolve())
    monitoring = raw.get("monitoring")
    if isinstance(monitoring, dict) and isinstance(monitoring.get("profile"), str) \
            and not Path(monitoring["profile"]).is_absolute():
        monitoring["profile"] = str((base / monitoring["profile"]).resolve())
    registry = raw.get("registry")
    root = registry.get("root") if isinstance(registry, dict) else None
    if isinstance(registry, dict) and isinstance(root, str) and not Path(root).is_absolute():
        registry["root"] = str((base / root).resolve())


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"config file {path}: cannot be read ({exc.strerror})") from None
    except UnicodeDecodeError:
        raise ConfigError(f"config file {path}: cannot be read (not UTF-8 text)") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"config file {path}: not valid YAML{where}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path}: expected a mapping of sections at the top level")
    return data


def apply_env_overrides(raw: dict[str, Any], env: Mapping[str, str]) -> None:
    """Set ``raw`` keys from ``STREAMSCORE_A__B__C`` variables, creating sections as needed."""
    for name in sorted(env):
        if (not name.startswith(ENV_PREFIX) or name == ENV_PREFIX or name in _NOT_SETTINGS
                or name.startswith(_TEST_PREFIX)):
            continue
        parts = [p.lower() for p in name[len(ENV_PREFIX):].split("__")]
        passthrough = len(parts) >= 3 and (parts[0], parts[1]) in _PASSTHROUGH_MAPS
        if passthrough:
            parts = [parts[0], parts[1], "__".join(parts[2:]).replace("_", ".")]
        node = raw
        for part in parts[:-1]:
            child = node.get(part)
            if not isinstance(child, dict):
                child = node[part] = {}
            node = child
        # librdkafka takes every setting as text: keep passthrough values verbatim, so that a
        # password such as 0123 or yes is not turned into a number or a boolean
        node[parts[-1]] = env[name] if passthrough else _parse_env_value(env[name])


def _parse_env_value(text: str) -> Any:
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def describe_validation_error(exc: ValidationError) -> str:
    """The first error as ``section.key: what was expected`` on one line."""
    err = exc.errors(include_url=False)[0]
    if err["loc"][:1] == ("graph",) and err["loc"][1:2] in (("ensemble",), ("cascade",), ("chain",)):
        err["loc"] = ("graph", *err["loc"][2:])  # the union's tag is the graph's own 'type'
    loc = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in err["loc"]).lstrip(".") or "config"
    kind = err["type"]
    if kind == "extra_forbidden":
        known = _known_keys(err["loc"][:-1])
        return f"{loc}: unknown key" + (f" (expected one of: {', '.join(known)})" if known else "")
    if kind == "missing":
        return f"{loc}: required key is missing"
    msg = err["msg"].removeprefix("Value error, ")
    if not err["loc"] and kind == "value_error":
        return msg  # a check across sections: its message starts with the key it is about
    given = err.get("input")
    shown = f" (got {given!r})" if not isinstance(given, dict | list) and given is not None else ""
    return f"{loc}: {msg}{shown}"


def _known_keys(loc: tuple[int | str, ...]) -> list[str]:
    """The keys a section accepts, found by walking the settings model along ``loc``."""
    model: Any = Settings
    for part in loc:
        if isinstance(part, int):
            continue
        field = model.model_fields.get(part) if hasattr(model, "model_fields") else None
        if field is None:
            return []
        annotation = field.annotation
        args = getattr(annotation, "__args__", ())
        model = next((a for a in (annotation, *args) if isinstance(a, type) and issubclass(a, BaseModel)), None)
        if model is None:
            return []
    return list(model.model_fields) if model is not None else []
