"""``streamscore profile``: the same reference events as JSON Lines, CSV and Parquet give the same
profile, written next to the model; a data set with no scorable row is one error line."""

from __future__ import annotations

import csv
import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from streamscore.demo.transactions import TransactionGenerator
from tests.cli.test_validate import REPO

DEMO = REPO / "streamscore" / "demo"


def _flat(event: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in event.items():
        if isinstance(value, dict):
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[prefix + key] = value
    return out


def _setup(tmp_path: Path) -> tuple[Path, list[dict[str, Any]]]:
    shutil.copy(DEMO / "fraud_model.onnx", tmp_path / "fraud_model.onnx")
    config = tmp_path / "config.yaml"
    shutil.copy(DEMO / "config.yaml", config)
    return config, TransactionGenerator(seed=3).events(400)


def test_jsonl_csv_and_parquet_give_one_profile(tmp_path: Path, cli: Callable[..., int],
        capsys: pytest.CaptureFixture[str]) -> None:
    config, events = _setup(tmp_path)
    (tmp_path / "ref.jsonl").write_bytes(b"\n".join(orjson.dumps(e) for e in events))
    rows = [_flat(e) for e in events]
    columns = sorted({k for r in rows for k in r})
    with (tmp_path / "ref.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, columns)
        writer.writeheader()
        writer.writerows({k: ("true" if v is True else "false" if v is False else v) for k, v in r.items()}
                         for r in rows)
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "ref.parquet")

    profiles = []
    for name in ("ref.jsonl", "ref.csv", "ref.parquet"):  # in-process: one start-up for the three
        assert cli("--log-level", "WARNING", "profile", "-c", str(config), "--data", str(tmp_path / name)) == 0
        assert "profile ok" in capsys.readouterr().out
        profile = json.loads((tmp_path / "fraud_model.profile.json").read_text())
        profiles.append({k: v for k, v in profile.items() if k != "source"})
    assert profiles[0]["rows"] == 400
    assert profiles[0] == profiles[1] == profiles[2]
    names = [f["name"] for f in profiles[0]["features"]]
    assert names == [f["name"] for f in yaml.safe_load(config.read_text())["features"]]
    assert sum(profiles[0]["score"]["counts"]) == 400


def test_no_scorable_row_is_one_error_line(tmp_path: Path, cli: Callable[..., int],
        capsys: pytest.CaptureFixture[str]) -> None:
    config, _ = _setup(tmp_path)
    (tmp_path / "bad.jsonl").write_text('{"amount": "lots"}\n')
    assert cli("--log-level", "ERROR", "profile", "-c", str(config), "--data", str(tmp_path / "bad.jsonl")) == 2
    errors = capsys.readouterr().err.strip().splitlines()
    assert len(errors) == 1 and "--data: none of the 1 rows can be scored" in errors[0], errors
