"""Settings: the tree of sections (``settings``, ``kafka``) and how it is read (``loading``)."""

from streamscore.config.challengers import CanarySettings, ShadowSettings
from streamscore.config.faust import FaustSettings
from streamscore.config.graph import (
    AnyGraph,
    CascadeGraph,
    ChainGraph,
    EnsembleGraph,
    GraphModelSettings,
    GraphSettings,
    SegmentGraph,
)
from streamscore.config.kafka import KafkaSettings
from streamscore.config.loading import ENV_PREFIX, apply_env_overrides, describe_validation_error, load_settings
from streamscore.config.model import ModelSettings, Provider, RegistrySettings, ReloadSettings, registry_reference
from streamscore.config.serve import ServeSettings
from streamscore.config.settings import (
    BatchingSettings,
    BreakerSettings,
    DecisionRule,
    DecisionSettings,
    Delivery,
    DestinationSettings,
    FeatureSettings,
    MetricsSettings,
    MonitoringSettings,
    OutputSettings,
    Settings,
)

__all__ = [
    "ENV_PREFIX",
    "AnyGraph",
    "BatchingSettings",
    "BreakerSettings",
    "CanarySettings",
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
    "MonitoringSettings",
    "OutputSettings",
    "Provider",
    "RegistrySettings",
    "ReloadSettings",
    "SegmentGraph",
    "ServeSettings",
    "Settings",
    "ShadowSettings",
    "apply_env_overrides",
    "describe_validation_error",
    "load_settings",
    "registry_reference",
]
