"""Delivery: which offsets may be committed, and the commit protocol of each delivery mode."""
