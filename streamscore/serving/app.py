"""The REST endpoint as an ASGI app (Starlette): Open Inference Protocol routes, ``/v1/score``,
bearer-token auth, body limits, per-request timeouts, request metrics, JSON errors.

Every answer is JSON; every bad input is a 4xx naming what is wrong (an event the core cannot score
carries the dead-letter reason); an overloaded queue or a failing model is a 503, a request not
answered in time a 504. Scoring runs through ``DynamicBatcher`` lanes, one per model version and
kind of body, on one inference thread shared by all lanes.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hmac
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import orjson
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from streamscore import __version__
from streamscore.config import ServeSettings
from streamscore.core.records import Reason, Rejection
from streamscore.errors import ModelUnavailable
from streamscore.metrics import Metrics
from streamscore.serving.batcher import DynamicBatcher, Overloaded
from streamscore.serving.catalog import ModelCatalog, ModelInfo, Served
from streamscore.serving.protocol import openapi
from streamscore.serving.requests import (
    BadRequest,
    Outcome,
    RestEvent,
    outcomes,
    parse_infer,
    score_body,
    split_events,
    tensor_rows,
)

log = logging.getLogger(__name__)

OPEN_PATHS = frozenset({"/v2/health/live", "/v2/health/ready"})
"""Paths answered without a token: the probes."""

Row = tuple[float, str] | Rejection
Handler = Callable[[Request], Awaitable[Response]]


class JSONResponse(Response):
    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)


def error(status: int, reason: str, detail: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": detail, "reason": reason}, status, headers)


def metadata(info: ModelInfo) -> dict[str, Any]:
    tensors = [{"name": t.name, "datatype": t.datatype, "shape": list(t.shape)} for t in info.inputs]
    outputs = [{"name": t.name, "datatype": t.datatype, "shape": list(t.shape)} for t in info.outputs]
    return {"name": info.name, "versions": list(info.versions), "platform": info.platform, "inputs": tensors,
            "outputs": outputs, "aliases": list(info.aliases), "features": list(info.features),
            "models": info.models}


class RestApp:
    """The endpoint over a catalog of models; ``asgi`` is what the server runs."""

    def __init__(self, catalog: ModelCatalog, settings: ServeSettings, metrics: Metrics,
                 token: str | None = None) -> None:
        self.catalog = catalog
        self.settings = settings
        self.metrics = metrics
        self.model_down = False
        """Set while the last model call failed by itself (ModelUnavailable): not ready."""
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="inference")
        self._lanes: dict[tuple[str, str, str], DynamicBatcher[Any, Any]] = {}
        self._openapi = orjson.dumps(openapi(token is not None))
        routes = [  # the scoring routes first: Starlette tries each route's pattern in turn, per request
            Route("/v2/models/{name}/infer", self.infer, methods=["POST"]),
            Route("/v1/score/{name}", self.score, methods=["POST"]),
            Route("/v2/models/{name}/versions/{version}/infer", self.infer, methods=["POST"]),
            Route("/v1/score/{name}/versions/{version}", self.score, methods=["POST"]),
            Route("/v2", self.server_metadata),
            Route("/v2/health/live", self.live),
            Route("/v2/health/ready", self.ready),
            Route("/v2/models", self.model_index),
            Route("/v2/models/{name}", self.model_metadata),
            Route("/v2/models/{name}/ready", self.model_ready),
            Route("/v2/models/{name}/versions/{version}", self.model_metadata),
            Route("/v2/models/{name}/versions/{version}/ready", self.model_ready),
            Route("/openapi.json", self.openapi_document),
            Route("/metrics", self.prometheus),
        ]
        handlers = {BadRequest: self._refused, HTTPException: self._http_error, Exception: self._crash}
        self.app = Starlette(routes=routes, exception_handlers=handlers,  # type: ignore[arg-type]
                             lifespan=self._lifespan)
        self.asgi: ASGIApp = Metered(Authorized(self.app, token), metrics)

    # --- health, discovery, metadata ---------------------------------------------------------------

    async def server_metadata(self, request: Request) -> Response:
        return JSONResponse({"name": "streamscore", "version": __version__, "extensions": ["score"]})

    async def live(self, request: Request) -> Response:
        return JSONResponse({"live": True})

    async def ready(self, request: Request) -> Response:
        ok = bool(self.catalog.models()) and not self.model_down
        return JSONResponse({"ready": ok}, 200 if ok else 503)

    async def model_index(self, request: Request) -> Response:
        return JSONResponse({"models": [metadata(info) for info in self.catalog.models()]})

    async def model_metadata(self, request: Request) -> Response:
        served = self._resolve(request)
        return JSONResponse(metadata(served.info))

    async def model_ready(self, request: Request) -> Response:
        self._resolve(request)
        return JSONResponse({"ready": not self.model_down}, 503 if self.model_down else 200)

    async def openapi_document(self, request: Request) -> Response:
        return Response(self._openapi, media_type="application/json")

    async def prometheus(self, request: Request) -> Response:
        body, content_type = self.metrics.exposition()
        return Response(body, media_type=content_type)

    # --- scoring ------------------------------------------------------------------------------------

    async def score(self, request: Request) -> Response:
        """JSON events as the topic carries them -> their score records, or the dead-letter reasons."""
        served = self._resolve(request)
        spec = served.scorer.spec
        body = await self._body(request)
        events, as_list = split_events(body, spec.max_bytes, spec.max_depth, self.settings.max_events_per_request)
        results: list[Outcome] = await self._submit(self._lane(served, "events"), events)
        for r in results:
            if isinstance(r, Rejection):
                self.metrics.serve_rejected.labels(str(r.reason)).inc()
        status, answer = score_body(results, as_list)
        return JSONResponse(answer, status)

    async def infer(self, request: Request) -> Response:
        """An Open Inference Protocol tensor of feature rows -> score and decision per row."""
        served = self._resolve(request)
        body = await self._body(request)
        parsed = parse_infer(body, served.info, self.settings.max_events_per_request)
        matrix = tensor_rows(parsed, served.info.inputs[0].shape[1])
        rows: list[Row] = await self._submit(self._lane(served, "tensor"), list(matrix))
        failed = [(i, r) for i, r in enumerate(rows) if isinstance(r, Rejection)]
        if failed:
            self.metrics.serve_rejected.labels(str(Reason.MODEL_ERROR)).inc(len(failed))
            return error(422, str(Reason.MODEL_ERROR), "; ".join(f"row {i}: {r.detail}" for i, r in failed[:5]))
        scored: list[tuple[float, str]] = rows  # type: ignore[assignment] # none failed
        outputs = [{"name": "score", "datatype": "FP32", "shape": [len(scored)], "data": [s for s, _ in scored]},
                   {"name": "decision", "datatype": "BYTES", "shape": [len(scored)], "data": [d for _, d in scored]}]
        if parsed.outputs:
            wanted = {o.name for o in parsed.outputs}
            outputs = [o for o in outputs if o["name"] in wanted]
        return JSONResponse({"model_name": served.info.name, "model_version": served.version, "id": parsed.id,
                             "outputs": outputs})

    def _resolve(self, request: Request) -> Served:
        name, version = request.path_params["name"], request.path_params.get("version")
        served = self.catalog.resolve(name, version)
        if served is None:
            what = f"model {name!r}" + (f" version {version!r}" if version is not None else "")
            raise BadRequest(404, "not_found", f"{what} is not served (GET /v2/models lists them)")
        return served

    async def _body(self, request: Request) -> bytes:
        """The body, refused with 413 once it is over ``serve.max_request_bytes`` (unread if it says so)."""
        limit = self.settings.max_request_bytes
        length = request.headers.get("content-length", "")
        if length.isdigit() and int(length) > limit:
            raise BadRequest(413, "too_large", f"body of {length} bytes exceeds serve.max_request_bytes ({limit})")
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise BadRequest(413, "too_large", f"body exceeds serve.max_request_bytes ({limit})")
            chunks.append(chunk)
        return b"".join(chunks)

    async def _submit(self, lane: DynamicBatcher[Any, Any], items: list[Any]) -> list[Any]:
        timeout = self.settings.request_timeout_s
        try:
            async with asyncio.timeout(timeout):  # no extra task per request, unlike wait_for
                return await lane.submit(items)
        except Overloaded as exc:
            raise BadRequest(503, "overloaded", str(exc)) from None
        except TimeoutError:
            raise BadRequest(504, "timeout", f"not scored within serve.request_timeout_s ({timeout} s)") from None
        except ModelUnavailable as exc:
            raise BadRequest(503, "model_unavailable", str(exc)) from None

    def _lane(self, served: Served, kind: str) -> DynamicBatcher[Any, Any]:
        key = (served.info.name, served.version, kind)
        lane = self._lanes.get(key)
        if lane is None:
            s = self.settings
            call = functools.partial(self._score_events if kind == "events" else self._score_rows, served)
            lane = DynamicBatcher(call, self._executor, s.max_batch_size, s.max_wait_ms / 1000, s.adaptive,
                                  s.max_queued_events, self.metrics.serve_batch_size.observe)
            self._lanes[key] = lane
        return lane

    def _score_events(self, served: Served, events: list[RestEvent]) -> list[Outcome]:
        """On the inference thread: the core's scorer over a batch of events."""
        with self._watch():
            return outcomes(served.scorer.score(events), len(events))

    def _score_rows(self, served: Served, rows: list[np.ndarray]) -> list[Row]:
        """On the inference thread: the core's matrix scoring over a batch of rows."""
        with self._watch():
            result = served.scorer.score_matrix(np.stack(rows))
        labels = served.scorer.policy.labels
        return [Rejection(i, Reason.MODEL_ERROR, result.failed[i]) if i in result.failed else (score, labels[d])
                for i, (score, d) in enumerate(zip(result.scores.tolist(), result.decisions.tolist(), strict=True))]

    @contextlib.contextmanager
    def _watch(self) -> Any:
        """Readiness follows the model: down after it fails by itself, up again once it scores."""
        try:
            yield
        except ModelUnavailable:
            if not self.model_down:
                log.warning("REST: the model is failing; /v2/health/ready answers 503 until it scores again")
            self.model_down = True
            raise
        self.model_down = False

    # --- errors and lifecycle -------------------------------------------------------------------------

    async def _refused(self, request: Request, exc: BadRequest) -> Response:
        headers = {"Retry-After": "1"} if exc.status == 503 else None
        return error(exc.status, exc.reason, exc.detail, headers)

    async def _http_error(self, request: Request, exc: HTTPException) -> Response:
        reason = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "bad_request")
        return error(exc.status_code, reason, str(exc.detail), dict(exc.headers or {}))

    async def _crash(self, request: Request, exc: Exception) -> Response:
        log.error("REST: %s %s failed: %s: %s", request.method, request.url.path, type(exc).__name__, exc)
        return error(500, "internal", f"{type(exc).__name__}: {str(exc)[:200]}")

    @contextlib.asynccontextmanager
    async def _lifespan(self, app: Starlette) -> AsyncIterator[None]:
        yield
        await self.close()

    async def close(self) -> None:
        for lane in self._lanes.values():
            await lane.close()
        self._lanes.clear()
        self._executor.shutdown(wait=False, cancel_futures=True)


class Authorized:
    """Every request but the probes must carry ``Authorization: Bearer <token>`` (when one is set)."""

    def __init__(self, app: ASGIApp, token: str | None) -> None:
        self.app = app
        self.expected = None if token is None else f"Bearer {token}".encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.expected is None or scope["type"] != "http" or scope["path"] in OPEN_PATHS:
            await self.app(scope, receive, send)
            return
        given = next((v for k, v in scope["headers"] if k == b"authorization"), b"")
        if hmac.compare_digest(given, self.expected):
            await self.app(scope, receive, send)
            return
        reason = "a wrong bearer token" if given else "no bearer token"
        response = error(401, "unauthorized", f"{reason} (Authorization: Bearer ...)", {"WWW-Authenticate": "Bearer"})
        await response(scope, receive, send)


class Metered:
    """Counts every answer by route and status, and times it (``streamscore_serve_*``)."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics
        self._counters: dict[tuple[str, int], Any] = {}
        self._timers: dict[str, Any] = {}
        """The labelled children, looked up once (``labels`` takes a lock and builds a key per call)."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def sending(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            endpoint = scope.get("endpoint")
            route = getattr(endpoint, "__name__", "none")
            counter = self._counters.get((route, status))
            if counter is None:
                counter = self._counters[route, status] = self.metrics.serve_requests.labels(route, str(status))
            timer = self._timers.get(route)
            if timer is None:
                timer = self._timers[route] = self.metrics.serve_request_seconds.labels(route)
            counter.inc()
            timer.observe(time.perf_counter() - started)
