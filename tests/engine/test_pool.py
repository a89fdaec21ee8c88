"""The bounded worker pools, without HTTP: busy rejection and abandoned work skipped."""

from __future__ import annotations

import asyncio
import time

import pytest

from engine.errors import Busy
from engine.metrics import Metrics
from engine.runtime import Pool
from engine.singleflight import SingleFlight


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


async def test_single_flight_shares_and_cancels_only_when_all_waiters_leave() -> None:
    flight: SingleFlight[str] = SingleFlight()
    runs: list[str] = []

    async def slow(name: str) -> str:
        runs.append(name)
        await asyncio.sleep(0.1)
        return name

    results = await asyncio.gather(*(flight.run("k", lambda: slow("a")) for _ in range(5)))
    assert runs == ["a"] and [r for r, _ in results] == ["a"] * 5
    assert sorted(shared for _, shared in results) == [False, True, True, True, True]
    assert flight.calls == {}

    one = asyncio.ensure_future(flight.run("x", lambda: slow("x")))
    two = asyncio.ensure_future(flight.run("x", lambda: slow("x")))
    await asyncio.sleep(0.01)
    one.cancel()  # one waiter left: the computation goes on for the other
    assert await two == ("x", True)
    three = asyncio.ensure_future(flight.run("y", lambda: slow("y")))
    await asyncio.sleep(0.01)
    task = flight.calls["y"].task
    three.cancel()  # the last waiter left: the computation is cancelled
    with pytest.raises(asyncio.CancelledError):
        await three
    await asyncio.sleep(0)
    assert task.cancelled()
    assert await flight.run("y", lambda: slow("y2")) == ("y2", False)


async def test_failures_are_shared_too() -> None:
    flight: SingleFlight[str] = SingleFlight()

    async def bad() -> str:
        await asyncio.sleep(0.05)
        raise Busy("nope")

    results = await asyncio.gather(*(flight.run("k", bad) for _ in range(3)), return_exceptions=True)
    assert all(isinstance(r, Busy) for r in results)
