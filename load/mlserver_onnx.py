"""The MLServer side of ``load.rest``: a custom MLServer runtime (an ``MLModel``) running
onnxruntime on the demo model, answering a V2 ``infer`` request of feature rows with the same two
outputs as ``streamscore serve`` (``score``, the fraud probability, and ``decision``, by the demo's
thresholds).

It runs in MLServer's own virtual environment (``python -m load.rest --setup``), never in the
project's: MLServer is no dependency of streamscore. ``load.rest`` copies this file next to the
model's ``model-settings.json``, whose ``parameters.extra`` carries the model file, the
onnxruntime intra-op threads and the decision thresholds.

The model is called inline in ``predict`` (as MLServer's own runtimes call theirs), or, with
``parameters.extra.offload``, on one thread of its own (as ``streamscore serve`` does), so the
event loop keeps taking requests while the model works; with ``parallel_workers`` > 0 all this
happens inside MLServer's inference worker process. Every 0.1 s a thread of the runtime
writes its running totals "rows calls" to the file ``parameters.extra.stats``, so the benchmark reads the
effect of MLServer's adaptive batching as it reads streamscore's ``streamscore_serve_batch_size``
(a custom MLServer metric would show only with ``parallel_workers`` > 0).
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
from mlserver import MLModel
from mlserver.codecs import NumpyCodec, StringCodec
from mlserver.types import InferenceRequest, InferenceResponse


class OnnxFraudModel(MLModel):  # type: ignore[misc]
    async def load(self) -> bool:
        extra: dict[str, Any] = self.settings.parameters.extra or {}
        options = ort.SessionOptions()
        options.log_severity_level = 3
        if extra.get("intra_op_threads"):
            options.intra_op_num_threads = int(extra["intra_op_threads"])
        self._session = ort.InferenceSession(extra["model"], sess_options=options, providers=["CPUExecutionProvider"])
        self._input = self._session.get_inputs()[0].name
        self._column = int(extra.get("score_column", 1))
        # decision rules as in streamscore's demo config: the highest threshold reached wins
        rules = sorted(extra.get("rules", []), key=lambda r: r["min_score"])
        self._thresholds = np.asarray([r["min_score"] for r in rules], dtype=np.float32)
        self._labels = np.asarray([extra.get("default", "approve"), *[r["label"] for r in rules]], dtype=object)
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="inference") if extra.get("offload") else None
        self._stats = Path(extra["stats"])
        self._rows = self._calls = 0
        threading.Thread(target=self._report, name="stats", daemon=True).start()
        return True

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        features = NumpyCodec.decode_input(payload.inputs[0]).astype(np.float32, copy=False)
        if features.ndim == 1:
            features = features.reshape(1, -1)
        if self._executor is None:
            scores, decisions = self._score(features)
        else:
            scores, decisions = await asyncio.get_running_loop().run_in_executor(self._executor, self._score, features)
        return InferenceResponse(
            model_name=self.name,
            model_version=self.version,
            id=payload.id,
            outputs=[NumpyCodec.encode_output("score", scores),
                     StringCodec.encode_output("decision", decisions.tolist())],
        )

    def _report(self) -> None:
        """Every 0.1 s, off the request path: the totals, replaced whole (never read half-written)."""
        partial = self._stats.with_suffix(".partial")
        while True:
            partial.write_text(f"{self._rows} {self._calls}")
            os.replace(partial, self._stats)
            time.sleep(0.1)

    def _score(self, features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        probabilities = self._session.run(["probabilities"], {self._input: features})[0]
        scores = np.ascontiguousarray(probabilities[:, self._column], dtype=np.float32)
        self._rows += len(features)
        self._calls += 1
        return scores, self._labels[np.searchsorted(self._thresholds, scores, side="right")]
