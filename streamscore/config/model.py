"""The ``model`` section: one model file and where its score is read."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field

from streamscore.config.section import Section

Provider = Literal["auto", "cpu", "cuda", "tensorrt"]


class ModelSettings(Section):
    kind: str = "onnx"
    """Model runner kind, from the runner registry (``onnx``)."""
    path: Path
    """Model file (ONNX for ``kind: onnx``); a relative path is taken from the config file's folder, or from the working
    directory when it comes from an environment variable. ``registry:NAME@ALIAS`` or
    ``registry:NAME@VERSION`` takes the model from the ``registry`` (its name, version, sha256 and,
    unless given here, score output and column come from the version's metadata)."""
    name: str | None = None
    """Model name written into every output record (default: the file's stem)."""
    version: str | None = None
    """Model version written into every output record (default: ``sha256:`` and the file's hash prefix)."""
    provider: Provider = "auto"
    """Execution provider; ``auto`` takes CUDA when onnxruntime sees a GPU, else the CPU. On a GPU
    provider, nodes without a kernel there (tree ensembles have no CUDA kernel) run on the CPU:
    the load logs one warning naming them (found by profiling one warm-up batch)."""
    strict_provider: bool = False
    """Refuse to start when any node of the model would run on the CPU under a GPU ``provider``,
    instead of warning (a GPU ``provider`` that is not available is always refused)."""
    input: str | None = None
    """Model input fed with the feature matrix (default: the model's only input)."""
    score_output: str | None = None
    """Model output holding the score (default: the last output)."""
    score_column: int | None = 1
    """Column of a 2-D score output; null for a 1-D output."""
    sha256: str | None = Field(default=None, pattern=r"^[0-9a-fA-F]{64}$")
    """Expected sha256 of the model file; when set, a different file refuses to load."""
    intra_op_threads: int = Field(default=1, ge=0)
    """Threads onnxruntime uses inside one model call (0: its default, one per core, which spin
    while they wait for work). One leaves the other cores to the Kafka clients and, on a shared or
    throttled host, halved the CPU and wall time of a 1,000-row batch of the demo model; raise it
    for a model whose single call is the bottleneck."""
    warmup_batches: int = Field(default=2, ge=0)
    """Batches run through the model at start so the first real batch pays no setup cost."""


class RegistrySettings(Section):
    root: Path
    """The model registry folder (``NAME/VERSION/`` with the model file and ``metadata.yaml``,
    ``NAME/aliases.yaml``); a relative path is taken from the config file's folder."""


def registry_reference(settings: ModelSettings) -> str | None:
    """The model's ``registry:NAME@SELECTOR`` reference, or None for a plain file."""
    text = str(settings.path)
    return text if text.startswith("registry:") else None


class ReloadSettings(Section):
    """A new model version is loaded beside the serving one, checked and warmed up, then swapped in
    between two batches; if it fails, the old one keeps serving (logged, and counted in
    ``streamscore_model_reloads_total{result="failed"}``). ``SIGHUP`` always asks for a reload."""

    watch: bool = False
    """Check every ``interval_s`` whether a model file changed or a registry alias moved, and reload
    when one did."""
    interval_s: float = Field(default=5.0, gt=0)
    """How often ``watch`` checks."""
