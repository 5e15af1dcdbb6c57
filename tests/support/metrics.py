"""Reading a service's ``/metrics`` (Prometheus exposition text)."""

from __future__ import annotations

import re

from load.faults.harness import parse_metrics


def samples(text: str) -> dict[str, float]:
    """Every sample as ``name{labels}`` -> value."""
    return parse_metrics(text)


def metric(text: str, name: str, labels: str = "") -> float:
    """The value of the sample ``name`` + ``labels`` (``labels`` as written, ``{reason="empty"}``);
    0.0 where it is not exported (yet)."""
    return samples(text).get(name + labels, 0.0)


def labelled(values: dict[str, float], name: str) -> dict[str, float]:
    """The samples of ``name`` with exactly one label, by that label's value."""
    pattern = re.compile(rf'^{re.escape(name)}\{{\w+="([^"]*)"\}}$')
    return {m.group(1): v for k, v in values.items() if (m := pattern.match(k))}
