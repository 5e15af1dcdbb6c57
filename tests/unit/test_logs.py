"""Log output formats."""

from __future__ import annotations

import logging

import orjson
import pytest

from streamscore.logs import configure_logging


@pytest.fixture(autouse=True)
def _restore_root() -> object:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def test_json_format_writes_one_object_per_line(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("INFO", "json")
    log = logging.getLogger("streamscore.test")
    log.info("scored %d events\nsecond line", 5)
    try:
        raise ValueError("boom")
    except ValueError:
        log.exception("failed")
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 2, "newlines inside messages stay inside one JSON line"
    first, second = (orjson.loads(line) for line in lines)
    assert first["message"] == "scored 5 events\nsecond line"
    assert first["level"] == "INFO" and first["logger"] == "streamscore.test"
    assert first["time"].endswith("+00:00")
    assert "ValueError: boom" in second["exception"]


def test_reconfiguring_replaces_only_its_own_handler(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("INFO", "text")
    configure_logging("WARNING", "json")
    logging.getLogger("streamscore.test").warning("once")
    logging.getLogger("streamscore.test").info("filtered")
    lines = capsys.readouterr().err.strip().splitlines()
    assert [orjson.loads(line)["message"] for line in lines] == ["once"]
