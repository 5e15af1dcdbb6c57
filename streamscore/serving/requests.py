"""Request bodies -> what the core scores, and the core's results -> response bodies. No I/O.

A ``/v1/score`` body is one JSON event (handed to the core as is, exactly as a topic's value) or a
list of them (each re-encoded, then decoded by the core like any value); an ``infer`` body is a
tensor of feature rows. Every way a body can be wrong ends as a ``BadRequest`` naming it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson
from pydantic import ValidationError

from streamscore.core.decode import decode
from streamscore.core.records import Headers, Reason, Rejection, ScoredBatch
from streamscore.serving.catalog import ModelInfo
from streamscore.serving.protocol import InferRequest

Outcome = bytes | Rejection
"""What became of one event: its rendered score record, or why it was not scored."""


class BadRequest(Exception):
    """A request the endpoint refuses: HTTP ``status``, a ``reason`` code and a sentence."""

    def __init__(self, status: int, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True, slots=True)
class RestEvent:
    """An event from a request body, shaped as the core's ``SourceMessage`` (no topic, no key)."""

    body: bytes
    index: int

    def topic(self) -> str | None:
        return None

    def partition(self) -> int | None:
        return None

    def offset(self) -> int | None:
        return self.index

    def key(self) -> bytes | None:
        return None

    def value(self) -> bytes | None:
        return self.body

    def headers(self) -> Headers | None:
        return None

    def timestamp(self) -> tuple[int, int]:
        return 0, 0  # TIMESTAMP_NOT_AVAILABLE: the record's event_time_ms is null


def split_events(body: bytes, max_bytes: int, max_depth: int, max_events: int) -> tuple[list[RestEvent], bool]:
    """The events of a ``/v1/score`` body and whether it was a list; a body that is not one list
    of events is handed on as one event, for the core to accept or reject with its reason."""
    if body.lstrip()[:1] != b"[":
        return [RestEvent(body, 0)], False
    try:
        items = orjson.loads(body)
    except orjson.JSONDecodeError:
        _, (rejection,) = decode([body], max_bytes, max_depth)
        raise BadRequest(422, str(rejection.reason), rejection.detail) from None
    if not items:
        raise BadRequest(422, str(Reason.EMPTY), "the list holds no events")
    if len(items) > max_events:
        raise BadRequest(413, "too_many_events",
                         f"{len(items)} events exceed serve.max_events_per_request ({max_events})")
    return [RestEvent(orjson.dumps(item), i) for i, item in enumerate(items)], True


def outcomes(batch: ScoredBatch, size: int) -> list[Outcome]:
    """Per event of a scored batch, in order: its record or its rejection (re-indexed from 0)."""
    out: list[Outcome | None] = [None] * size
    for pos, record in zip(batch.scored, batch.outputs, strict=True):
        out[pos] = record
    for rejection in batch.rejections:
        out[rejection.index] = rejection
    assert all(o is not None for o in out), "the core answers every event"
    return out  # type: ignore[return-value]


def record(rendered: bytes) -> dict[str, Any]:
    """A score record as a response gives it: the topic's record less its Kafka source and time."""
    fields: dict[str, Any] = orjson.loads(rendered)
    fields.pop("source", None)
    fields.pop("event_time_ms", None)
    return fields


def rejection_body(rejection: Rejection) -> dict[str, Any]:
    return {"error": rejection.detail, "reason": str(rejection.reason)}


def score_body(results: Sequence[Outcome], as_list: bool) -> tuple[int, dict[str, Any]]:
    """(status, body) of a ``/v1/score`` answer: 200 with the record (or every record of a list);
    422 with the reason when an event, or any event of a list, could not be scored."""
    if not as_list:
        (only,) = results
        return (422, rejection_body(only)) if isinstance(only, Rejection) else (200, record(only))
    bodies: list[dict[str, Any]] = [
        {"index": i, **rejection_body(r)} if isinstance(r, Rejection) else record(r) for i, r in enumerate(results)]
    rejected = sum(isinstance(r, Rejection) for r in results)
    if not rejected:
        return 200, {"results": bodies}
    return 422, {"error": f"{rejected} of {len(results)} events could not be scored", "reason": "rejected",
                 "results": bodies}


def parse_infer(body: bytes, info: ModelInfo, max_rows: int) -> InferRequest:
    """A validated ``infer`` request for ``info``'s one input; raises BadRequest."""
    try:
        request = InferRequest.model_validate_json(body)
    except ValidationError as exc:
        err = exc.errors(include_url=False)[0]
        where = ".".join(str(p) for p in err["loc"]) or "body"
        raise BadRequest(400, "bad_request", f"{where}: {err['msg']}") from None
    names = [i.name for i in info.inputs]
    if len(request.inputs) != len(names) or request.inputs[0].name != names[0]:
        raise BadRequest(400, "bad_request", f"inputs: expected one input named {names[0]!r}, got "
                                             f"{[i.name for i in request.inputs]}")
    known = {o.name for o in info.outputs}
    unknown = sorted({o.name for o in request.outputs or []} - known)
    if unknown:
        raise BadRequest(400, "bad_request", f"outputs: unknown {unknown} (the model has {sorted(known)})")
    shape = request.inputs[0].shape
    if shape[0] > max_rows:
        raise BadRequest(413, "too_many_events", f"{shape[0]} rows exceed serve.max_events_per_request ({max_rows})")
    return request


def tensor_rows(request: InferRequest, width: int) -> np.ndarray:
    """The float32 matrix [rows, width] of a request's input (a 1-D shape is one row); raises BadRequest."""
    tensor = request.inputs[0]
    shape = tensor.shape if len(tensor.shape) == 2 else [1, *tensor.shape]
    if tensor.datatype == "BYTES":
        raise BadRequest(400, "bad_request", "inputs[0].datatype: BYTES; expected a numeric datatype")
    if shape[1] != width or shape[0] < 0:
        raise BadRequest(400, "bad_request", f"inputs[0].shape: {tensor.shape}; expected [rows, {width}]")
    try:
        values = np.asarray(tensor.data, dtype=np.float64).ravel()
    except (ValueError, TypeError, OverflowError) as exc:
        raise BadRequest(400, str(Reason.WRONG_TYPE), f"inputs[0].data: not numbers ({str(exc)[:120]})") from None
    if values.size != math.prod(shape):
        raise BadRequest(400, "bad_request", f"inputs[0].data: {values.size} values for shape {tensor.shape}")
    with np.errstate(over="ignore"):  # a value past float32's range becomes inf, refused next
        matrix = values.reshape(shape).astype(np.float32)
    if not np.isfinite(matrix).all():
        raise BadRequest(400, str(Reason.NON_FINITE), "inputs[0].data: a value is null, NaN, infinite or "
                                                      "does not fit a float32")
    return matrix
