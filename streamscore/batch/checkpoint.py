"""How a batch run records that a chunk is done, so that its loop never branches on the delivery mode.

``Markers`` (files, PostgreSQL, and Kafka at least once): a chunk's outputs are written (part files
renamed into place, or every record acknowledged), then its done marker. A chunk without a marker
is written again whole: the same part files, the same keyed rows; to a Kafka topic, its records
again.

``Transactional`` (``delivery: exactly_once``, a topic range into Kafka): each chunk's outputs and
dead letters are produced inside one Kafka transaction, and the chunk's end offset is committed to
the run's own progress group in the same transaction (``send_offsets_to_transaction``), so a crash
keeps both or neither. A restart resumes each partition from that group's committed position; the
done markers only keep each chunk's counts for the summary (written before the commit: a marker
whose chunk was not committed is ignored, and overwritten when the chunk is redone).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Protocol

from streamscore.batch.parts import Counts, Part, State
from streamscore.engines.base import Transactions
from streamscore.errors import BrokerError

if TYPE_CHECKING:  # only a topic range needs the Kafka client
    from streamscore.engines.kafka_range import KafkaRange

log = logging.getLogger(__name__)


class Checkpoint(Protocol):
    def done(self, mine: Sequence[tuple[int, Part]]) -> dict[tuple[int, int], Counts]:
        """(part, chunk) -> counts of every chunk of ``mine`` an earlier run finished."""

    def begin(self) -> None:
        """Before a chunk's outputs are written."""

    def commit(self, index: int, part: Part, chunk: int, counts: Counts) -> None:
        """The chunk's outputs are all written: make it done (raises TransactionAborted to redo it)."""

    def abort(self) -> None:
        """The chunk failed or is redone: drop what of it is not committed."""


class Markers:
    """A done marker per chunk, written once the chunk's outputs are stored."""

    def __init__(self, state: State) -> None:
        self.state = state

    def done(self, mine: Sequence[tuple[int, Part]]) -> dict[tuple[int, int], Counts]:
        indices = {index for index, _ in mine}
        return {key: counts for key, counts in self.state.done().items() if key[0] in indices}

    def begin(self) -> None:
        """Nothing to open."""

    def commit(self, index: int, part: Part, chunk: int, counts: Counts) -> None:
        self.state.mark_done(index, chunk, counts)

    def abort(self) -> None:
        """Nothing to drop: a chunk without its marker is written again whole."""


class Transactional:
    """One Kafka transaction per chunk: its outputs, its dead letters and its end offset in the
    progress group of ``source`` (a topic range read under that group, never joined)."""

    def __init__(self, state: State, transactions: Transactions, source: KafkaRange, chunk_rows: int,
                 timeout: float) -> None:
        self.state = state
        self.transactions = transactions
        self.source = source
        self.chunk_rows = chunk_rows
        self.timeout = timeout
        self.open = False

    def done(self, mine: Sequence[tuple[int, Part]]) -> dict[tuple[int, int], Counts]:
        """The chunks below each partition's committed position (asked after the producer's
        ``init_transactions``, which aborted what a killed run left open)."""
        committed = self.source.committed([(part.source, part.partition) for _, part in mine])
        markers = self.state.done()
        found: dict[tuple[int, int], Counts] = {}
        for index, part in mine:
            position = committed.get((part.source, part.partition))
            if position is None or part.end is None:
                continue
            for chunk, first in enumerate(range(part.first, part.end, self.chunk_rows)):
                if min(part.end, first + self.chunk_rows) > position:
                    break
                counts = markers.get((index, chunk))
                if counts is None:  # written before each commit: only a changed state folder lacks it
                    log.warning("part %d chunk %d is committed but its counts are missing; the summary "
                                "leaves it out", index, chunk)
                found[index, chunk] = counts or Counts()
        return found

    def begin(self) -> None:
        self.transactions.begin_transaction()
        self.open = True

    def commit(self, index: int, part: Part, chunk: int, counts: Counts) -> None:
        assert part.end is not None
        end = min(part.end, part.first + (chunk + 1) * self.chunk_rows)
        self.state.mark_done(index, chunk, counts)
        self.transactions.commit_transaction({(part.source, part.partition): end}, self.source.group_metadata(),
                                             self.timeout)
        self.open = False
        log.debug("committed %s[%d]@%d", part.source, part.partition, end)

    def abort(self) -> None:
        if not self.open:
            return
        self.open = False
        try:
            self.transactions.abort_transaction(self.timeout)
        except BrokerError as exc:  # a fenced or failed producer: the broker aborts it by its timeout
            log.warning("could not abort the open transaction (%s); the broker aborts it when it times out", exc)
