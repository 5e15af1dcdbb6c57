"""ONNX Runtime model runner: provider choice, a start-up check against the feature spec, warm-up."""

from __future__ import annotations

import hashlib
import json
import logging
import tempfile
from collections.abc import Iterable
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import numpy as np

from streamscore.config import ModelSettings
from streamscore.errors import ModelError

log = logging.getLogger(__name__)

_PROVIDERS = {
    "cpu": ["CPUExecutionProvider"],
    "cuda": ["CUDAExecutionProvider", "CPUExecutionProvider"],
    "tensorrt": ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"],
}
_FLOAT_OUTPUTS = {"tensor(float)", "tensor(double)", "tensor(float16)"}
_CPU = "CPUExecutionProvider"

NodePlacement = tuple[str, str, str]
"""(node name, op type, execution provider) of one node, as onnxruntime's profiler records it."""


def cpu_fallback(placements: Iterable[NodePlacement], active: str) -> list[NodePlacement]:
    """The nodes that run on the CPU although the session's first provider is ``active`` (a GPU one):
    onnxruntime silently assigns a node to the next provider when the first has no kernel for it."""
    if active == _CPU:
        return []
    seen: dict[str, NodePlacement] = {}
    for name, op, provider in placements:
        if provider == _CPU:
            seen.setdefault(name, (name, op, provider))
    return list(seen.values())


def profiled_placements(profile: Path) -> list[NodePlacement]:
    """Each node's placement from an onnxruntime profile (Chrome trace JSON: one ``Node`` event per
    kernel run, with ``args.op_name`` and ``args.provider``)."""
    events = json.loads(profile.read_text())
    found: list[NodePlacement] = []
    for event in events:
        args = event.get("args") or {}
        if event.get("cat") == "Node" and "provider" in args and str(event.get("name", "")).endswith("_kernel_time"):
            found.append((str(event["name"]).removesuffix("_kernel_time"), str(args.get("op_name", "?")),
                          str(args["provider"])))
    return found


def describe_fallback(nodes: list[NodePlacement], total: int, active: str) -> str:
    """One line: how many nodes run on the CPU instead of ``active``, and their op types."""
    ops = sorted({op for _, op, _ in nodes})
    return (f"{len(nodes)} of {total} nodes run on {_CPU}, not {active} "
            f"(no {active} kernel for op types: {', '.join(ops)})")


def _dim(value: Any) -> int | None:
    """A static dimension, or None for a symbolic/unknown one."""
    return value if isinstance(value, int) and value > 0 else None


class OnnxRunner:
    """Scores float32 feature rows with one onnxruntime session, loaded once."""

    def __init__(self, settings: ModelSettings, feature_width: int) -> None:
        self.settings = settings
        self.feature_width = feature_width
        self.name = settings.name or settings.path.stem
        self.version = settings.version or ""
        self.provider = ""
        self._session: Any = None
        self._input = ""
        self._output = ""
        self._column: int | None = settings.score_column
        self._fixed_batch: int | None = None

    def load(self) -> None:
        path = self.settings.path
        if not path.is_file():
            raise ModelError(f"model.path: file not found: {path}")
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        expected = self.settings.sha256
        if expected is not None and digest != expected.lower():
            raise ModelError(f"model.sha256: {path} has sha256 {digest}, expected {expected.lower()}; "
                             "refusing to load it")
        import onnxruntime as ort

        ort.set_default_logger_severity(3)
        wanted = self._providers(ort.get_available_providers())
        options = ort.SessionOptions()
        options.log_severity_level = 3
        if self.settings.intra_op_threads:
            options.intra_op_num_threads = self.settings.intra_op_threads
        profiling = wanted[0] != _CPU  # which nodes fell back to the CPU: only the profiler says
        folder = tempfile.TemporaryDirectory(prefix="streamscore-profile-") if profiling else nullcontext("")
        with folder as profile_dir:
            if profiling:
                options.enable_profiling = True
                options.profile_file_prefix = str(Path(profile_dir) / "load")
            try:
                session = ort.InferenceSession(str(path), sess_options=options, providers=wanted)
            except Exception as exc:  # onnxruntime raises its own classes for unreadable models
                raise ModelError(f"model.path: cannot load {path}: {str(exc).splitlines()[0]}") from exc
            active = session.get_providers()[0]
            if self.settings.provider in ("cuda", "tensorrt") and active != wanted[0]:
                raise ModelError(
                    f"model.provider: '{self.settings.provider}' requested but onnxruntime could not "
                    f"initialise {wanted[0]} (it fell back to {active}); check the "
                    f"{'TensorRT and CUDA' if self.settings.provider == 'tensorrt' else 'CUDA and cuDNN'} libraries"
                )
            self._session = session
            self.provider = active
            self._check_signature()
            if profiling:
                self._check_placement(session, active)
        if not self.version:
            self.version = f"sha256:{digest[:12]}"
        log.info(
            "model %s version %s loaded from %s on %s (batch dimension %s)",
            self.name, self.version, path, active, self._fixed_batch or "dynamic",
        )
        self._warm_up()

    def _check_placement(self, session: Any, active: str) -> None:
        """Run one batch under the profiler, then warn (or, with ``strict_provider``, refuse) when
        nodes run on the CPU instead of the GPU provider asked for."""
        self.predict(np.zeros((self._fixed_batch or 1, self.feature_width), dtype=np.float32))
        placements = profiled_placements(Path(session.end_profiling()))
        fallback = cpu_fallback(placements, active)
        if not fallback:
            return
        total = len({name for name, _, _ in placements})
        line = describe_fallback(fallback, total, active)
        if self.settings.strict_provider:
            raise ModelError(f"model.strict_provider: {self.settings.path}: {line}; expected every node on "
                             f"{active} (set strict_provider: false to allow the CPU fallback)")
        log.warning("model %s: %s; set model.strict_provider: true to refuse this", self.name, line)

    def _providers(self, available: list[str]) -> list[str]:
        choice = self.settings.provider
        if choice == "auto":
            if "CUDAExecutionProvider" in available:
                return _PROVIDERS["cuda"]
            return _PROVIDERS["cpu"]
        wanted = _PROVIDERS[choice]
        if wanted[0] not in available:
            raise ModelError(
                f"model.provider: '{choice}' requested but this onnxruntime has no {wanted[0]} "
                f"(available: {', '.join(available)}); install streamscore[gpu] on a CUDA machine or use 'cpu'"
            )
        return wanted

    def _check_signature(self) -> None:
        inputs = {i.name: i for i in self._session.get_inputs()}
        outputs = {o.name: o for o in self._session.get_outputs()}
        wanted_input = self.settings.input
        if wanted_input is None:
            if len(inputs) != 1:
                raise ModelError(
                    f"model.input: the model has {len(inputs)} inputs ({', '.join(inputs)}); "
                    "streamscore feeds one feature matrix, name it with model.input"
                )
            wanted_input = next(iter(inputs))
        if wanted_input not in inputs:
            raise ModelError(f"model.input: no input named {wanted_input!r} (the model has {', '.join(inputs)})")
        others = [name for name in inputs if name != wanted_input]
        if others:  # get_inputs() lists only the inputs a run must be fed
            raise ModelError(
                f"model.input: the model also requires {', '.join(others)}; streamscore feeds only "
                f"{wanted_input!r} (the feature matrix)"
            )
        node = inputs[wanted_input]
        if node.type != "tensor(float)":
            raise ModelError(
                f"model.input: input {node.name!r} has dtype {node.type}; expected tensor(float) "
                "(features are a float32 matrix)"
            )
        if len(node.shape) != 2:
            raise ModelError(f"model.input: input {node.name!r} has shape {node.shape}; expected [batch, features]")
        width = _dim(node.shape[1])
        if width is not None and width != self.feature_width:
            raise ModelError(
                f"features: the spec gives {self.feature_width} columns but model input "
                f"{node.name!r} expects {width}"
            )
        self._fixed_batch = _dim(node.shape[0])
        self._input = node.name

        output = self.settings.score_output or list(outputs)[-1]
        if output not in outputs:
            raise ModelError(f"model.score_output: no output named {output!r} (the model has {', '.join(outputs)})")
        out = outputs[output]
        if out.type not in _FLOAT_OUTPUTS:
            raise ModelError(f"model.score_output: output {output!r} has type {out.type}; expected a float tensor")
        rank = len(out.shape)
        if self._column is None and rank == 2 and _dim(out.shape[1]) == 1:
            self._column = 0
        if self._column is None and rank != 1:
            raise ModelError(f"model.score_column: output {output!r} has shape {out.shape}; name the score column")
        if self._column is not None:
            cols = _dim(out.shape[1]) if rank == 2 else None
            if rank != 2 or (cols is not None and self._column >= cols):
                raise ModelError(
                    f"model.score_column: column {self._column} does not exist in output {output!r} "
                    f"of shape {out.shape}"
                )
        self._output = output

    def _warm_up(self) -> None:
        rows = self._fixed_batch or 64
        for _ in range(self.settings.warmup_batches):
            self.predict(np.zeros((rows, self.feature_width), dtype=np.float32))

    def predict(self, matrix: np.ndarray) -> np.ndarray:
        rows = matrix.shape[0]
        fixed = self._fixed_batch
        if fixed is None or rows == fixed:
            return self._run(matrix)
        parts = []
        for start in range(0, rows, fixed):
            chunk = matrix[start:start + fixed]
            if chunk.shape[0] < fixed:
                padded = np.zeros((fixed, matrix.shape[1]), dtype=np.float32)
                padded[: chunk.shape[0]] = chunk
                parts.append(self._run(padded)[: chunk.shape[0]])
            else:
                parts.append(self._run(chunk))
        return np.concatenate(parts) if parts else np.zeros(0, dtype=np.float32)

    def predict_columns(self, matrix: np.ndarray) -> np.ndarray:
        """The whole score output, [rows, columns] float32 (a 1-D output is one column): what a
        chained graph appends to the next stage's input."""
        (out,) = self._session.run([self._output], {self._input: matrix})
        return np.asarray(out, dtype=np.float32).reshape(matrix.shape[0], -1)

    def _run(self, matrix: np.ndarray) -> np.ndarray:
        (out,) = self._session.run([self._output], {self._input: matrix})
        scores = out if self._column is None else out[:, self._column]
        if scores.shape[0] != matrix.shape[0]:
            raise ModelError(f"model returned {scores.shape[0]} scores for {matrix.shape[0]} rows")
        return np.asarray(scores, dtype=np.float32)

    def close(self) -> None:
        self._session = None
