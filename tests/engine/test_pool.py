"""The bounded worker pools, without HTTP: busy rejection and abandoned work skipped."""

from __future__ import annotations

import asyncio
import threading

import pytest

from engine.errors import Busy
from engine.metrics import Metrics
from engine.runtime import Pool
from engine.singleflight import SingleFlight
from tests.waiting import until


async def test_abandoned_job_never_runs_and_queue_is_bounded() -> None:
    metrics = Metrics()
    pool = Pool("image", workers=1, limit=2, metrics=metrics)
    ran: list[str] = []
    started = threading.Event()
    release = threading.Event()

    def work(name: str, hold: bool) -> str:
        if hold:  # the one worker stays busy until the test lets it go
            started.set()
            assert release.wait(60)
        ran.append(name)
        return name

    try:
        first = asyncio.ensure_future(pool.run(work, "first", True))
        await until(started.is_set, "the first job holding the worker")
        second = asyncio.ensure_future(pool.run(work, "second", False))
        await until(lambda: pool.waiting == 2, "the second job waiting for the worker")
        with pytest.raises(Busy):
            await pool.run(work, "third", False)
        second.cancel()  # the client went away while it waited for the worker
        with pytest.raises(asyncio.CancelledError):
            await second
        release.set()
        assert await first == "first"
        assert await pool.run(work, "fourth", False) == "fourth"
        assert ran == ["first", "fourth"]
        assert pool.waiting == 0
        text = metrics.render().decode()
        assert 'engine_abandoned_total{pool="image"} 1.0' in text
        assert 'engine_busy_rejections_total{pool="image"} 1.0' in text
    finally:
        release.set()
        pool.close()


async def test_single_flight_shares_and_cancels_only_when_all_waiters_leave() -> None:
    flight: SingleFlight[str] = SingleFlight()
    runs: list[str] = []
    gates: dict[str, asyncio.Event] = {}

    async def gated(name: str) -> str:
        runs.append(name)
        await gates.setdefault(name, asyncio.Event()).wait()
        return name

    def waiters(key: str) -> int:
        call = flight.calls.get(key)
        return call.waiters if call is not None else 0

    five = asyncio.gather(*(flight.run("k", lambda: gated("a")) for _ in range(5)))
    await until(lambda: waiters("k") == 5, "five callers sharing one computation")
    gates["a"].set()
    results = await five
    assert runs == ["a"] and [r for r, _ in results] == ["a"] * 5
    assert sorted(shared for _, shared in results) == [False, True, True, True, True]
    assert flight.calls == {}

    one = asyncio.ensure_future(flight.run("x", lambda: gated("x")))
    two = asyncio.ensure_future(flight.run("x", lambda: gated("x")))
    await until(lambda: waiters("x") == 2, "two callers of x")
    one.cancel()  # one waiter left: the computation goes on for the other
    await until(lambda: waiters("x") == 1, "one caller of x left")
    gates["x"].set()
    assert await two == ("x", True)
    three = asyncio.ensure_future(flight.run("y", lambda: gated("y")))
    await until(lambda: waiters("y") == 1, "the caller of y")
    task = flight.calls["y"].task
    three.cancel()  # the last waiter left: the computation is cancelled
    with pytest.raises(asyncio.CancelledError):
        await three
    await until(task.done, "the computation of y to end")
    assert task.cancelled()
    gates["y2"] = asyncio.Event()
    gates["y2"].set()
    assert await flight.run("y", lambda: gated("y2")) == ("y2", False)


async def test_failures_are_shared_too() -> None:
    flight: SingleFlight[str] = SingleFlight()
    gate = asyncio.Event()

    async def bad() -> str:
        await gate.wait()
        raise Busy("nope")

    three = asyncio.gather(*(flight.run("k", bad) for _ in range(3)), return_exceptions=True)
    await until(lambda: "k" in flight.calls and flight.calls["k"].waiters == 3, "three callers sharing one")
    gate.set()
    results = await three
    assert all(isinstance(r, Busy) for r in results)
