"""Shared test support (``tests/support``): its fixtures load here as a plugin; its plain helpers
are imported from ``tests.support``."""

pytest_plugins = ["tests.support.fixtures", "tests.support.browser"]
