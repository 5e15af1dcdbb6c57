"""Subcommands beyond run/validate/demo/broker, one module each, registered by ``streamscore.cli``."""
