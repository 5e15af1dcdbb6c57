"""The ``serve`` section: the REST endpoint (Open Inference Protocol and ``/v1/score``)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, SecretStr, model_validator

from streamscore.config.section import Section


class ServeSettings(Section):
    """``streamscore serve`` and ``streamscore run --serve``: REST scoring over the same features,
    model graph and decisions as the stream, with requests gathered into shared model calls."""

    host: str = "0.0.0.0"
    """Bind address of the REST listener."""
    port: int = Field(default=8080, ge=0, le=65535)
    """Port of the REST listener (0 picks a free port; the log names it)."""
    max_batch_size: int = Field(default=256, ge=1, le=100_000)
    """Events (or tensor rows) of concurrent requests gathered into one model call, at most."""
    max_wait_ms: float = Field(default=2.0, ge=0)
    """How long the first waiting event may wait for others before its batch is scored."""
    adaptive: bool = True
    """Score a batch as soon as no more requests are waiting (what arrived while the model was busy
    is one batch): no wait at low load. ``false``: batches close only by count or ``max_wait_ms``."""
    max_queued_events: int = Field(default=20_000, ge=1)
    """Events waiting to be scored, at most; a request beyond it is refused with 503 (back off)."""
    max_request_bytes: int = Field(default=1_000_000, ge=1)
    """Larger request bodies are refused with 413 unread."""
    max_events_per_request: int = Field(default=1_000, ge=1)
    """Events (or tensor rows) one request may carry; more is refused with 413."""
    request_timeout_s: float = Field(default=5.0, gt=0)
    """A request not answered within this is answered 504 (its events may still be scored)."""
    token: SecretStr | None = None
    """Bearer token every request but the health probes must carry (``Authorization: Bearer ...``);
    set it from the environment, ``STREAMSCORE_SERVE__TOKEN``. Neither it nor ``token_file``: no auth."""
    token_file: Path | None = None
    """A file holding the bearer token (one trailing newline dropped), e.g. a mounted secret."""

    @model_validator(mode="after")
    def _one_token(self) -> ServeSettings:
        if self.token is not None and self.token_file is not None:
            raise ValueError("give 'token' or 'token_file', not both")
        if self.token is not None and not self.token.get_secret_value():
            raise ValueError("token: must not be empty")
        return self

    def bearer_token(self) -> str | None:
        """The token requests must carry, read from ``token_file`` when given; raises ValueError."""
        if self.token is not None:
            return self.token.get_secret_value()
        if self.token_file is None:
            return None
        try:
            text = self.token_file.read_text().removesuffix("\n")
        except (OSError, UnicodeDecodeError) as exc:
            raise ValueError(f"serve.token_file: cannot read {self.token_file} ({exc})") from None
        if not text:
            raise ValueError(f"serve.token_file: {self.token_file} is empty")
        return text
