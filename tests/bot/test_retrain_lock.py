"""The local /retrain's lock: one job at a time at every step of a launch, never a signal to the bot itself.

Issue 19, items 1 and 2: the lock used to be written with ``pid: 0`` while the trainer was launched, then
released and taken again with the pid (the second result ignored). A ``/retrain cancel`` arriving in that
window turned pid 0 into ``os.killpg(0, SIGTERM)``, the bot's own process group; a rival ``/retrain`` in
the gap started a second job; and a bot that died in the window left a ``pid: 0`` lock for ever.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from bot import joblock
from bot.joblock import LockFile, RedisLock
from bot.retrain import RetrainError, RetrainManager
from space.jobs import RetrainStatus
from tests.bot.test_retrain import job
from tests.conftest import RedisServer
from tests.waiting import until


@pytest.fixture
def signalled(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Every process group the code under test signals; groups <= 0 are recorded, never signalled.

    ``os.killpg(0, SIGTERM)`` would stop this test's own process group (pytest and all): the bug itself.
    """
    calls: list[int] = []
    real = os.killpg

    def killpg(pid: int, sig: int) -> None:
        calls.append(pid)
        if pid > 0:
            real(pid, sig)

    monkeypatch.setattr(os, "killpg", killpg)
    return calls


@pytest.fixture
def slow_launch(monkeypatch: pytest.MonkeyPatch) -> asyncio.Event:
    """Hold every trainer launch until the returned event is set (the launch window made wide)."""
    gate = asyncio.Event()
    real = asyncio.create_subprocess_exec

    async def held(*args: Any, **kwargs: Any) -> asyncio.subprocess.Process:
        await gate.wait()
        return await real(*args, **kwargs)

    monkeypatch.setattr(asyncio, "create_subprocess_exec", held)
    return gate


def _kill(pid: int | None) -> None:
    if pid:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)


async def test_cancel_while_launching_never_signals_the_bots_own_group(
    tmp_path: Path, signalled: list[int], slow_launch: asyncio.Event
) -> None:
    manager = RetrainManager(job(tmp_path, "--steps", "200", "--step-s", "0.1"))
    lock = tmp_path / "models" / ".retrain.lock"
    starting = asyncio.create_task(manager.start())
    await until(lambda: lock.is_file() and json.loads(lock.read_text())["pid"] == 0, "the launching lock")
    cancelling = asyncio.create_task(manager.cancel())
    for _ in range(5):
        await asyncio.sleep(0)  # cancel acts while the trainer is being launched
    slow_launch.set()
    started = await starting
    try:
        assert await cancelling
        assert signalled and all(pid > 0 for pid in signalled), f"signalled process groups {signalled}"
        assert started.pid in signalled
        assert (await asyncio.wait_for(manager.wait(), 60)).state == "cancelled"
        assert not lock.exists()
    finally:
        _kill(started.pid)


@pytest.mark.parametrize("kind", ["file", "redis"])
async def test_a_launch_that_died_leaves_no_lock_for_ever(
    tmp_path: Path, redis_server: RedisServer, signalled: list[int], kind: str
) -> None:
    redis_url = redis_server.url if kind == "redis" else None
    settings = job(tmp_path, "--steps", "1", "--step-s", "0", redis_url=redis_url)
    manager = RetrainManager(settings)
    lock = manager.lock
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    host = socket.gethostname()
    crashed = [
        {"pid": 0, "progress_file": "/nonexistent", "started": time.time() - 3600},  # an hour-old launch
        {"pid": 0, "owner": dead.pid, "host": host, "token": "t", "started": time.time()},  # its bot died
    ]
    for info in crashed:
        assert await lock.acquire(info)
        assert not await manager.cancel()  # nothing to cancel, and nothing signalled
        assert (await manager.start()).state == "running"  # not "already running" for ever
        assert (await manager.wait()).state == "done"
        assert await lock.read() is None
    assert signalled == []
    # A launch in progress in a live bot process is respected.
    live = {"pid": 0, "owner": os.getppid(), "host": host, "token": "u", "started": time.time()}
    assert await lock.acquire(live)
    with pytest.raises(RetrainError, match="already running"):
        await manager.start()
    await lock.release()
    await manager.close()


class RivalLock(LockFile):
    """A lock file that lets a rival bot try ``/retrain`` right after each of its own operations."""

    def __init__(self, path: Path, rival: Callable[[], Awaitable[None]]) -> None:
        super().__init__(path)
        self.rival = rival
        self.armed = False

    async def _after(self) -> None:
        if self.armed:
            await self.rival()

    async def acquire(self, info: dict[str, Any]) -> bool:
        taken = await super().acquire(info)
        await self._after()
        return taken

    async def update(self, token: str, info: dict[str, Any]) -> bool:
        done = await super().update(token, info)
        await self._after()
        return done

    async def release(self, *args: Any) -> None:
        await super().release(*args)
        await self._after()


async def test_a_rival_start_at_every_step_of_a_launch_is_refused(tmp_path: Path) -> None:
    settings = job(tmp_path, "--steps", "200", "--step-s", "0.1")
    rival = RetrainManager(settings)
    rivals: list[RetrainStatus] = []
    refused: list[str] = []

    async def rival_start() -> None:
        try:
            rivals.append(await rival.start())
        except RetrainError as exc:
            refused.append(str(exc))

    lock = RivalLock(Path(settings.models_dir or "") / ".retrain.lock", rival_start)
    manager = RetrainManager(settings, lock)
    lock.armed = True
    started = await manager.start()
    lock.armed = False
    try:
        assert rivals == [], "a second job started while the first was being launched"
        assert refused and all("already running" in r for r in refused)
        held = await lock.read()
        assert held is not None and held["pid"] == started.pid
        assert await manager.cancel()
        assert (await manager.wait()).state == "cancelled"
    finally:
        _kill(started.pid)
        for other in rivals:
            _kill(other.pid)


def test_liveness_never_names_a_process_group() -> None:
    assert not joblock.alive(0) and not joblock.alive(-1)
    assert joblock.alive(os.getpid())
    assert joblock.is_stale({"pid": 0, "started": 0.0})
    assert not joblock.is_stale({"pid": os.getpid()})


async def test_redis_lock_update_and_release_are_the_holders(redis_server: RedisServer) -> None:
    lock = RedisLock(redis_server.url)
    try:
        assert await lock.acquire({"pid": 0, "token": "mine"})
        assert not await lock.update("theirs", {"pid": 1, "token": "theirs"})
        assert await lock.update("mine", {"pid": 7, "token": "mine"})
        assert (await lock.read() or {})["pid"] == 7
        assert await lock.redis.ttl("topicspace:retrain:lock") > 0  # the expiry is kept
        await lock.release("theirs")
        assert await lock.read() is not None
        await lock.release("mine")
        assert await lock.read() is None
    finally:
        await lock.close()
