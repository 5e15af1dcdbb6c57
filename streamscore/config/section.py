"""The base of every settings section."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class Section(BaseModel):
    # use_attribute_docstrings: the docstring under each field becomes its description, which the
    # configuration reference (docs/configuration.md, streamscore.reference) is generated from.
    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)
