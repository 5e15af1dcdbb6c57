"""Turns the ``registry:NAME@ALIAS`` model paths of a configuration into concrete model settings.

Called each time the service builds its runner (at start and on every reload), so a moved alias
is picked up by building again. Values the configuration sets win over the version's metadata.
"""

from __future__ import annotations

from typing import Any, TypeVar

from streamscore.config import ModelSettings, Settings, registry_reference
from streamscore.errors import ModelError
from streamscore.registry.store import Registry, RegistryError, Resolved

M = TypeVar("M", bound=ModelSettings)


def resolve_model(model: M, key: str, registry: Registry, features: list[str]) -> tuple[M, Resolved | None]:
    """``model`` with its reference replaced by the version's file, name, version and sha256.

    ``features``: the feature names the model reads, checked against those it was trained on."""
    ref = registry_reference(model)
    if ref is None:
        return model, None
    try:
        found = registry.resolve(ref)
    except RegistryError as exc:
        raise ModelError(f"{key}.path: {str(exc).removeprefix('registry: ')}") from None
    meta = found.metadata
    if meta.features and meta.features != features:
        raise ModelError(f"{key}.path: {found.name}@{found.version} was trained on features {meta.features} "
                         f"but the configuration gives it {features}")
    given = model.model_fields_set
    defaults = {"name": found.name, "version": found.version, "sha256": meta.sha256,
                "score_output": meta.score_output, "score_column": meta.score_column}
    update: dict[str, Any] = {field: value for field, value in defaults.items()
                              if field not in given and value is not None}
    return model.model_copy(update={**update, "path": found.path}), found


def resolve_settings(settings: Settings) -> tuple[Settings, dict[str, Resolved]]:
    """``settings`` with every registry reference resolved, and what each key resolved to."""
    if settings.registry is None:
        return settings, {}
    registry = Registry(settings.registry.root)
    names = [f.name for f in settings.features]
    resolved: dict[str, Resolved] = {}
    update: dict[str, Any] = {}
    if settings.model is not None:
        model, found = resolve_model(settings.model, "model", registry, names)
        update["model"] = model
        if found is not None:
            resolved["model"] = found
    models = {}
    for name, m in settings.models.items():
        models[name], found = resolve_model(m, f"models.{name}", registry, m.features or names)
        if found is not None:
            resolved[f"models.{name}"] = found
    if models:
        update["models"] = models
    for key, section in (("shadow", settings.shadow), ("canary", settings.canary)):
        if section is not None:
            model, found = resolve_model(section.model, f"{key}.model", registry, section.model.features or names)
            update[key] = section.model_copy(update={"model": model})
            if found is not None:
                resolved[f"{key}.model"] = found
    return settings.model_copy(update=update), resolved
