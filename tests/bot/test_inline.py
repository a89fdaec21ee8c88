"""Inline mode as people type: every query answered (debounced, never dropped by the rate limit), with
Telegram file ids so that no public engine URL is needed."""

from __future__ import annotations

import asyncio

from bot.app import build_application, running
from bot.local_api import ApiCall, LocalBotApi
from bot.messages import ES, text
from tests.bot.conftest import bot_settings, engine_json

CACHE_CHAT = -1001234567890  # a private channel the bot posts inline pictures to
TYPED = "a black dog runs through the green grass"


def _results(call: ApiCall) -> list[dict[str, object]]:
    results: list[dict[str, object]] = call.json("results")
    return results


async def test_thirty_fast_inline_queries_all_get_an_answer(api: LocalBotApi, engine_url: str) -> None:
    # The production limits (5 at once, 20 a minute) used to drop all but ~5 of these. The debounce is
    # longer than the production one so that a loaded test machine still types "fast".
    settings = bot_settings(api, engine_url, user_burst=5, user_rate_per_minute=20, engine_public_url=None,
                            cache_chat_id=CACHE_CHAT, inline_debounce_s=1.0)
    prefixes = [TYPED[: 10 + i] for i in range(30)]
    async with running(build_application(settings)):
        ids = []
        for prefix in prefixes:
            update = await api.push(api.inline_update(prefix))
            ids.append(update["inline_query"]["id"])
            await asyncio.sleep(0.02)
        await asyncio.wait_for(_all_answered(api, ids), 60)
    answers = {c.params["inline_query_id"]: c for c in api.calls if c.method == "answerInlineQuery"}
    assert not [c for c in api.calls if c.method == "answerInlineQuery" and c.error is not None]
    assert set(ids) <= set(answers) and all(_results(answers[i]) for i in ids)  # never nothing
    # The last query: its own pictures, as the engine ranks them, as cached Telegram photos.
    truth = (await engine_json(engine_url, "/v1/images", q=prefixes[-1], k=10))["images"]
    last = _results(answers[ids[-1]])
    assert [str(r["id"]).rsplit("-", 1)[0] for r in last] == [h["id"] for h in truth]
    assert all("photo_file_id" in r and "photo_url" not in r for r in last)
    # The others were answered with those pictures, personal and uncached (Telegram must not keep them
    # as the answer to their own text).
    stand_in = answers[ids[0]]
    assert _results(stand_in) == last and stand_in.params["cache_time"] == "0"
    uploads = [c for c in api.calls_of("sendMediaGroup") if c.params["chat_id"] == str(CACHE_CHAT)]
    assert len(uploads) == 1 and not api.calls_of("sendMessage")  # one upload; nothing said to anyone


async def _all_answered(api: LocalBotApi, ids: list[str]) -> None:
    while not set(ids) <= api.inline_answered:
        await asyncio.sleep(0.05)


async def test_inline_reuses_the_file_ids_the_bot_holds(api: LocalBotApi, engine_url: str) -> None:
    """No cache chat and no public URL: the pictures the bot already sent are still offered."""
    settings = bot_settings(api, engine_url, engine_public_url=None, album_size=10)
    async with running(build_application(settings)):
        await api.push(api.text_update("/images dog"))
        album = await api.wait_for("sendMediaGroup")
        n = len(api.calls)
        await api.push(api.inline_update("dog"))
        answer = await api.wait_for("answerInlineQuery", after=n)
    sent = [m["photo"][-1]["file_id"] for m in album.result]
    assert [r["photo_file_id"] for r in _results(answer)] == sent


async def test_a_repeated_query_is_answered_from_memory(api: LocalBotApi, engine_url: str) -> None:
    settings = bot_settings(api, engine_url, engine_public_url=None, cache_chat_id=CACHE_CHAT)
    async with running(build_application(settings)):
        await api.push(api.inline_update("dog"))
        first = await api.wait_for("answerInlineQuery")
        n = len(api.calls)
        await api.push(api.inline_update("dog", user_id=3003))
        again = await api.wait_for("answerInlineQuery", after=n)
    assert _results(again) == _results(first)
    assert len([c for c in api.calls_of("sendMediaGroup")]) == 1  # uploaded once


async def test_empty_and_hopeless_queries_still_get_an_answer(api: LocalBotApi, engine_url: str) -> None:
    api.user_languages[1001] = "es"
    settings = bot_settings(api, engine_url, engine_public_url=None, cache_chat_id=CACHE_CHAT,
                            inline_debounce_s=0.0)
    async with running(build_application(settings)):
        await api.push(api.inline_update(""))
        empty = await api.wait_for("answerInlineQuery")
        button = empty.json("button")
        assert _results(empty) and button["text"].startswith(text(ES, "inline_try", q=""))
        example = button["text"][len(text(ES, "inline_try", q="")):]
        truth = await engine_json(engine_url, "/v1/images", q=example, k=10)
        assert [str(r["id"]).rsplit("-", 1)[0] for r in _results(empty)] == [h["id"] for h in truth["images"]]
        for query in ("qwzxv", "the"):  # unknown; only a stop word
            n = len(api.calls)
            await api.push(api.inline_update(query))
            nothing = await api.wait_for("answerInlineQuery", after=n)
            assert nothing.json("button")["text"] == text(ES, "inline_none", q=query)
            assert nothing.params["cache_time"] == "0"
