"""The bot under trouble: the engine down or slow, Telegram 429s, request floods, and the token in logs."""

from __future__ import annotations

import asyncio
import io
import logging
from collections.abc import AsyncIterator

import pytest
from aiohttp import web

from bot.app import BUSY, build_application, running
from bot.handlers import SLOW_DOWN
from bot.local_api import LocalBotApi
from bot.logs import REDACTED, configure_logging
from tests.bot.conftest import TOKEN, InProcessEngine, bot_settings


async def test_engine_down_then_back(api: LocalBotApi, own_engine: InProcessEngine) -> None:
    async with running(build_application(bot_settings(api, own_engine.url))):
        await api.push(api.text_update("/related dog"))
        await api.wait_for("sendMessage", lambda c: "Words near" in c.text)
        await own_engine.stop()
        n = len(api.calls)
        await api.push(api.text_update("/related dog"))
        await api.wait_for("sendMessage", lambda c: c.text == BUSY, after=n)
        await api.push(api.text_update("/images dog"))
        await api.wait_for("sendMessage", lambda c: c.text == BUSY, after=n + 1)
        await own_engine.start()
        n = len(api.calls)
        await api.push(api.text_update("/related dog"))
        await api.wait_for("sendMessage", lambda c: "Words near" in c.text, after=n)
        assert not [c for c in api.calls[n:] if c.text == BUSY]


@pytest.fixture
async def slow_engine() -> AsyncIterator[str]:
    """An HTTP server that answers slower than the bot waits, then 503s."""

    async def slow(request: web.Request) -> web.Response:
        await asyncio.sleep(1.5)
        return web.json_response({})

    async def overloaded(request: web.Request) -> web.Response:
        return web.json_response({"error": "busy", "message": "queue full"}, status=503)

    app = web.Application()
    app.router.add_get("/v1/related", slow)
    app.router.add_get("/v1/images", overloaded)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    yield f"http://127.0.0.1:{runner.addresses[0][1]}"
    await runner.cleanup()


async def test_slow_or_overloaded_engine_means_busy(api: LocalBotApi, slow_engine: str) -> None:
    async with running(build_application(bot_settings(api, slow_engine, engine_timeout_s=0.5))):
        await api.push(api.text_update("/related dog"))
        await api.wait_for("sendMessage", lambda c: c.text == BUSY)
        n = len(api.calls)
        await api.push(api.text_update("/images dog"))
        await api.wait_for("sendMessage", lambda c: c.text == BUSY, after=n)


async def test_telegram_429_is_retried_and_nothing_lost(api: LocalBotApi, engine_url: str) -> None:
    async with running(build_application(bot_settings(api, engine_url))):
        api.fail_next("sendMessage", code=429, retry_after=1)
        api.fail_next("sendMediaGroup", code=429, retry_after=1)
        await api.push(api.text_update("/related dog"))
        await api.push(api.text_update("/images dog"))
        await api.wait_for("sendMessage", lambda c: "Words near" in c.text)
        await api.wait_for("sendMediaGroup")
        await api.wait_for("sendMessage", lambda c: c.text.startswith("Images for"))
    refused = [c for c in api.calls if c.error == 429]
    assert {c.method for c in refused} == {"sendMessage", "sendMediaGroup"}
    assert len(api.calls_of("sendMediaGroup")) == 1


async def test_per_user_rate_limit_is_friendly(api: LocalBotApi, engine_url: str) -> None:
    settings = bot_settings(api, engine_url, user_burst=2, user_rate_per_minute=1)
    async with running(build_application(settings)):
        for _ in range(4):
            await api.push(api.text_update("/related dog"))
        await api.wait_for("sendMessage", lambda c: c.text == SLOW_DOWN)
        # Another user is not affected.
        n = len(api.calls)
        await api.push(api.text_update("/related dog", user_id=5005))
        await api.wait_for(
            "sendMessage", lambda c: "Words near" in c.text and c.params["chat_id"] == "5005", after=n
        )
    answered = [
        c for c in api.calls_of("sendMessage") if "Words near" in c.text and c.params["chat_id"] == "1001"
    ]
    assert len(answered) == 2


async def test_token_never_in_logs(api: LocalBotApi, engine_url: str) -> None:
    buf = io.StringIO()
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    configure_logging([TOKEN], level=logging.DEBUG, stream=buf)
    # Loudest setting on purpose: httpx logs every request URL, which carries the token.
    logging.getLogger("httpx").setLevel(logging.DEBUG)
    try:
        async with running(build_application(bot_settings(api, engine_url))):
            api.fail_next("sendMessage", code=429, retry_after=1)
            api.fail_next("getFile", code=400, retry_after=None)
            await api.push(api.text_update("/related dog"))
            await api.push(api.photo_update(b"not really a jpeg"))
            await api.wait_for("sendMessage", lambda c: "Words near" in c.text)
            await api.wait_for("sendMessage", lambda c: c.text.startswith("Sorry"))
    finally:
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])
        logging.getLogger("httpx").setLevel(logging.WARNING)
    text = buf.getvalue()
    assert "/bot" in text and REDACTED in text  # the URLs were logged, redacted
    assert TOKEN not in text
    assert TOKEN.split(":")[1] not in text
