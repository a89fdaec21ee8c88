"""The engine killed (SIGKILL) and restarted on the same port while the bot is busy: nothing lost or doubled.

The bot does not queue work for a dead engine: an update that meets it down gets the busy message as its
answer, and the user asks again (bot/app.py ``on_error``). So every update must get exactly one final
message — its answer, or the busy message — and after the engine is back every retry gets its answer.
Each update comes from its own chat, so the local Bot API's records per chat count the answers.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import IO

import aiohttp
import pytest

from bot.app import BUSY, build_application, running
from bot.local_api import ApiCall, LocalBotApi
from tests.bot.conftest import ENGINE_ADMIN_TOKEN, ROOT, bot_settings, flickr_jpg
from tests.conftest import free_port

N_UPDATES = 21
KILL_AT = 7  # updates before this index meet a running engine (some still in flight at the kill)
RESTART_AT = 14  # updates in [KILL_AT, RESTART_AT) are pushed while the engine is dead
SPACING_S = 0.1


class EngineProcess:
    """``python -m engine`` on a fixed port, which a test may SIGKILL and start again."""

    def __init__(self, models: Path, log: IO[bytes]) -> None:
        self.models = models
        self.log = log
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.pids: list[int] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        """Launch the engine (returns at once; see :meth:`wait_ready`)."""
        env = {**os.environ, "ENGINE_ADMIN_TOKEN": ENGINE_ADMIN_TOKEN, "ENGINE_WORKERS": "1"}
        env.pop("REDIS_URL", None)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "engine", "--models", str(self.models), "--port", str(self.port)],
            cwd=ROOT,
            env=env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        self.pids.append(self.proc.pid)

    async def wait_ready(self, timeout: float = 60.0) -> None:
        """Wait until the engine answers /v1/stats."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=1)) as session:
            while loop.time() < deadline:
                assert self.proc is not None and self.proc.poll() is None, "the engine exited"
                try:
                    async with session.get(f"{self.url}/v1/stats") as resp:
                        if resp.status == 200:
                            return
                except (aiohttp.ClientError, TimeoutError):
                    pass
                await asyncio.sleep(0.1)
        raise AssertionError("the engine did not come up")

    def kill(self) -> None:
        """SIGKILL: no graceful shutdown, in-flight requests are cut."""
        if self.proc is not None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=10)
            self.proc = None

    def stop(self) -> None:
        """Terminate at the end of the test."""
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
            self.proc = None


@pytest.fixture
def engine_proc(small_bundle_models: Path, tmp_path: Path) -> Iterator[EngineProcess]:
    """An engine subprocess this test owns."""
    with (tmp_path / "engine.log").open("wb") as log:
        engine = EngineProcess(small_bundle_models, log)
        engine.start()
        try:
            yield engine
        finally:
            engine.stop()


def _final(call: ApiCall) -> bool:
    """Whether a sent message ends the handling of one update: the answer's last message, or busy."""
    text = call.text
    return text == BUSY or text.startswith(("Words near", "Images for")) or text.startswith("#")


def _messages(api: LocalBotApi, chat: int) -> list[ApiCall]:
    return [c for c in api.calls_of("sendMessage") if c.params.get("chat_id") == str(chat)]


def _finals(api: LocalBotApi, chat: int) -> list[str]:
    return [c.text for c in _messages(api, chat) if _final(c)]


def _albums(api: LocalBotApi, chat: int) -> int:
    return len([c for c in api.calls_of("sendMediaGroup") if c.params.get("chat_id") == str(chat)])


async def _wait_all_final(api: LocalBotApi, chats: list[int], timeout: float = 40.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while (missing := [c for c in chats if not _finals(api, c)]) and loop.time() < deadline:
        await asyncio.sleep(0.1)
    assert not missing, f"updates never answered (lost): chats {missing}"


def _update(api: LocalBotApi, i: int, chat: int, photo: bytes) -> dict[str, object]:
    """Update ``i``: /related, /images or a photo (hashtags), in turn."""
    kind = i % 3
    if kind == 0:
        return api.text_update("/related dog", user_id=chat)
    if kind == 1:
        return api.text_update("/images dog", user_id=chat)
    return api.photo_update(photo, user_id=chat)


async def test_engine_killed_and_restarted_nothing_lost_or_doubled(
    api: LocalBotApi, engine_proc: EngineProcess, flickr8k_dir: Path
) -> None:
    await engine_proc.wait_ready()
    photo = flickr_jpg(flickr8k_dir, 3)
    chats = [7000 + i for i in range(N_UPDATES)]
    phase: dict[int, str] = {}
    async with running(build_application(bot_settings(api, engine_proc.url, engine_timeout_s=5.0))):
        for i, chat in enumerate(chats):
            if i == KILL_AT:
                engine_proc.kill()
            if i == RESTART_AT:
                engine_proc.start()  # not waited for: the next updates meet it starting up
            phase[chat] = "up" if i < KILL_AT else "down" if i < RESTART_AT else "starting"
            await api.push(_update(api, i, chat, photo))
            await asyncio.sleep(SPACING_S)
        await engine_proc.wait_ready()
        back = [8000 + i for i in range(3)]
        for i, chat in enumerate(back):
            phase[chat] = "back"
            await api.push(_update(api, i, chat, photo))
        await _wait_all_final(api, chats + back)

        # "Busy, then answers": every user told busy asks again and now gets the answer.
        busy = [c for c in chats if _finals(api, c) == [BUSY]]
        n_before = {c: len(_finals(api, c)) for c in busy}
        for chat in busy:
            await api.push(_update(api, chats.index(chat), chat, photo))
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 40
        while any(len(_finals(api, c)) == n_before[c] for c in busy) and loop.time() < deadline:
            await asyncio.sleep(0.1)
        await asyncio.sleep(1.5)  # a late duplicate would show up here

    outcome = {c: _finals(api, c) for c in chats + back}
    lost = [c for c, f in outcome.items() if not f]
    assert not lost, f"lost updates: {lost}"
    for chat in chats + back:
        finals = outcome[chat]
        retried = chat in busy
        assert len(finals) == (2 if retried else 1), f"chat {chat} ({phase[chat]}): {finals}"
        assert finals[-1] != BUSY, f"chat {chat} ({phase[chat]}) still busy after the engine came back"
        if retried:
            assert finals[0] == BUSY
        i = chats.index(chat) if chat in chats else chat - 8000
        # /images sends its album once: never for the busy attempt, once for the answer.
        assert _albums(api, chat) == (1 if i % 3 == 1 else 0), f"chat {chat}: {_albums(api, chat)} albums"
    assert all(outcome[c] == [BUSY, outcome[c][1]] for c in chats if phase[c] == "down"), {
        c: outcome[c] for c in chats if phase[c] == "down"
    }
    assert all(len(outcome[c]) == 1 for c in back)
    assert len(engine_proc.pids) == 2
