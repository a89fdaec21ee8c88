"""Buttons survive a restart of the bot: the Application is stopped and a new one built on the same
persistence (a pickle file, or Redis) answers the buttons the first one sent."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from bot.app import build_application, running
from bot.local_api import ApiCall, LocalBotApi
from bot.messages import EN, text
from bot.settings import BotSettings
from tests.bot.conftest import bot_settings, flickr_jpg

LONG_QUERY = "dog running through the grass with a ball in its mouth near the water"


def _buttons(call: ApiCall) -> list[dict[str, Any]]:
    return [b for row in call.json("reply_markup")["inline_keyboard"] for b in row]


async def _press(api: LocalBotApi, call: ApiCall, label_start: str) -> int:
    """Tap the first button of ``call`` whose label starts with ``label_start``; the calls before it."""
    data = next(b["callback_data"] for b in _buttons(call) if b["text"].startswith(label_start))
    n = len(api.calls)
    await api.push(api.callback_update(data, call.result))
    return n


async def _send_buttons(api: LocalBotApi, settings: BotSettings, flickr8k_dir: Path) -> list[ApiCall]:
    """Run a bot until it has sent "More ▶", "🖼 <word>" and "Similar images" buttons; then stop it."""
    async with running(build_application(settings)):
        await api.push(api.text_update(f"/images {LONG_QUERY}"))
        more = await api.wait_for("sendMessage", lambda c: "More" in c.params.get("reply_markup", ""))
        await api.push(api.text_update("/related dog"))
        related = await api.wait_for("sendMessage", lambda c: c.text.startswith("Words near"))
        await api.push(api.photo_update(flickr_jpg(flickr8k_dir, 5)))
        photo = await api.wait_for("sendMessage", lambda c: c.text.startswith("#"))
    return [more, related, photo]


@pytest.mark.parametrize("store", ["file", "redis"])
async def test_buttons_work_after_a_restart(
    api: LocalBotApi, engine_url: str, flickr8k_dir: Path, tmp_path: Path, store: str,
    request: pytest.FixtureRequest,
) -> None:
    state = str(tmp_path / "state.pickle")
    if store == "redis":
        state = request.getfixturevalue("redis_server").url
    settings = bot_settings(api, engine_url, state_store=state)
    more, related, photo = await _send_buttons(api, settings, flickr8k_dir)
    async with running(build_application(settings)):  # a new bot process: nothing in memory
        n = await _press(api, more, "More")
        page = await api.wait_for("sendMessage", lambda c: "(7–12)" in c.text, after=n)
        assert LONG_QUERY in page.text
        word = next(b["text"][2:] for b in _buttons(related) if b["text"].startswith("🖼"))
        n = await _press(api, related, "🖼")
        await api.wait_for("sendMessage", lambda c: c.text.startswith(f"Images for «{word}»"), after=n)
        n = await _press(api, photo, "Similar")
        await api.wait_for("sendMediaGroup", after=n)
    expired = text(EN, "expired")
    assert not [c for c in api.calls if c.method == "answerCallbackQuery" and c.params.get("text") == expired]


async def test_without_persistence_a_restart_forgets_the_buttons(
    api: LocalBotApi, engine_url: str, flickr8k_dir: Path
) -> None:
    """The control: the same restart with nothing persisted answers "expired" (and nothing else)."""
    settings = bot_settings(api, engine_url, state_store=None)
    more, _, _ = await _send_buttons(api, settings, flickr8k_dir)
    async with running(build_application(settings)):
        n = await _press(api, more, "More")
        expired = text(EN, "expired")
        await api.wait_for("answerCallbackQuery", lambda c: c.params.get("text") == expired, after=n)
    assert not [c for c in api.calls[n:] if c.method in {"sendMessage", "sendMediaGroup"}]
