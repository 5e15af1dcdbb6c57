"""The model registry (``store``): versions, aliases and metadata in a folder, and what resolves
``registry:NAME@ALIAS`` references in a configuration (``resolve``)."""

from streamscore.registry.store import ModelMetadata, Registry, RegistryError, Resolved, parse_reference

__all__ = ["ModelMetadata", "Registry", "RegistryError", "Resolved", "parse_reference"]
