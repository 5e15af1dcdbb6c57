"""The Faust engine's verdict on outputs refused for their size: a record refused before sending, or
refused again when sent alone, is an OutputTooLarge (its input is dead-lettered); one refused in a
batch and accepted alone is written; any other failure, and a broker's refusal under exactly-once,
is raised (the engine exits with one line)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from aiokafka.errors import KafkaTimeoutError, MessageSizeTooLargeError
from faust.exceptions import ProducerSendError

from streamscore.engines.faust_oversize import Output, Oversize, refused_before_sending, size_refusal
from streamscore.errors import DeliveryError, OutputTooLarge


class AloneSender:
    """``send_alone`` that answers each value with the given outcome (None: acknowledged)."""

    def __init__(self, outcomes: dict[bytes, BaseException | None]) -> None:
        self.outcomes = outcomes
        self.sent: list[bytes] = []

    async def __call__(self, output: Output) -> tuple[str, asyncio.Future[Any]]:
        self.sent.append(output.value)
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        outcome = self.outcomes.get(output.value)
        if outcome is None:
            future.set_result(None)
        else:
            future.set_exception(outcome)
        return f"{output.topic}[2]", future


def wrapped(exc: BaseException) -> ProducerSendError:
    """As Faust's producer raises aiokafka's errors from ``send``."""
    try:
        raise ProducerSendError(f"Error while sending: {exc!r}") from exc
    except ProducerSendError as wrapper:
        return wrapper


def refused(oversize: Oversize, outputs: list[Output], results: list[object]) -> dict[int, OutputTooLarge]:
    return asyncio.run(oversize.refused(outputs, results))


def test_size_refusal_is_found_through_fausts_wrapper() -> None:
    size = MessageSizeTooLargeError("The message is 2000000 bytes when serialized ...")
    assert size_refusal(wrapped(size)) is size
    assert size_refusal(size) is size
    assert size_refusal(wrapped(KafkaTimeoutError())) is None
    assert size_refusal(None) is None


def test_a_record_refused_before_sending_is_judged_alone_and_not_sent_again() -> None:
    output = Output(3, "scores", b"k", b"x" * 2_000_000)

    async def send_refused() -> BaseException | None:
        future = refused_before_sending(output, wrapped(MessageSizeTooLargeError("over max_request_size")))
        return future.exception()

    error = asyncio.run(send_refused())
    assert isinstance(error, OutputTooLarge) and error.alone
    assert (error.where, error.value) == ("scores", output.value)
    assert error.detail() == ("its output to scores is 2000000 bytes, more than the topic accepts "
                              "([Error 10] MessageSizeTooLargeError: over max_request_size)")

    alone = AloneSender({})
    assert refused(Oversize(alone, transactional=False), [output], [error]) == {3: error}
    assert alone.sent == [], "a verdict on the record alone already"


def test_another_send_error_is_raised() -> None:
    output = Output(0, "scores", None, b"v")
    with pytest.raises(ProducerSendError):
        refused_before_sending(output, wrapped(KafkaTimeoutError()))


def test_records_refused_in_a_batch_are_sent_again_alone_and_only_a_refusal_alone_counts() -> None:
    """Rows 0 and 1 shared a refused batch: 1 is innocent (written when sent alone), 0 is refused
    alone; row 2 was acknowledged; row 0's second destination was refused too (one verdict)."""
    big, small, fine = b"b" * 300_000, b"small", b"fine"
    outputs = [Output(0, "scores", b"k0", big), Output(1, "scores", b"k1", small), Output(2, "scores", b"k2", fine),
               Output(0, "audit", b"k0", big)]
    alone = AloneSender({big: MessageSizeTooLargeError()})
    oversize = Oversize(alone, transactional=False)
    results: list[object] = [MessageSizeTooLargeError(), MessageSizeTooLargeError(), None, MessageSizeTooLargeError()]

    verdicts = refused(oversize, outputs, results)

    assert list(verdicts) == [0]
    assert verdicts[0].where == "scores[2]" and verdicts[0].alone and verdicts[0].code == 10
    assert "300000 bytes" in verdicts[0].detail() and "scores[2]" in verdicts[0].detail()
    assert alone.sent == [big, small, big] and oversize.resent == 3


def test_any_other_failure_is_raised() -> None:
    outputs = [Output(0, "scores", None, b"v"), Output(1, "scores", None, b"w")]
    with pytest.raises(KafkaTimeoutError):
        refused(Oversize(AloneSender({}), transactional=False), outputs, [None, KafkaTimeoutError()])
    with pytest.raises(KafkaTimeoutError):  # sent alone, then failed otherwise
        refused(Oversize(AloneSender({b"v": KafkaTimeoutError()}), transactional=False), outputs,
                [MessageSizeTooLargeError(), None])


def test_under_exactly_once_a_brokers_refusal_stops_with_one_line_naming_the_topic() -> None:
    alone = AloneSender({})
    with pytest.raises(DeliveryError) as raised:
        refused(Oversize(alone, transactional=True), [Output(0, "scores", b"k", b"big")], [MessageSizeTooLargeError()])
    message = str(raised.value)
    assert "scores" in message and "exactly_once" in message and "not dead-lettered" in message
    assert "\n" not in message and alone.sent == []
    # refused before sending, the record touched no transaction: dead-lettered inside it
    before = OutputTooLarge("...", 10, "scores", "over max_request_size", b"big")
    assert refused(Oversize(alone, transactional=True), [Output(0, "scores", b"k", b"big")], [before]) == {0: before}
