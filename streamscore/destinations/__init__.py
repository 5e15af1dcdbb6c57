"""Destinations: where score records go (Kafka topics now), found through the plugin registry."""
