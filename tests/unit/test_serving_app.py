"""The REST app in process (httpx's ASGI transport) over fake runners: what a real server cannot be
made to do on demand: a slow model (504), a failing one (503, unready, then ready again), a full
queue (503); and the serve settings' token sources."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import orjson
import pytest

from streamscore.config import ServeSettings
from streamscore.core.scorer import Scorer, ScoringSpec
from streamscore.metrics import Metrics
from streamscore.serving.app import RestApp
from streamscore.serving.catalog import ConfiguredCatalog
from tests.unit.test_scoring import FakeRunner, event, make_settings


class SwitchRunner(FakeRunner):
    """The fake model, made slow or failing on demand."""

    def __init__(self) -> None:
        super().__init__()
        self.delay = 0.0
        self.failing = False

    def predict(self, matrix: np.ndarray) -> np.ndarray:
        time.sleep(self.delay)
        if self.failing:
            raise RuntimeError("device lost")
        return super().predict(matrix)


def app(runner: SwitchRunner, **serve: Any) -> RestApp:
    settings = make_settings()
    catalog = ConfiguredCatalog(Scorer(ScoringSpec.from_settings(settings), runner), settings)
    return RestApp(catalog, ServeSettings(**serve), Metrics(), None)


async def post(rest: RestApp, body: bytes, path: str = "/v1/score/fake-model") -> httpx.Response:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(rest.asgi), base_url="http://rest") as client:
        return await client.post(path, content=body)


async def get(rest: RestApp, path: str) -> httpx.Response:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(rest.asgi), base_url="http://rest") as client:
        return await client.get(path)


def test_a_request_the_model_does_not_answer_in_time_is_a_504() -> None:
    runner = SwitchRunner()
    runner.delay = 0.5
    rest = app(runner, request_timeout_s=0.05)

    async def scenario() -> httpx.Response:
        response = await post(rest, orjson.dumps(event()))
        await rest.close()
        return response

    response = asyncio.run(scenario())
    assert response.status_code == 504
    assert response.json()["reason"] == "timeout"


def test_a_failing_model_is_a_503_and_unready_until_it_scores_again() -> None:
    runner = SwitchRunner()
    rest = app(runner)

    async def scenario() -> list[httpx.Response]:
        answers = [await post(rest, orjson.dumps(event()))]  # scores: the probe row is known
        runner.failing = True
        answers += [await post(rest, orjson.dumps(event())), await get(rest, "/v2/health/ready")]
        runner.failing = False
        answers += [await post(rest, orjson.dumps(event())), await get(rest, "/v2/health/ready")]
        await rest.close()
        return answers

    ok, down, unready, back, ready = asyncio.run(scenario())
    assert ok.status_code == 200
    assert (down.status_code, down.json()["reason"]) == (503, "model_unavailable")
    assert down.headers["retry-after"] == "1"
    assert unready.status_code == 503
    assert (back.status_code, ready.status_code) == (200, 200)


def test_a_request_past_the_queue_limit_is_a_503() -> None:
    rest = app(SwitchRunner(), max_queued_events=2)

    async def scenario() -> httpx.Response:
        response = await post(rest, orjson.dumps([event()] * 3))
        await rest.close()
        return response

    response = asyncio.run(scenario())
    assert (response.status_code, response.json()["reason"]) == (503, "overloaded")


def test_the_token_comes_from_the_setting_or_a_file(tmp_path: Path) -> None:
    assert ServeSettings().bearer_token() is None
    assert ServeSettings.model_validate({"token": "abc"}).bearer_token() == "abc"
    path = tmp_path / "token"
    path.write_text("from-file\n")
    assert ServeSettings(token_file=path).bearer_token() == "from-file"
    with pytest.raises(ValueError, match="token_file"):
        ServeSettings(token_file=tmp_path / "missing").bearer_token()
    with pytest.raises(ValueError, match="not both"):
        ServeSettings.model_validate({"token": "abc", "token_file": path})
    assert "abc" not in repr(ServeSettings.model_validate({"token": "abc"})), "the token is a secret"
