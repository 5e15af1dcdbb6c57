"""Settings: the tree of sections (``settings``, ``kafka``) and how it is read (``loading``)."""

from streamscore.config.faust import FaustSettings
from streamscore.config.graph import CascadeGraph, ChainGraph, EnsembleGraph, GraphModelSettings, GraphSettings
from streamscore.config.kafka import KafkaSettings
from streamscore.config.loading import ENV_PREFIX, apply_env_overrides, describe_validation_error, load_settings
from streamscore.config.model import ModelSettings, Provider
from streamscore.config.settings import (
    BatchingSettings,
    BreakerSettings,
    DecisionRule,
    DecisionSettings,
    Delivery,
    DestinationSettings,
    FeatureSettings,
    MetricsSettings,
    OutputSettings,
    Settings,
)

__all__ = [
    "ENV_PREFIX",
    "BatchingSettings",
    "BreakerSettings",
    "CascadeGraph",
    "ChainGraph",
    "DecisionRule",
    "DecisionSettings",
    "Delivery",
    "DestinationSettings",
    "EnsembleGraph",
    "FaustSettings",
    "FeatureSettings",
    "GraphModelSettings",
    "GraphSettings",
    "KafkaSettings",
    "MetricsSettings",
    "ModelSettings",
    "OutputSettings",
    "Provider",
    "Settings",
    "apply_env_overrides",
    "describe_validation_error",
    "load_settings",
]
