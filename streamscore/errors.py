"""Errors, one root and one subclass per stage.

    StreamScoreError
     ├── ConfigError        settings invalid, or inconsistent with the model (exit code 2)
     ├── ModelError         model file missing or unreadable, provider unavailable, spec mismatch
     ├── BrokerError        broker unreachable, or a Kafka call failed (keeps the Kafka error code)
     ├── DeliveryError      an output could not be written; nothing past it is committed
     │    └── OutputTooLarge    one output refused for its size alone: its input is dead-lettered instead
     ├── TransactionAborted exactly-once: the open transaction must be aborted and its input re-read
     └── ModelUnavailable   the model fails by itself (not because of its rows): nothing is dead-lettered
"""

from __future__ import annotations


class StreamScoreError(Exception):
    """Root of every error streamscore raises on purpose."""


class ConfigError(StreamScoreError):
    """A setting is missing, unknown or of the wrong kind; the message names the key."""


class ModelError(ConfigError):
    """The model cannot be loaded or does not match the feature spec.

    A subclass of ConfigError because it is fixed the same way: by changing configuration.
    """


class BrokerError(StreamScoreError):
    """A Kafka operation failed; ``code`` keeps librdkafka's error code when there is one."""

    def __init__(self, message: str, code: int | None = None) -> None:
        super().__init__(message)
        self.code = code


class DeliveryError(BrokerError):
    """A produce failed for good: the pipeline stops without committing past it."""


class OutputTooLarge(DeliveryError):
    """A destination refused one record for its own size (over the topic's ``max.message.bytes``, or
    the producer's ``message.max.bytes``): a verdict on that record alone, so the pipeline
    dead-letters its input (``output_too_large``) instead of stopping, and commits the input only
    once that dead letter is acknowledged. ``where`` names the topic (and partition), ``why`` is the
    client's or broker's words, ``value`` the refused record, by which its input is found.

    ``alone`` False: refused within a record batch under transactions, where the record cannot be
    judged alone (the refusal has failed the transaction): exactly-once stops with one line instead."""

    def __init__(self, message: str, code: int | None, where: str, why: str, value: bytes | None,
                 alone: bool = True) -> None:
        super().__init__(message, code)
        self.where = where
        self.why = why
        self.value = value
        self.alone = alone

    def detail(self) -> str:
        """The dead letter's ``streamscore.detail``: the topic and the record's size, on either engine."""
        return f"its output to {self.where} is {len(self.value or b'')} bytes, more than the topic accepts ({self.why})"


class TransactionAborted(BrokerError):
    """A transactional call failed in a way Kafka lets the producer recover from by aborting.

    The pipeline aborts, rewinds the consumer to the last committed positions and redoes the work;
    fatal errors (a fenced producer, for one) are DeliveryErrors instead.
    """


class ModelUnavailable(StreamScoreError):
    """The model fails by itself, not because of the rows it was given: the runtime raised an
    infrastructure error (out of memory ...) or a row it scored before fails too.

    The pipeline holds the batch, stops consuming and retries; after ``breaker.max_outage_s`` it
    exits non-zero. Nothing is dead-lettered for it.
    """
