"""The accounting step and the proxy's frame parsing, without a broker: they must be able to fail."""

from __future__ import annotations

import struct

from load.faults.harness import Output, Topics, account, commits_past_outputs
from load.faults.proxy import _client_id
from load.faults.scenarios import Result

T = Topics("in", "out", "dlq", "g", 2)


def test_accounting_counts_lost_duplicated_and_unknown_ids() -> None:
    ids = frozenset({b"a", b"b", b"c", b"d"})
    outputs = [Output(b"a", "out", (0, 0)), Output(b"a", "out", (0, 0)), Output(b"b", "dlq", (1, 0)),
               Output(b"c", "out", (0, 1)), Output(b"c", "out", (0, 1)), Output(b"c", "out", (0, 1)),
               Output(b"zz", "out", (1, 1))]
    acc = account(outputs, T, ids)
    assert (acc.lost, acc.duplicated, acc.unknown) == (1, 3, 1)
    assert (acc.scored, acc.dead_lettered) == (6, 1)


def test_a_commit_past_an_unwritten_offset_is_reported() -> None:
    outputs = [Output(b"a", "out", (0, 0)), Output(b"b", "out", (0, 2)), Output(b"c", "dlq", (1, 0))]
    assert commits_past_outputs({0: 1, 1: 1}, outputs) == {}
    assert commits_past_outputs({0: 3, 1: 1}, outputs) == {0: 1}
    assert commits_past_outputs({0: -1001, 1: -1001}, outputs) == {}


def test_result_fails_on_loss_duplicates_past_the_bound_and_failed_checks() -> None:
    assert Result("x", 10, "f", 0, 5, 5, checks={"ok": True}).failures() == []
    assert Result("x", 10, "f", 1, 6, 5, checks={"exit 0": False}).failures() == [
        "exit 0", "1 events lost", "6 duplicates exceed the bound of 5"]


def test_proxy_reads_the_client_id_from_a_request_header() -> None:
    body = struct.pack(">hhih", 18, 3, 7, len(b"streamscore-sink")) + b"streamscore-sink" + b"\x00"
    frame = struct.pack(">i", len(body)) + body
    assert _client_id(frame) == "streamscore-sink"
    null_id = struct.pack(">i", 10) + struct.pack(">hhih", 18, 3, 7, -1)
    assert _client_id(null_id) == ""
