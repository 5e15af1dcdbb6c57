"""Fetched record batches as the Faust engine's consumer reads them: aiokafka's reader, except that a
record with a header name that is not UTF-8 is read rather than stopping its partition.

aiokafka decodes header names (strictly, as UTF-8) while it parses a fetch response, so one such
record raises ``UnicodeDecodeError`` out of every fetch of its partition: the partition can never be
consumed past it, whatever the engine does with the event. Other clients can write such names (the
Kafka protocol only says "string"). The confluent-kafka engine replaces such an input's headers by
``UNREADABLE_HEADERS``; so does this reader, and the input is scored or dead-lettered as any other.

Every batch is still read by aiokafka's (C) reader; only a batch that fails to decode is read again,
here, in Python. aiokafka builds its reader inside its fetch routine (``MemoryRecords``, a name in
``aiokafka.consumer.fetcher``), with no option to choose another: ``read_header_names_tolerantly``
points that name at ``TolerantMemoryRecords``, once, when the engine creates its consumer.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterator
from typing import Any, NamedTuple

import aiokafka.consumer.fetcher as aiokafka_fetcher
from aiokafka.codec import gzip_decode, lz4_decode, snappy_decode, zstd_decode
from aiokafka.record.default_records import DefaultRecordBatch
from aiokafka.record.memory_records import MemoryRecords
from aiokafka.record.util import decode_varint

from streamscore.core.records import UNREADABLE_HEADERS

BATCH_HEADER = struct.Struct(">qiibIhiqqqhii")
"""A v2 record batch's header (aiokafka's ``DefaultRecordBase.HEADER_STRUCT``), 61 bytes; its last
field is the record count."""
LOG_OVERHEAD = 12
"""Base offset (8 bytes) and size (4) before every batch, in every message format."""
LOG_APPEND_TIME = 1
_DECODERS: dict[int, Callable[[bytes], bytes]] = {1: gzip_decode, 2: snappy_decode, 3: lz4_decode, 4: zstd_decode}
_CODEC_MASK = 0x07


def read_header_names_tolerantly() -> None:
    """Make aiokafka's fetcher read fetch responses through ``TolerantMemoryRecords`` (idempotent)."""
    aiokafka_fetcher.MemoryRecords = TolerantMemoryRecords


class Record(NamedTuple):
    """A record read here: what aiokafka's fetcher reads of one (``DefaultRecord``'s attributes)."""

    offset: int
    timestamp: int
    timestamp_type: int
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes | None]]
    checksum: None = None


class TolerantMemoryRecords:
    """aiokafka's ``MemoryRecords`` over a fetch response's records, whose v2 batches are ``Batch``es."""

    __slots__ = ("_data", "_pos", "_records")

    def __init__(self, data: bytes) -> None:
        self._records = MemoryRecords(data)
        self._data = memoryview(data)
        self._pos = 0

    def size_in_bytes(self) -> int:
        return int(self._records.size_in_bytes())

    def has_next(self) -> bool:
        return bool(self._records.has_next())

    def next_batch(self) -> Any:
        batch = self._records.next_batch()
        if batch is None:
            return None
        start = self._pos
        self._pos += LOG_OVERHEAD + int.from_bytes(self._data[start + 8:start + LOG_OVERHEAD], "big", signed=True)
        return Batch(batch, self._data[start:self._pos]) if batch.magic == 2 else batch


class Batch:
    """aiokafka's batch, whose records are read again here from the batch's bytes once one of them has
    a header name that is not UTF-8 (from the record after the last one aiokafka read)."""

    __slots__ = ("_again", "_batch", "_next_offset", "_raw")

    def __init__(self, batch: DefaultRecordBatch, raw: memoryview) -> None:
        self._batch = batch
        self._raw = raw
        self._again: Iterator[Record] | None = None
        self._next_offset = -1

    def __getattr__(self, name: str) -> Any:
        return getattr(self._batch, name)

    def __iter__(self) -> Batch:
        iter(self._batch)  # aiokafka's batch decompresses its records here
        return self

    def __next__(self) -> Any:
        if self._again is None:
            try:
                record = next(self._batch)
            except UnicodeDecodeError:
                self._again = (r for r in read_batch(bytes(self._raw)) if r.offset >= self._next_offset)
            else:
                self._next_offset = record.offset + 1
                return record
        return next(self._again)


def read_batch(raw: bytes) -> Iterator[Record]:
    """The records of one v2 batch; a record with a header name that is not UTF-8 gets
    ``UNREADABLE_HEADERS`` in the place of its headers."""
    (base_offset, _, _, _, _, attributes, _, first_timestamp, max_timestamp, _, _, _,
     count) = BATCH_HEADER.unpack_from(raw)
    codec = attributes & _CODEC_MASK
    body = bytearray(_DECODERS[codec](raw[BATCH_HEADER.size:]) if codec else raw[BATCH_HEADER.size:])
    timestamp_type = int(bool(attributes & 0x08))
    pos = 0
    for _ in range(count):
        _, pos = decode_varint(body, pos)  # the record's length
        _, pos = decode_varint(body, pos)  # attributes (unused)
        timestamp_delta, pos = decode_varint(body, pos)
        offset_delta, pos = decode_varint(body, pos)
        key, pos = _bytes(body, pos)
        value, pos = _bytes(body, pos)
        header_count, pos = decode_varint(body, pos)
        headers: list[tuple[bytes, bytes | None]] = []
        for _ in range(header_count):
            name, pos = _bytes(body, pos)
            header_value, pos = _bytes(body, pos)
            headers.append((name or b"", header_value))
        timestamp = max_timestamp if timestamp_type == LOG_APPEND_TIME else first_timestamp + timestamp_delta
        yield Record(base_offset + offset_delta, timestamp, timestamp_type, key, value, _names(headers))


def _bytes(body: bytearray, pos: int) -> tuple[bytes | None, int]:
    length, pos = decode_varint(body, pos)
    return (None, pos) if length < 0 else (bytes(body[pos:pos + length]), pos + length)


def _names(headers: list[tuple[bytes, bytes | None]]) -> list[tuple[str, bytes | None]]:
    try:
        return [(name.decode(), value) for name, value in headers]
    except UnicodeDecodeError:
        return list(UNREADABLE_HEADERS)
