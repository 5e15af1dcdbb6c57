"""Model runners: a batch of feature rows in, one score per row out."""

from streamscore.runners.base import ModelRunner

__all__ = ["ModelRunner"]
