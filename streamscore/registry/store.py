"""The model registry: a folder of models, their versions and aliases.

    ROOT/
      NAME/
        aliases.yaml          {production: "3", shadow: "4"}: alias -> version
        VERSION/
          model.onnx
          metadata.yaml       features, outputs, sha256, training metrics, tags

A model is referenced as ``registry:NAME@ALIAS`` or ``registry:NAME@VERSION`` (an alias wins
when a version has the same name). Moving an alias rewrites ``aliases.yaml`` in one atomic
rename, so a reader never sees half a file. This module is the registry's whole API: the service
resolves references through it, the ``streamscore models`` commands and the REST endpoints list
through it.
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path

import yaml
from pydantic import Field, ValidationError

from streamscore.config.section import Section
from streamscore.errors import ConfigError

METADATA = "metadata.yaml"
ALIASES = "aliases.yaml"
PREFIX = "registry:"
_REFERENCE = re.compile(r"^registry:(?P<name>[A-Za-z0-9._-]+)@(?P<selector>[A-Za-z0-9._-]+)$")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


class RegistryError(ConfigError):
    """A reference that does not resolve, or a registry entry that is malformed; names the entry."""


class ModelMetadata(Section):
    """``metadata.yaml`` of one model version."""

    file: str = "model.onnx"
    """The model file, in the version's folder."""
    sha256: str | None = Field(default=None, pattern=r"^[0-9a-f]{64}$")
    """sha256 of the model file; a different file is refused (``publish`` fills it in)."""
    features: list[str] = []
    """Names of the features the model was trained on, in its input column order (checked against
    the configuration's when given)."""
    width: int | None = Field(default=None, ge=1)
    """Columns of the model's input (one-hot features count one per category)."""
    score_output: str | None = None
    """Output holding the score, used unless the configuration names one."""
    score_column: int | None = None
    """Column of that output, used unless the configuration names one."""
    metrics: dict[str, float] = {}
    """Training or evaluation metrics (``auc: 0.91``)."""
    tags: dict[str, str] = {}
    """Free-form tags (``owner: fraud-team``, ``segment: US``)."""
    created: str | None = None
    """When the version was registered (ISO 8601)."""


@dataclass(frozen=True, slots=True)
class Resolved:
    """A reference resolved to one version's file and metadata."""

    name: str
    version: str
    path: Path
    metadata: ModelMetadata
    alias: str | None = None

    @property
    def reference(self) -> str:
        return f"{PREFIX}{self.name}@{self.alias or self.version}"


def parse_reference(text: str) -> tuple[str, str] | None:
    """``registry:NAME@SELECTOR`` -> (NAME, SELECTOR); None for anything that is not a reference."""
    found = _REFERENCE.match(text)
    return (found["name"], found["selector"]) if found else None


def is_reference(text: str) -> bool:
    return text.startswith(PREFIX)


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _version_key(version: str) -> tuple[int, int | str]:
    return (0, int(version)) if version.isdigit() else (1, version)


def _write_atomically(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.chmod(tmp, 0o644)  # mkstemp makes it private; the registry is read by other users and processes
    os.replace(tmp, path)


class Registry:
    """A registry folder. Reads the files on every call: aliases move while a service runs."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def models(self) -> list[str]:
        """Model names, sorted."""
        if not self.root.is_dir():
            raise RegistryError(f"registry.root: {self.root} is not a folder")
        return sorted(p.name for p in self.root.iterdir() if p.is_dir() and _NAME.match(p.name))

    def versions(self, name: str) -> list[str]:
        """Versions of ``name`` in order (numeric versions numerically, then the others by name)."""
        folder = self._model_dir(name)
        return sorted((p.name for p in folder.iterdir() if (p / METADATA).is_file()), key=_version_key)

    def aliases(self, name: str) -> dict[str, str]:
        """Alias -> version of ``name`` (empty when it has none)."""
        path = self._model_dir(name) / ALIASES
        if not path.is_file():
            return {}
        try:
            raw = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as exc:
            raise RegistryError(f"registry: {path}: not valid YAML ({exc})") from None
        if not isinstance(raw, dict):
            raise RegistryError(f"registry: {path}: expected a mapping of alias to version")
        return {str(k): str(v) for k, v in raw.items()}

    def metadata(self, name: str, version: str) -> ModelMetadata:
        path = self._model_dir(name) / version / METADATA
        if not path.is_file():
            raise RegistryError(f"registry: model {name!r} has no version {version!r} "
                                f"(versions: {', '.join(self.versions(name)) or 'none'})")
        try:
            return ModelMetadata.model_validate(yaml.safe_load(path.read_text()) or {})
        except (yaml.YAMLError, ValidationError) as exc:
            first = str(exc).splitlines()
            raise RegistryError(f"registry: {path}: invalid metadata ({'; '.join(first[:3])})") from None

    def resolve(self, reference: str) -> Resolved:
        """``registry:NAME@ALIAS`` or ``registry:NAME@VERSION`` -> the version's file and metadata."""
        parsed = parse_reference(reference)
        if parsed is None:
            raise RegistryError(f"registry: {reference!r} is not a reference (expected registry:NAME@ALIAS "
                                "or registry:NAME@VERSION)")
        name, selector = parsed
        aliases = self.aliases(name)
        alias = selector if selector in aliases else None
        version = aliases.get(selector, selector)
        meta = self.metadata(name, version)
        return Resolved(name, version, self._model_dir(name) / version / meta.file, meta, alias)

    def problems(self, name: str) -> list[str]:
        """What is wrong with ``name``'s entries (missing or altered files, dangling aliases)."""
        found = []
        versions = self.versions(name)
        for version in versions:
            try:
                meta = self.metadata(name, version)
            except RegistryError as exc:
                found.append(str(exc))
                continue
            path = self._model_dir(name) / version / meta.file
            if not path.is_file():
                found.append(f"{name}@{version}: model file {path} is missing")
            elif meta.sha256 is None:
                found.append(f"{name}@{version}: its metadata gives no sha256")
            elif sha256_of(path) != meta.sha256:
                found.append(f"{name}@{version}: {path} does not match the sha256 in its metadata")
        for alias, version in self.aliases(name).items():
            if version not in versions:
                found.append(f"{name}: alias {alias!r} points to version {version!r}, which does not exist")
        return found

    # --- writing (the training script, tests, operators moving an alias) -------------------------

    def publish(self, name: str, version: str, model: Path, metadata: ModelMetadata) -> Resolved:
        """Copy ``model`` in as ``NAME/VERSION/`` with its metadata (sha256 filled in)."""
        if not _NAME.match(name) or not _NAME.match(version):
            raise RegistryError(f"registry: bad name or version {name!r}@{version!r}")
        folder = self.root / name / version
        folder.mkdir(parents=True, exist_ok=False)
        data = model.read_bytes()
        (folder / metadata.file).write_bytes(data)
        meta = metadata.model_copy(update={"sha256": hashlib.sha256(data).hexdigest()})
        _write_atomically(folder / METADATA, yaml.safe_dump(meta.model_dump(exclude_none=True), sort_keys=False))
        return Resolved(name, version, folder / meta.file, meta)

    def set_alias(self, name: str, alias: str, version: str) -> None:
        """Point ``alias`` at ``version`` (atomically: a running service sees the old or the new)."""
        self.metadata(name, version)  # the version exists
        aliases = {**self.aliases(name), alias: version}
        _write_atomically(self._model_dir(name) / ALIASES, yaml.safe_dump(aliases, sort_keys=True))

    def _model_dir(self, name: str) -> Path:
        folder = self.root / name
        if not _NAME.match(name) or not folder.is_dir():
            known = ", ".join(self.models()) or "none"
            raise RegistryError(f"registry: no model named {name!r} in {self.root} (models: {known})")
        return folder
