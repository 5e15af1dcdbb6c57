"""Model monitoring: reference profiles, drift and data quality over the live stream, the status page."""
