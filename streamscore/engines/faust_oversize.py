"""Outputs refused for their size under ``engine: faust``: the input is dead-lettered, not an exit.

aiokafka refuses a record for its size in two ways, both ``MessageSizeTooLargeError``: before
sending it, when it is over the producer's ``max_request_size`` (Faust wraps that in
``ProducerSendError``), which is a verdict on the record alone; and when the broker refuses the
record batch it travelled in (over the topic's ``max.message.bytes``), which fails every record of
that batch. A record over the producer's batch size (16 KiB) always travels alone, but smaller
ones share batches, so a record the broker refused is sent once more in a batch of its own (at
least once, as ``kafka_oversize`` does for the confluent-kafka engine) before it is judged: only a
refusal of it alone is an ``OutputTooLarge``, whose input the engine dead-letters
(``output_too_large``). Faust sends one record at a time and has no call that sends a batch, so
``send_alone`` builds the one-record batch on the aiokafka producer inside Faust's.

Under exactly-once the broker's refusal has failed the open transaction of the event's source
partition: the engine stops with one line, as the confluent-kafka engine does (a record refused
before it was sent touched no transaction and is dead-lettered inside it).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from aiokafka.errors import MessageSizeTooLargeError

from streamscore.errors import DeliveryError, OutputTooLarge

log = logging.getLogger(__name__)

SIZE_ERROR_CODE = MessageSizeTooLargeError.errno
"""Kafka's MESSAGE_TOO_LARGE (10), kept as the error's code."""


@dataclass(frozen=True, slots=True)
class Output:
    """One output record of a window, as it was sent: its row in the window, topic, key and value."""

    row: int
    topic: str
    key: bytes | None
    value: bytes


SendAlone = Callable[[Output], Awaitable[tuple[str, "asyncio.Future[Any]"]]]
"""Sends an output in a record batch of its own: where it went (``topic[partition]``) and the future
of its acknowledgement."""


def size_refusal(exc: BaseException | None) -> MessageSizeTooLargeError | None:
    """``exc``, or the error it wraps, when it is aiokafka's refusal of a record for its size."""
    while exc is not None:
        if isinstance(exc, MessageSizeTooLargeError):
            return exc
        exc = exc.__cause__
    return None


def too_large(where: str, value: bytes, refusal: MessageSizeTooLargeError) -> OutputTooLarge:
    """The verdict on one record alone; ``where`` names its topic (and partition, once known)."""
    why = str(refusal) or type(refusal).__name__
    return OutputTooLarge(f"an output to {where} was not accepted by the broker: {why}", SIZE_ERROR_CODE, where,
                          why, value)


def refused_before_sending(output: Output, exc: BaseException) -> asyncio.Future[Any]:
    """A send that raised: a future failed with the verdict when aiokafka refused the record for its
    size (over ``max_request_size``, never sent); any other error is raised again."""
    refusal = size_refusal(exc)
    if refusal is None:
        raise exc
    future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
    future.set_exception(too_large(output.topic, output.value, refusal))
    return future


class Oversize:
    """The verdict on the outputs of a window that were refused for their size (see the module)."""

    def __init__(self, send_alone: SendAlone, transactional: bool) -> None:
        self._send_alone = send_alone
        self.transactional = transactional
        self.resent = 0
        """Records sent again alone (logged at stop)."""

    async def refused(self, outputs: Sequence[Output], results: Sequence[object]) -> dict[int, OutputTooLarge]:
        """Row -> the verdict, for each row whose output was refused for its size alone; ``results``
        are the outputs' acknowledgements as ``gather(..., return_exceptions=True)`` gives them. Any
        other failure is raised (the engine exits); so is a broker's refusal under transactions."""
        refused: dict[int, OutputTooLarge] = {}
        again: list[tuple[Output, str, asyncio.Future[Any]]] = []
        for output, result in zip(outputs, results, strict=True):
            if not isinstance(result, BaseException):
                continue
            if isinstance(result, OutputTooLarge):  # refused before sending: judged alone already
                refused.setdefault(output.row, result)
                continue
            refusal = size_refusal(result)
            if refusal is None:
                raise result
            if self.transactional:
                raise DeliveryError(
                    f"an output to {output.topic} was not accepted by the broker: {refusal}; under delivery: "
                    "exactly_once an output over the topic's max.message.bytes fails its whole transaction and is "
                    "not dead-lettered: raise the limit or copy less into the output", SIZE_ERROR_CODE) from result
            if not self.resent and not again:
                log.warning("a record batch to %s was refused for its size: its records are sent again one by one, "
                            "and only a record refused alone is dead-lettered", output.topic)
            again.append((output, *await self._send_alone(output)))
        self.resent += len(again)
        answers = await asyncio.gather(*(future for _, _, future in again), return_exceptions=True)
        for (output, where, _), answer in zip(again, answers, strict=True):
            if isinstance(answer, BaseException):
                refusal = size_refusal(answer)
                if refusal is None:
                    raise answer
                refused.setdefault(output.row, too_large(where, output.value, refusal))
        return refused

    def close(self) -> None:
        if self.resent:
            log.info("%d records refused in a batch for size were sent again alone", self.resent)


async def send_alone(app: Any, output: Output) -> tuple[str, asyncio.Future[Any]]:
    """``output`` in a record batch of its own, to the partition its key hashes to (Faust's
    partitioner, as its own send would pick), through the aiokafka producer inside Faust's."""
    faust_producer = app.producer
    partition = faust_producer.key_partition(output.topic, output.key).partition
    producer = faust_producer._ensure_producer()  # aiokafka's: Faust has no call that sends a batch
    batch = producer.create_batch()
    batch.append(timestamp=None, key=output.key, value=output.value, headers=[])
    future = await producer.send_batch(batch, output.topic, partition=partition)
    return f"{output.topic}[{partition}]", future
