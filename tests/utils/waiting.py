"""Waiting in tests: every wait has a deadline, and a wait that runs out says what it was waiting for."""

from __future__ import annotations

import time
from collections.abc import Callable


def until(predicate: Callable[[], object], what: str, timeout_s: float = 60, interval_s: float = 0.02) -> None:
    """Poll ``predicate`` until it is true; fail the test with ``what`` once ``timeout_s`` have passed."""
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, f"{what} (after {timeout_s:g} s)"
        time.sleep(interval_s)
