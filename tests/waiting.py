"""Waiting for an event in tests: poll the event itself until a deadline, never sleep a fixed time.

CI runs on 2 cores that may be busy, so how long something takes is not a test's business (speed claims
live in docs/benchmarks.md); the deadline only stops a test that would otherwise hang, so it is generous.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")

DEADLINE_S = 60.0


async def until(check: Callable[[], Any], what: str, timeout: float = DEADLINE_S, every: float = 0.02) -> Any:
    """Poll ``check`` (sync or async) until it returns something truthy; return that. Fails at ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if inspect.isawaitable(value):
            value = await value
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up after {timeout:.0f} s waiting for {what}")
        await asyncio.sleep(every)


def until_sync(check: Callable[[], T], what: str, timeout: float = DEADLINE_S, every: float = 0.02) -> T:
    """:func:`until` for plain threads and processes."""
    deadline = time.monotonic() + timeout
    while not (value := check()):
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up after {timeout:.0f} s waiting for {what}")
        time.sleep(every)
    return value
