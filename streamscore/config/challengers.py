"""The ``shadow`` and ``canary`` sections: challengers scored beside the champion (``model`` or
``graph``). A shadow never decides; a canary decides for a stable share of keys."""

from __future__ import annotations

from pydantic import Field

from streamscore.config.graph import GraphModelSettings
from streamscore.config.section import Section


class ShadowSettings(Section):
    model: GraphModelSettings
    """The shadow model (like ``model``, plus the ``features`` it reads; default: all of them)."""
    topic: str
    """Topic of the shadow's records: its score and decision beside the champion's, one per scored
    event, keyed like the input. Nothing else reads the shadow's scores."""


class CanarySettings(Section):
    model: GraphModelSettings
    """The challenger (like ``model``, plus the ``features`` it reads; default: all of them)."""
    share: float = Field(gt=0, le=1)
    """Share of keys the challenger scores and decides for, instead of the champion: a key goes to
    it when its CRC-32 over 2^32 is below ``share``, so a key always lands on the same side.
    Events without a key stay with the champion."""
