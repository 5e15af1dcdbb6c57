"""The Faust engine's record reader: aiokafka's fetcher reads a record whose header name is not UTF-8
(with the note in place of its headers) instead of failing on every fetch of its partition."""

from __future__ import annotations

import struct

import pytest
from aiokafka.codec import gzip_encode
from aiokafka.consumer.fetcher import PartitionRecords
from aiokafka.record.default_records import DefaultRecordBatchBuilder
from aiokafka.record.memory_records import MemoryRecords
from aiokafka.record.util import calc_crc32c
from aiokafka.structs import TopicPartition

from streamscore.core.records import UNREADABLE_HEADERS
from streamscore.engines.faust_records import BATCH_HEADER, TolerantMemoryRecords

TP = TopicPartition("in", 0)
PLACEHOLDER, BAD_NAME = b"@@trace", b"\xff\xfetrace"
"""A header name written as the placeholder, then replaced by bytes that are not UTF-8 (aiokafka's
builder, like librdkafka's Python client, writes only str names)."""
CRC_AT, ATTRIBUTES_AT = struct.calcsize(">qiib"), struct.calcsize(">qiibI")


def batch(base_offset: int, records: list[tuple[bytes, list[tuple[str, bytes | None]]]], gzip: bool = False) -> bytes:
    """A v2 batch of ``records`` (value, headers; key = value), placeholder names made bad, CRC right."""
    builder = DefaultRecordBatchBuilder(2, 0, 0, -1, -1, -1, 1 << 20)
    for i, (value, headers) in enumerate(records):
        builder.append(i, 1_790_000_000_000 + i, value, value, headers)
    raw = bytearray(bytes(builder.build()).replace(PLACEHOLDER, BAD_NAME))
    if gzip:
        body = gzip_encode(bytes(raw[BATCH_HEADER.size:]))
        raw = raw[:BATCH_HEADER.size] + bytearray(body)
        struct.pack_into(">i", raw, 8, len(raw) - 12)
        struct.pack_into(">h", raw, ATTRIBUTES_AT, struct.unpack_from(">h", raw, ATTRIBUTES_AT)[0] | 1)
    struct.pack_into(">q", raw, 0, base_offset)
    struct.pack_into(">I", raw, CRC_AT, calc_crc32c(bytes(raw[ATTRIBUTES_AT:])))
    return bytes(raw)


def fetched(data: bytes, records: type = TolerantMemoryRecords) -> list[tuple[int, bytes | None, list[object]]]:
    """What aiokafka's fetcher makes of a fetch response's records (CRCs checked)."""
    partition = PartitionRecords(TP, records(data), [], 0, None, None, True, "read_uncommitted")
    return [(r.offset, r.value, list(r.headers)) for r in partition]


GOOD: list[tuple[str, bytes | None]] = [("trace", b"t-1"), ("ok", None)]
BAD: list[tuple[str, bytes | None]] = [(PLACEHOLDER.decode(), b"x"), ("ok", b"y")]


@pytest.mark.parametrize("gzip", [False, True], ids=["plain", "gzip"])
def test_a_record_with_a_header_name_that_is_not_utf8_is_read_with_the_note_in_place_of_its_headers(
    gzip: bool,
) -> None:
    data = (batch(0, [(b"a", GOOD), (b"b", [])], gzip)
            + batch(2, [(b"c", GOOD), (b"d", BAD), (b"e", GOOD), (b"f", BAD)], gzip)
            + batch(6, [(b"g", GOOD)], gzip))
    with pytest.raises(UnicodeDecodeError):  # what aiokafka does by itself, on every fetch of the partition
        fetched(data, MemoryRecords)

    assert fetched(data) == [
        (0, b"a", GOOD), (1, b"b", []), (2, b"c", GOOD), (3, b"d", list(UNREADABLE_HEADERS)), (4, b"e", GOOD),
        (5, b"f", list(UNREADABLE_HEADERS)), (6, b"g", GOOD)]


def test_records_read_again_keep_their_key_and_timestamp() -> None:
    data = batch(10, [(b"a", GOOD), (b"b", BAD)])
    partition = PartitionRecords(TP, TolerantMemoryRecords(data), [], 0, None, None, True, "read_uncommitted")
    records = list(partition)
    assert [(r.offset, r.key, r.timestamp, r.timestamp_type) for r in records] == [
        (10, b"a", 1_790_000_000_000, 0), (11, b"b", 1_790_000_000_001, 0)]
    assert partition.next_fetch_offset == 12
