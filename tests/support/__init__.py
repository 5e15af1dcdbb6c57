"""Test support in one place: producing inputs, reading outputs back by condition, scraping
metrics, waiting for conditions, and the broker and service fixtures (``tests/conftest.py`` loads
``tests.support.fixtures`` as a pytest plugin).

What the load tools and the fault harness share with the tests lives in ``load`` (``load.kafka_io``,
``load.waiting``, ``load.faults.harness``) and is re-exported here: tests may import ``load``, never
the other way round.
"""

from __future__ import annotations

from load.faults.harness import ServiceProcess, Topics
from tests.support.kafka import (
    OutputReader,
    ReadTimeout,
    Record,
    committed,
    produce,
    produce_one,
    produce_raw_header_names,
    stop_and_read,
)
from tests.support.metrics import labelled, metric, samples
from tests.support.waiting import WaitTimeout, wait_for

__all__ = [
    "OutputReader",
    "ReadTimeout",
    "Record",
    "ServiceProcess",
    "Topics",
    "WaitTimeout",
    "committed",
    "labelled",
    "metric",
    "produce",
    "produce_one",
    "produce_raw_header_names",
    "samples",
    "stop_and_read",
    "wait_for",
]
