"""``wait_for(condition, timeout, what)``: defined in ``load.waiting`` so that the fault harness
shares it (``load`` may not import from ``tests``)."""

from __future__ import annotations

from load.waiting import WaitTimeout, wait_for

__all__ = ["WaitTimeout", "wait_for"]
