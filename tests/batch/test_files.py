"""``streamscore batch`` over files: each format, the rejects, the summary, resuming after kill -9."""

from __future__ import annotations

import collections
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from load.batch_data import events, write
from streamscore.batch.run import BatchRun
from streamscore.cli import main
from streamscore.config import load_settings
from streamscore.core.records import Reason
from streamscore.errors import ConfigError
from tests.support import wait_for
from tests.support.batch import batch_config, positions, read_output


def run(config: Path) -> str:
    return BatchRun(load_settings(config), progress=False).run(threading.Event()).line()


def test_each_format_gives_the_same_scores(tmp_path: Path) -> None:
    values = events(600, seed=11)
    for ext in ("jsonl", "csv", "parquet"):
        write(tmp_path / f"in.{ext}", values, null_every=50)
    out = tmp_path / "out"
    line = run(batch_config(tmp_path, {"input": {"files": [str(tmp_path / "in.*")]}, "output": str(out),
                                       "chunk_rows": 250, "batch_rows": 100}))
    scores, rejects = read_output(out)
    by_file: dict[str, dict[str, tuple[float, str]]] = collections.defaultdict(dict)
    for r in scores:
        by_file[Path(r["source"]["topic"]).suffix][r["transaction_id"]] = (r["score"], r["decision"])
    jsonl, csv, parquet = by_file[".jsonl"], by_file[".csv"], by_file[".parquet"]
    assert len(jsonl) == 600
    assert len(csv) == len(parquet) == 600 - 12, "every 50th row of the tables has a null amount"
    assert {k: jsonl[k] for k in csv} == csv
    assert {k: jsonl[k] for k in parquet} == parquet
    assert collections.Counter(r["reason"] for r in rejects) == {Reason.MISSING_FIELD: 24}
    assert {r["source"]["offset"] for r in rejects} == set(range(49, 600, 50))
    assert line.startswith(f"read 1800 = scored {1800 - 24} + rejected 24")


def test_malformed_lines_are_rejected_with_the_streams_reasons(tmp_path: Path) -> None:
    values = events(400, seed=12, malformed_rate=0.1)
    write(tmp_path / "in.jsonl", values)
    out = tmp_path / "out"
    run(batch_config(tmp_path, {"input": {"files": [str(tmp_path / "in.jsonl")]}, "output": str(out),
                                "format": "jsonl", "chunk_rows": 128}))
    scores, rejects = read_output(out)
    seen = positions(scores) + positions(rejects)
    assert sorted(o for _, _, o in seen) == list(range(400)), "each line once, scored or rejected"
    assert {r["reason"] for r in rejects} <= {str(r) for r in Reason}
    assert len({r["reason"] for r in rejects}) >= 3, "the generator's malformed kinds"
    assert all(r["value"] == values[r["source"]["offset"]].decode(errors="replace")
               for r in rejects if "value_truncated_from" not in r)


def test_a_killed_run_resumes_and_writes_each_input_once(tmp_path: Path) -> None:
    for i in range(3):
        write(tmp_path / f"in-{i}.jsonl", events(800, seed=20 + i, malformed_rate=0.02))
    out = tmp_path / "out"
    config = batch_config(tmp_path, {"input": {"files": [str(tmp_path / "in-*.jsonl")]}, "output": str(out),
                                     "chunk_rows": 40, "batch_rows": 40})
    command = [sys.executable, "-m", "streamscore", "batch", "-c", str(config), "--progress", "log"]
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    done = out / "_streamscore" / "done"
    try:
        wait_for(lambda: done.exists() and len(list(done.iterdir())) >= 10, 60, "10 chunks written")
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(30)
    finished = len(list(done.iterdir()))
    assert finished < 60, "killed in the middle"
    rerun_holds_each_input_once(command, out, 2400, timeout=120)


def test_a_state_folder_of_another_run_is_refused(tmp_path: Path) -> None:
    write(tmp_path / "a.jsonl", events(10, seed=1))
    write(tmp_path / "b.jsonl", events(10, seed=2))
    out = str(tmp_path / "out")
    run(batch_config(tmp_path, {"input": {"files": [str(tmp_path / "a.jsonl")]}, "output": out}))
    with pytest.raises(ConfigError, match="holds the state of another run"):
        run(batch_config(tmp_path, {"input": {"files": [str(tmp_path / "b.jsonl")]}, "output": out}))


def test_a_glob_that_names_nothing_is_one_config_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = batch_config(tmp_path, {"input": {"files": [str(tmp_path / "none-*.csv")]}, "output": str(tmp_path)})
    assert main(["batch", "-c", str(config), "--progress", "log"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1] == f"streamscore: error: batch.input.files: '{tmp_path / 'none-*.csv'}' names no file"


def test_workers_share_the_files_and_a_killed_run_resumes_each_input_once(tmp_path: Path) -> None:
    for i in range(4):
        write(tmp_path / f"in-{i}.jsonl", events(600, seed=40 + i, malformed_rate=0.02))
    out = tmp_path / "out"
    config = batch_config(tmp_path, {"input": {"files": [str(tmp_path / "in-*.jsonl")]}, "output": str(out),
                                     "chunk_rows": 20, "batch_rows": 20})
    command = [sys.executable, "-m", "streamscore", "batch", "-c", str(config), "--progress", "log", "--workers", "2"]
    # its own process group, so that its workers can be found after their parent is gone
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    done = out / "_streamscore" / "done"
    try:
        wait_for(lambda: done.exists() and len(list(done.iterdir())) >= 8, 90, "8 chunks written")
        proc.send_signal(signal.SIGKILL)  # the parent alone: its workers must not outlive it
    finally:
        proc.wait(30)
    try:
        wait_for(lambda: not _running_in_group(proc.pid), 60, "the workers to stop after their parent died")
    finally:
        if _running_in_group(proc.pid):
            os.killpg(proc.pid, signal.SIGKILL)
    assert len(list(done.iterdir())) < 120, "killed in the middle"
    rerun_holds_each_input_once(command, out, 2400, timeout=180)


def rerun_holds_each_input_once(command: list[str], out: Path, total: int, timeout: float) -> None:
    """The killed run started again with the same arguments ends with each of ``total`` inputs
    once in the output, scored or rejected, and says that it resumed."""
    result = subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)
    assert result.returncode == 0, result.stderr
    scores, rejects = read_output(out)
    seen = collections.Counter(positions(scores) + positions(rejects))
    assert max(seen.values()) == 1, "an input written twice"
    assert len(seen) == total, "an input lost"
    assert f"read {total} = scored {len(scores)} + rejected {len(rejects)}" in result.stdout
    assert "by an earlier run" in result.stdout


def _running_in_group(pgid: int) -> bool:
    """Whether a process of group ``pgid`` is still running (zombies waiting for a reaper are not)."""
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] not in ("Z", "X"):
            return True
    return False


def test_a_worker_scores_only_its_share_of_the_parts(tmp_path: Path) -> None:
    for i in range(3):
        write(tmp_path / f"in-{i}.jsonl", events(50, seed=60 + i))
    out = tmp_path / "out"
    batch = BatchRun(load_settings(batch_config(tmp_path, {"input": {"files": [str(tmp_path / "in-*.jsonl")]},
                                                           "output": str(out), "workers": 2})), progress=False)
    batch.share = (1, 2)
    assert batch.run(threading.Event()).counts.read == 50
    scores, _ = read_output(out)
    assert {Path(r["source"]["topic"]).name for r in scores} == {"in-1.jsonl"}


def test_workers_below_one_is_one_config_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write(tmp_path / "a.jsonl", events(10, seed=1))
    config = batch_config(tmp_path, {"input": {"files": [str(tmp_path / "a.jsonl")]}, "output": str(tmp_path / "o")})
    assert main(["batch", "-c", str(config), "--progress", "log", "--workers", "0"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1] == "streamscore: error: --workers: expected a whole number of at least 1, got 0"
