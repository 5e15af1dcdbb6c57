"""The wire format: Open Inference Protocol (KServe V2) messages, ``/v1/score`` results, errors,
and the OpenAPI document built from the same pydantic models, so the document cannot drift from
what the handlers parse and answer."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from pydantic.json_schema import models_json_schema

from streamscore import __version__

Datatype = Literal["BOOL", "UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32", "INT64",
                   "FP16", "FP32", "FP64", "BYTES"]


class Message(BaseModel):
    model_config = ConfigDict(extra="forbid")


class InferInput(Message):
    name: str
    shape: list[int] = Field(min_length=1, max_length=2)
    datatype: Datatype
    parameters: dict[str, Any] | None = None
    data: list[Any]


class RequestedOutput(Message):
    name: str
    parameters: dict[str, Any] | None = None


class InferRequest(Message):
    id: str | None = None
    parameters: dict[str, Any] | None = None
    inputs: list[InferInput] = Field(min_length=1)
    outputs: list[RequestedOutput] | None = None


class InferOutput(Message):
    name: str
    shape: list[int]
    datatype: Datatype
    data: list[Any]


class InferResponse(Message):
    model_name: str
    model_version: str | None = None
    id: str | None = None
    outputs: list[InferOutput]


class TensorMetadata(Message):
    name: str
    datatype: Datatype
    shape: list[int]


class ModelMetadata(Message):
    name: str
    versions: list[str]
    platform: str
    inputs: list[TensorMetadata]
    outputs: list[TensorMetadata]
    aliases: list[str] = []
    """Other names the model answers to."""
    features: list[str] = []
    """JSON paths ``/v1/score`` reads from each event, in feature-column order."""
    models: dict[str, str] = {}
    """Models behind a graph, name -> version."""


class ModelIndex(Message):
    models: list[ModelMetadata]


class ServerMetadata(Message):
    name: str
    version: str
    extensions: list[str]


class Live(Message):
    live: bool


class Ready(Message):
    ready: bool


class Error(Message):
    """Every error answer: ``error`` in words; ``reason`` a code (a dead-letter reason for an event
    that cannot be scored)."""

    error: str
    reason: str


class ScoreRecord(BaseModel):
    """An event's score record: the copied fields, score, decision, model and version (a graph adds
    ``models`` and ``stage``), as the score topic receives it less its Kafka source."""

    model_config = ConfigDict(extra="allow")
    score: float
    decision: str
    model: str
    model_version: str
    scored_at_ms: int


class Rejected(Message):
    """An event of a list that could not be scored."""

    index: int
    error: str
    reason: str


class ScoreResults(Message):
    results: list[ScoreRecord | Rejected]


class ScoreRejections(Message):
    error: str
    reason: str
    results: list[ScoreRecord | Rejected]


_MODELS: list[type[BaseModel]] = [InferRequest, InferResponse, ModelMetadata, ModelIndex, ServerMetadata, Live,
                                  Ready, Error, ScoreRecord, Rejected, ScoreResults, ScoreRejections]


def _ref(model: type[BaseModel]) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{model.__name__}"}


def _json(model: type[BaseModel], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": _ref(model)}}}


_ERRORS = {
    "401": _json(Error, "No or a wrong bearer token (when serve.token is set)"),
    "404": _json(Error, "No such model or version"),
    "413": _json(Error, "The body or its number of events is over the limit"),
    "503": _json(Error, "Overloaded, or the model is failing"),
    "504": _json(Error, "Not answered within serve.request_timeout_s"),
}


def _param(name: str) -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}


def _op(summary: str, ok: dict[str, Any], params: tuple[str, ...] = (), body: dict[str, Any] | None = None,
        errors: tuple[str, ...] = ("401", "404")) -> dict[str, Any]:
    op: dict[str, Any] = {"summary": summary, "parameters": [_param(p) for p in params],
                          "responses": {"200": ok, **{code: _ERRORS[code] for code in errors}}}
    if body is not None:
        op["requestBody"] = {"required": True, "content": {"application/json": {"schema": body}}}
    return op


def openapi(auth: bool) -> dict[str, Any]:
    """The OpenAPI 3.1 document of the REST endpoint (``auth``: whether a bearer token is required)."""
    _, defs = models_json_schema([(m, "validation") for m in _MODELS], ref_template="#/components/schemas/{model}")
    bad = {"400": _json(Error, "The body is not a valid request"),
           "422": _json(ScoreRejections, "Events that cannot be scored, with the dead-letter reasons")}
    infer_errors = ("401", "404", "413", "503", "504")
    event = {"oneOf": [{"type": "object"}, {"type": "array", "items": {"type": "object"}}]}
    score = _op("Score one JSON event (an object) or a list of them, read as the source topic's events",
                _json(ScoreResults, "Each event's score record (a single event: the record itself)"),
                ("name",), event, infer_errors)
    score["responses"]["200"]["content"]["application/json"]["schema"] = {
        "oneOf": [_ref(ScoreRecord), _ref(ScoreResults)]}
    score["responses"].update(bad)
    score["responses"]["422"]["content"]["application/json"]["schema"] = {"oneOf": [_ref(Error),
                                                                                   _ref(ScoreRejections)]}
    infer = _op("Score a tensor of feature rows (Open Inference Protocol)",
                _json(InferResponse, "Scores and decisions"), ("name",), _ref(InferRequest), infer_errors)
    infer["responses"]["400"] = bad["400"]
    infer["responses"]["422"] = _json(Error, "Rows the model could not score")
    infer_version = {**infer, "parameters": [_param("name"), _param("version")]}
    health: dict[str, Any] = {"security": []}
    paths: dict[str, Any] = {
        "/v2": {"get": _op("Server metadata", _json(ServerMetadata, "Name, version, extensions"), errors=("401",))},
        "/v2/health/live": {"get": {**_op("Liveness", _json(Live, "Serving"), errors=()), **health}},
        "/v2/health/ready": {"get": {**_op("Readiness", _json(Ready, "Ready to score"), errors=("503",)), **health}},
        "/v2/models": {"get": _op("Discovery: every model, its versions and aliases",
                                  _json(ModelIndex, "The models"), errors=("401",))},
        "/v2/models/{name}": {"get": _op("Model metadata", _json(ModelMetadata, "Inputs, outputs, features"),
                                         ("name",))},
        "/v2/models/{name}/ready": {"get": _op("Model readiness", _json(Ready, "Ready"), ("name",),
                                               errors=("401", "404", "503"))},
        "/v2/models/{name}/versions/{version}": {"get": _op("Model version metadata", _json(ModelMetadata, "Metadata"),
                                                            ("name", "version"))},
        "/v2/models/{name}/infer": {"post": infer},
        "/v2/models/{name}/versions/{version}/infer": {"post": infer_version},
        "/v1/score/{name}": {"post": score},
        "/v1/score/{name}/versions/{version}": {"post": {**score, "parameters": [_param("name"), _param("version")]}},
    }
    doc: dict[str, Any] = {
        "openapi": "3.1.0",
        "info": {"title": "streamscore", "version": __version__,
                 "description": "Open Inference Protocol (KServe V2 REST) and JSON-event scoring."},
        "paths": paths,
        "components": {"schemas": defs["$defs"]},
    }
    if auth:
        doc["components"]["securitySchemes"] = {"bearer": {"type": "http", "scheme": "bearer"}}
        doc["security"] = [{"bearer": []}]
    return doc
