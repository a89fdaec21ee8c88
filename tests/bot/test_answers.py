"""Answers at the edges, on the real engine: weak matches, long queries, bad images, report pictures."""

from __future__ import annotations

from collections.abc import Callable

import aiohttp

from bot.app import build_application, running
from bot.local_api import ApiCall, LocalBotApi
from tests.bot.conftest import bot_settings, engine_json
from tests.conftest import RedisServer


async def test_no_confident_match_is_said(bot: LocalBotApi) -> None:
    await bot.push(bot.text_update("/images dog -dog"))
    await bot.wait_for("sendMediaGroup")
    await bot.wait_for("sendMessage", lambda c: "no confident match" in c.text)


async def test_unknown_word_gets_suggestions_from_the_known_part(bot: LocalBotApi, engine_url: str) -> None:
    await bot.push(bot.text_update("/images dog qwzxv"))
    reply = await bot.wait_for("sendMessage", lambda c: "qwzxv" in c.text)
    near = await engine_json(engine_url, "/v1/related", q="dog", k=4)
    assert "Try: " + ", ".join(w["word"] for w in near["words"]) in reply.text


async def test_stop_words_only_is_explained(bot: LocalBotApi) -> None:
    await bot.push(bot.text_update("/images the"))
    reply = await bot.wait_for("sendMessage")
    assert reply.text.startswith("I can't search that") and "meaningful" in reply.text


async def test_long_query_pages_through_a_short_key(bot: LocalBotApi) -> None:
    query = "dog running through the grass with a ball in its mouth near the water"
    assert len(query.encode()) > 64
    await bot.push(bot.text_update(f"/images {query}"))
    more = await bot.wait_for("sendMessage", lambda c: "reply_markup" in c.params)
    data = more.json("reply_markup")["inline_keyboard"][0][0]["callback_data"]
    # Telegram sees an id within its 64 bytes; the query stays with the bot (PTB's callback data).
    assert len(data.encode()) <= 64 and "grass" not in data
    n = len(bot.calls)
    await bot.push(bot.callback_update(data, more.result))
    page = await bot.wait_for("sendMessage", lambda c: "(7–12)" in c.text, after=n)
    assert query in page.text


async def test_unreadable_photo_is_answered_not_crashed(bot: LocalBotApi) -> None:
    # A PNG's signature (so the bot passes it on: bot.handlers.looks_like_image), then garbage: the engine's
    # refusal reaches the user.
    await bot.push(bot.photo_update(b"\x89PNG\r\n\x1a\n but not really"))
    reply = await bot.wait_for("sendMessage")
    assert reply.text.startswith("I can't read that image")


async def _report_file(engine_url: str, name: str) -> bytes | None:
    async with aiohttp.ClientSession() as session, session.get(f"{engine_url}/v1/report/{name}") as resp:
        return await resp.read() if resp.status == 200 else None


def says(text: str) -> Callable[[ApiCall], bool]:
    """A predicate: the call's text is exactly ``text``."""
    return lambda call: call.text == text


def carries(field: str, data: bytes) -> Callable[[ApiCall], bool]:
    """A predicate: the call uploaded ``data`` as ``field``."""
    return lambda call: call.files.get(field) == data


async def test_report_pictures_are_sent_or_explained(bot: LocalBotApi, engine_url: str) -> None:
    """Each picture command sends the bundle's own file, or says the report has none yet."""
    files = (await engine_json(engine_url, "/v1/stats"))["report_files"]
    mosaics = [f for f in files if f.startswith("tsne_mosaic_") and f.endswith(".png")]
    n = len(bot.calls)
    await bot.push(bot.text_update("/map"))
    if not mosaics:
        await bot.wait_for("sendMessage", says("The report has no t-SNE map picture yet."), after=n)
    else:
        sent = await bot.wait_for("sendPhoto", after=n)
        originals = [await _report_file(engine_url, m) for m in mosaics]
        assert sent.files["photo"] in originals
    for command, name in [
        ("/words", "word_map.png"),
        ("/languages", "languages.png"),
        ("/top", "top_words.png"),
    ]:
        n = len(bot.calls)
        expected = await _report_file(engine_url, name)
        await bot.push(bot.text_update(command))
        if expected is None:
            if command == "/words":
                await bot.wait_for("sendMessage", says(f"The report has no {name} picture yet."), after=n)
            continue
        await bot.wait_for("sendPhoto", carries("photo", expected), after=n)


async def test_file_ids_in_redis_survive_a_restart(
    api: LocalBotApi, engine_url: str, redis_server: RedisServer
) -> None:
    settings = bot_settings(api, engine_url, redis_url=redis_server.url)
    async with running(build_application(settings)):
        await api.push(api.text_update("/images dog"))
        first = await api.wait_for("sendMediaGroup")
    assert first.files
    n = len(api.calls)
    async with running(build_application(settings)):  # a new bot process, same Redis
        await api.push(api.text_update("/images dog"))
        second = await api.wait_for("sendMediaGroup", after=n)
    assert not second.files
    assert {m["media"] for m in second.json("media")} == {m["photo"][-1]["file_id"] for m in first.result}
    # Redis down: answers still come (uploads again), no error reaches the user.
    redis_server.stop()
    n = len(api.calls)
    async with running(build_application(settings)):
        await api.push(api.text_update("/images dog"))
        third = await api.wait_for("sendMediaGroup", after=n)
    assert third.files
    assert not [c for c in api.calls[n:] if c.text.startswith(("Sorry", "The service"))]
