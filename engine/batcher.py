"""Photo micro-batching: concurrent encodings share one ONNX Runtime call.

Each photo is decoded in the image pool as before; the decoded ``(3, 224, 224)`` arrays then wait here
at most ``max_wait_s`` for company, and up to ``max_batch`` of them (same model) go through the encoder
in one call on one of ``runners`` threads. Results are scattered back to each waiting request. A batch
call that fails is retried one image at a time, so one image can only ever fail itself; a request
cancelled while it waits is simply dropped from the queue.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from engine.metrics import Metrics
from engine.model import Model

log = logging.getLogger(__name__)


@dataclass
class _Item:
    model: Model
    x: np.ndarray  # (3, 224, 224) network input
    future: asyncio.Future[np.ndarray]


def _encode_batch(model: Model, xs: list[np.ndarray]) -> list[np.ndarray | BaseException]:
    """One encoder call for the whole batch; on failure, each image alone (raw vectors or errors)."""
    try:
        vectors = model.encode(np.stack(xs))
        return list(vectors)
    except Exception as exc:
        if len(xs) == 1:
            return [exc]
        log.warning("encoder batch of %d failed (%s): encoding its images one by one", len(xs), exc)
    out: list[np.ndarray | BaseException] = []
    for x in xs:
        try:
            out.append(model.encode(x[None])[0])
        except Exception as exc:
            out.append(exc)
    return out


class EncodeBatcher:
    """Coalesces concurrent image encodings into batched encoder calls (at most ``runners`` at a time)."""

    def __init__(self, max_batch: int, max_wait_s: float, runners: int, metrics: Metrics) -> None:
        self.max_batch = max(1, max_batch)
        self.max_wait_s = max(0.0, max_wait_s)
        self.metrics = metrics
        self.executor = ThreadPoolExecutor(max_workers=max(1, runners), thread_name_prefix="engine-encode")
        self.free = max(1, runners)
        self.pending: list[_Item] = []
        self.wake = asyncio.Event()
        self.full = asyncio.Event()
        self.dispatcher: asyncio.Task[None] | None = None
        self.running: set[asyncio.Task[None]] = set()

    async def encode(self, model: Model, x: np.ndarray) -> np.ndarray:
        """The raw encoder vector of one decoded image (batched with whatever arrives at the same time)."""
        if self.dispatcher is None or self.dispatcher.done():
            self.dispatcher = asyncio.create_task(self._dispatch(), name="engine-encode-batcher")
        future: asyncio.Future[np.ndarray] = asyncio.get_running_loop().create_future()
        item = _Item(model, x, future)
        self.pending.append(item)
        self.wake.set()
        if len(self.pending) >= self.max_batch:
            self.full.set()
        try:
            return await future
        except asyncio.CancelledError:
            # Still queued: drop it, so no encoder time is spent on a request nobody waits for.
            with contextlib.suppress(ValueError):
                self.pending.remove(item)
            raise

    def _take(self) -> list[_Item]:
        """Live items of the oldest item's model, removed from the queue: a fair share for this runner.

        The queue is split over the free runners (at most ``max_batch`` each): on a CPU a batch costs
        about as much per image as single calls, so three photos and two idle runners should become
        batches of two and one, not one batch of three and an idle runner.
        """
        self.pending = [item for item in self.pending if not item.future.done()]
        if not self.pending:
            return []
        share = min(self.max_batch, -(-len(self.pending) // max(1, self.free)))
        model = self.pending[0].model
        batch: list[_Item] = []
        rest: list[_Item] = []
        for item in self.pending:
            (batch if item.model is model and len(batch) < share else rest).append(item)
        self.pending = rest
        if len(rest) < self.max_batch:
            self.full.clear()
        return batch

    async def _dispatch(self) -> None:
        """Form batches while a runner is free; wait up to ``max_wait_s`` for a batch to fill."""
        while True:
            await self.wake.wait()
            self.wake.clear()
            while self.pending and self.free > 0:
                if len(self.pending) < self.max_batch and self.max_wait_s > 0:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self.full.wait(), self.max_wait_s)
                batch = self._take()
                if not batch:
                    break
                self.free -= 1
                task = asyncio.create_task(self._run(batch))
                self.running.add(task)
                task.add_done_callback(self.running.discard)
                # While this loop waits for the next photo, its last batch (and through it a model that a
                # bundle swap has retired, with all its memory) must not stay referenced from this frame.
                del batch, task

    async def _run(self, batch: list[_Item]) -> None:
        """Encode one batch off the loop and hand each request its vector (or its own error)."""
        model = batch[0].model
        started = time.perf_counter()
        try:
            loop = asyncio.get_running_loop()
            results = await loop.run_in_executor(self.executor, _encode_batch, model, [i.x for i in batch])
        except BaseException as exc:  # executor shut down, or this task cancelled at shutdown
            results = [exc] * len(batch)
            if isinstance(exc, asyncio.CancelledError):
                results = [RuntimeError("the engine is shutting down")] * len(batch)
        finally:
            self.free += 1
            self.wake.set()
        self.metrics.encode_batch.observe(len(batch))
        self.metrics.encode_seconds.observe(time.perf_counter() - started)
        for item, result in zip(batch, results, strict=True):
            if item.future.done():  # its request was cancelled while the batch ran
                continue
            if isinstance(result, BaseException):
                item.future.set_exception(result)
            else:
                item.future.set_result(result)

    async def close(self) -> None:
        """Stop dispatching, fail whatever still waits, let running batches end, stop the threads."""
        if self.dispatcher is not None:
            self.dispatcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.dispatcher
        for item in self.pending:
            if not item.future.done():
                item.future.set_exception(RuntimeError("the engine is shutting down"))
        self.pending.clear()
        if self.running:
            await asyncio.gather(*self.running, return_exceptions=True)
        await asyncio.get_running_loop().run_in_executor(None, self.executor.shutdown)
