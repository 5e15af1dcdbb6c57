"""Engines: where events come from and where results go. Only this package talks to Kafka."""
