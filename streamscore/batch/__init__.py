"""Bounded runs (``streamscore batch``): files or a Kafka topic range through the stream's scoring core."""
