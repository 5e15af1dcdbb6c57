"""Check one variant's outputs against the inputs: one output per input, by input key.

Pure (no Kafka): the driver reads the outputs back and hands them here. Score records must be JSON
objects with a score in [0, 1]; with a reference (the first variant's outputs), each key must be
scored or dead-lettered the same way, with the same score up to ``tolerance`` (every variant runs
the same model on the same features, so anything else means a variant did different work).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import orjson

Reference = Mapping[bytes, float | None]
"""Input key -> score, or None where the input was dead-lettered."""


@dataclass(slots=True)
class Validation:
    inputs: int
    outputs: int = 0
    scored: int = 0
    dead_lettered: int = 0
    missing: int = 0
    duplicated: int = 0
    unknown: int = 0
    malformed: int = 0
    mismatched: int = 0
    max_score_difference: float = 0.0
    examples: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (self.missing or self.duplicated or self.unknown or self.malformed or self.mismatched)

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "ok": self.ok}


def validate(inputs: Iterable[bytes], outputs: Iterable[tuple[bool, bytes | None, bytes | None]],
             reference: Reference | None = None,
             tolerance: float = 1e-5) -> tuple[Validation, dict[bytes, float | None]]:
    """``outputs``: (is a score record, key, value) per record read back. Returns the verdict and
    this variant's key -> score map (a reference for the next variant)."""
    expected = set(inputs)
    result = Validation(inputs=len(expected))
    seen: Counter[bytes | None] = Counter()
    scores: dict[bytes, float | None] = {}
    for is_score, key, value in outputs:
        result.outputs += 1
        seen[key] += 1
        if key not in expected:
            result.unknown += 1
            _example(result, f"output for an unknown key {key!r}")
            continue
        if not is_score:
            result.dead_lettered += 1
            scores[key] = None
            continue
        result.scored += 1
        score = _score(value)
        if score is None:
            result.malformed += 1
            _example(result, f"score record for {key!r} is not a JSON object with a score in [0, 1]")
        scores[key] = score
    result.duplicated = sum(n - 1 for key, n in seen.items() if n > 1 and key in expected)
    if result.duplicated:
        _example(result, f"more than one output for {next(k for k, n in seen.items() if n > 1)!r}")
    result.missing = sum(1 for key in expected if key not in seen)
    if result.missing:
        _example(result, f"no output for {next(k for k in expected if k not in seen)!r}")
    if reference is not None:
        _compare(result, scores, reference, tolerance)
    return result, scores


def _compare(result: Validation, scores: dict[bytes, float | None], reference: Reference, tolerance: float) -> None:
    for key, score in scores.items():
        ref = reference.get(key, MISSING_REF)
        if ref is MISSING_REF:
            continue  # missing from the reference: counted when the reference was validated
        if (score is None) != (ref is None):
            result.mismatched += 1
            _example(result, f"{key!r}: {'dead-lettered' if score is None else 'scored'} here, not in the reference")
        elif score is not None and ref is not None:
            difference = abs(score - ref)
            result.max_score_difference = max(result.max_score_difference, difference)
            if difference > tolerance:
                result.mismatched += 1
                _example(result, f"{key!r}: score {score} here, {ref} in the reference")


MISSING_REF: Any = object()


def _score(value: bytes | None) -> float | None:
    try:
        record = orjson.loads(value or b"")
    except orjson.JSONDecodeError:
        return None
    score = record.get("score") if type(record) is dict else None
    if type(score) is not float or not 0.0 <= score <= 1.0:
        return None
    return score


def _example(result: Validation, text: str) -> None:
    if len(result.examples) < 5:
        result.examples.append(text)
