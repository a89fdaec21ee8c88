"""The bounded worker pools, without HTTP: busy rejection and abandoned work skipped."""

from __future__ import annotations

import asyncio
import time

import pytest

from engine.errors import Busy
from engine.metrics import Metrics
from engine.runtime import Pool


async def test_abandoned_job_never_runs_and_queue_is_bounded() -> None:
    metrics = Metrics()
    pool = Pool("image", workers=1, limit=2, metrics=metrics)
    ran: list[str] = []

    def work(name: str, seconds: float) -> str:
        time.sleep(seconds)
        ran.append(name)
        return name

    try:
        first = asyncio.ensure_future(pool.run(work, "first", 0.3))
        await asyncio.sleep(0.05)
        second = asyncio.ensure_future(pool.run(work, "second", 0.0))
        await asyncio.sleep(0.01)
        with pytest.raises(Busy):
            await pool.run(work, "third", 0.0)
        second.cancel()  # the client went away while it waited for the worker
        assert await first == "first"
        with pytest.raises(asyncio.CancelledError):
            await second
        assert await pool.run(work, "fourth", 0.0) == "fourth"
        assert ran == ["first", "fourth"]
        assert pool.waiting == 0
        text = metrics.render().decode()
        assert 'engine_abandoned_total{pool="image"} 1.0' in text
        assert 'engine_busy_rejections_total{pool="image"} 1.0' in text
    finally:
        pool.close()
