"""Request coalescing: concurrent identical cache misses share one computation.

Without it, a burst of the same new query (a popular photo, a bot broadcast) runs the same CNN forward
once per request before the first answer reaches the cache.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class _Call(Generic[T]):
    def __init__(self, task: asyncio.Task[T]) -> None:
        self.task = task
        self.waiters = 0


class SingleFlight(Generic[T]):
    """At most one running computation per key; later callers await the same result."""

    def __init__(self) -> None:
        self.calls: dict[str, _Call[T]] = {}

    async def run(self, key: str, factory: Callable[[], Awaitable[T]]) -> tuple[T, bool]:
        """The result for ``key`` and whether it was shared with an earlier caller.

        The computation is cancelled only when every caller waiting for it has been cancelled.
        """
        call = self.calls.get(key)
        shared = call is not None and not (call.task.cancelled() or call.task.cancelling())
        if call is None or not shared:
            task: asyncio.Task[T] = asyncio.ensure_future(factory())
            new = call = _Call(task)
            self.calls[key] = call
            task.add_done_callback(lambda _t: self.calls.pop(key) if self.calls.get(key) is new else None)
        call.waiters += 1
        try:
            return await asyncio.shield(call.task), shared
        except asyncio.CancelledError:
            if call.waiters == 1 and not call.task.done():
                call.task.cancel()
            raise
        finally:
            call.waiters -= 1
