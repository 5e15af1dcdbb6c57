"""Virtual environments for the peers a benchmark compares against (``load.peers``, ``load.rest``):
each under ``load/peers/.venvs/<name>`` with pinned requirements, kept out of the project's own
dependencies."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

VENVS = Path(__file__).parent / ".venvs"
COMMON = ["onnxruntime==1.32.0", "numpy==2.4.6", "orjson==3.13.0"]
"""Pinned in every peer's environment: the same model runtime as streamscore's."""


def make_venv(name: str, pins: list[str]) -> Path:
    """The virtual environment ``load/peers/.venvs/<name>`` with exactly ``pins`` installed, made
    with this Python and rebuilt only when the pins change."""
    venv = VENVS / name
    stamp = venv / "pins.txt"
    if stamp.exists() and stamp.read_text().split() == pins:
        print(f"{name}: {venv} up to date", flush=True)
        return venv
    print(f"{name}: installing {' '.join(pins)} into {venv} ...", flush=True)
    subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True)
    subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "-q", *pins], check=True)
    stamp.write_text("\n".join(pins) + "\n")
    return venv
