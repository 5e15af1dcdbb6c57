"""The model runner protocol lives with the core that calls it (``streamscore.core.model``)."""

from streamscore.core.model import ModelRunner

__all__ = ["ModelRunner"]
