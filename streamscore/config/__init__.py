"""Settings: the tree of sections (``settings``, ``kafka``) and how it is read (``loading``)."""

from streamscore.config.kafka import KafkaSettings
from streamscore.config.loading import ENV_PREFIX, apply_env_overrides, describe_validation_error, load_settings
from streamscore.config.settings import (
    BatchingSettings,
    BreakerSettings,
    DecisionRule,
    DecisionSettings,
    Delivery,
    DestinationSettings,
    FeatureSettings,
    MetricsSettings,
    ModelSettings,
    OutputSettings,
    Provider,
    Settings,
)

__all__ = [
    "ENV_PREFIX", "BatchingSettings", "BreakerSettings", "DecisionRule", "DecisionSettings", "Delivery",
    "DestinationSettings", "FeatureSettings", "KafkaSettings", "MetricsSettings", "ModelSettings",
    "OutputSettings", "Provider", "Settings", "apply_env_overrides", "describe_validation_error", "load_settings",
]
