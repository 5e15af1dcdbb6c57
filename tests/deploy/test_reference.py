"""The generated references match the code: docs/configuration.md the settings model, the
README's metrics table the metrics registry."""

from __future__ import annotations

from pathlib import Path

import pytest

from streamscore import reference
from streamscore.config import Settings

REPO = Path(__file__).resolve().parents[2]


def test_configuration_reference_is_current() -> None:
    assert (REPO / reference.CONFIG_DOC).read_text() == reference.config_reference(), (
        f"docs/configuration.md is out of date with streamscore/config/: run `{reference.REGENERATE}`")


def test_metrics_reference_in_readme_is_current() -> None:
    readme = (REPO / reference.README).read_text()
    assert readme == reference.readme_with_metrics(readme), (
        f"README.md's metrics table is out of date with streamscore/metrics.py: run `{reference.REGENERATE}`")


def test_every_setting_is_documented() -> None:
    """Each key has a description (its attribute docstring), so the reference has no blank rows."""
    undocumented = [f"{path}.{name}".lstrip(".") for path, model, _ in reference.sections(Settings, "")
                    for name, field in model.model_fields.items() if not field.description]
    assert not undocumented


def test_reference_lists_every_key_with_its_default() -> None:
    text = reference.config_reference()
    for path, model, _ in reference.sections(Settings, ""):
        for name in model.model_fields:
            assert f"| `{path + '.' if path else ''}{name}` |" in text
    assert "| `batching.max_wait_ms` | number (≥ 0) | `20.0` |" in text
    assert "| `kafka.source_topics` | list of string (at least 1) | required |" in text
    assert "| `model.provider` | one of `auto`, `cpu`, `cuda`, `tensorrt` | `auto` |" in text


def test_check_mode_reports_stale_files(tmp_path: Path) -> None:
    (tmp_path / "docs").mkdir()
    (tmp_path / reference.CONFIG_DOC).write_text("# stale\n")
    stale = f"intro\n{reference.METRICS_BEGIN}\nstale-row\n{reference.METRICS_END}\nend\n"
    (tmp_path / reference.README).write_text(stale)
    assert reference.main(["--root", str(tmp_path), "--check"]) == 1
    assert reference.main(["--root", str(tmp_path)]) == 0
    assert reference.main(["--root", str(tmp_path), "--check"]) == 0
    readme = (tmp_path / reference.README).read_text()
    assert readme.startswith("intro\n") and readme.endswith(f"{reference.METRICS_END}\nend\n")
    assert "`streamscore_events_consumed_total` | counter" in readme and "stale-row" not in readme


def test_readme_without_markers_is_an_error() -> None:
    with pytest.raises(ValueError, match="markers"):
        reference.readme_with_metrics("no table here")
