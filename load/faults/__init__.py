"""Fault injection (issue 4): the service under kill -9, a frozen broker, rebalance storms, an
unwritable destination, a slow model and SIGTERM under load, each ending in an accounting step.

``scenarios`` holds the scenarios; ``tests/faults`` runs them at CI sizes and ``python -m
load.faults`` at full sizes.
"""
