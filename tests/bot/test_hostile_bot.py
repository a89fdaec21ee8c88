"""Issue 28: what a flooder, a hostile file, a slow Redis or an odd image id could still do to the bot.

Each over-limit message got its own "slow down" (the flooder spent the bot's sending budget), inline
pages skipped the limiter (a search, thumbnails and an upload each), documents were downloaded whatever
their size and MIME claim, a slow Redis cost 2 s per picture one after another, and ids holding '/'
broke the image fetches.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from bot.app import build_application, running
from bot.engine_client import EngineClient
from bot.local_api import LocalBotApi
from bot.messages import EN, text
from bot.services import FileIdCache
from space import bundle
from tests.bot.conftest import ENGINE_ADMIN_TOKEN, InProcessEngine, bot_settings, flickr_jpg
from tests.conftest import RedisServer

CACHE_CHAT = -1001234567890
SLOW_DOWN = text(EN, "slow_down")


async def _settle(api: LocalBotApi, seconds: float = 1.5) -> None:
    """Let late answers arrive: used only to look for answers that must NOT come (a slow machine can only
    make this miss a bug, never fail a good build)."""
    await asyncio.sleep(seconds)


async def test_a_flood_gets_one_slow_down(api: LocalBotApi, engine_url: str) -> None:
    settings = bot_settings(api, engine_url, user_burst=2, user_rate_per_minute=1)
    async with running(build_application(settings)):
        for _ in range(8):
            await api.push(api.text_update("/related dog"))
        await api.wait_for("sendMessage", lambda c: c.text == SLOW_DOWN)
        for _ in range(100):
            if len([c for c in api.calls_of("sendMessage") if "Words near" in c.text]) >= 2:
                break
            await asyncio.sleep(0.1)
        await _settle(api)
    replies = [c.text for c in api.calls_of("sendMessage")]
    assert replies.count(SLOW_DOWN) == 1, replies
    assert len([r for r in replies if "Words near" in r]) == 2


async def test_inline_pages_count_against_the_rate_limit(api: LocalBotApi, engine_url: str) -> None:
    """Later pages skip the debounce: each was a search, up to 10 thumbnails and an upload, unlimited."""
    settings = bot_settings(api, engine_url, user_burst=2, user_rate_per_minute=1, engine_public_url=None,
                            cache_chat_id=CACHE_CHAT)
    async with running(build_application(settings)):
        ids = []
        for page in range(1, 7):
            update = await api.push(api.inline_update("dog", offset=str(10 * page)))
            ids.append(update["inline_query"]["id"])
        for _ in range(600):
            if set(ids) <= api.inline_answered:
                break
            await asyncio.sleep(0.1)
        assert set(ids) <= api.inline_answered  # every query is still answered
    uploads = [c for c in api.calls_of("sendMediaGroup") if c.params["chat_id"] == str(CACHE_CHAT)]
    assert len(uploads) <= 2, len(uploads)  # the burst's two searches, not six


async def test_a_document_over_the_limit_is_refused_before_the_download(api: LocalBotApi, engine_url: str,
                                                                        flickr8k_dir: Path) -> None:
    photo = flickr_jpg(flickr8k_dir)
    settings = bot_settings(api, engine_url, max_photo_mb=len(photo) / 2 / 2**20)
    async with running(build_application(settings)):
        await api.push(api.photo_update(photo, as_document=True))
        reply = await api.wait_for("sendMessage", lambda c: "too big" in c.text)
    assert f"{len(photo) / 2**20:.1f} MB" in reply.text
    assert api.calls_of("getFile") == []  # never downloaded


async def test_a_document_that_only_claims_to_be_an_image(api: LocalBotApi, engine_url: str) -> None:
    async with running(build_application(bot_settings(api, engine_url))):
        await api.push(api.photo_update(b"%PDF-1.7 not a picture at all" * 20, as_document=True))
        await api.wait_for("sendMessage", lambda c: c.text == text(EN, "not_an_image"))


def test_image_signatures() -> None:
    from bot.handlers import looks_like_image

    assert looks_like_image(b"\xff\xd8\xff\xe0....") and looks_like_image(b"\x89PNG\r\n\x1a\n....")
    assert looks_like_image(b"RIFF\x00\x00\x00\x00WEBPVP8 ") and looks_like_image(b"GIF89a")
    assert not looks_like_image(b"RIFF\x00\x00\x00\x00WAVEfmt ") and not looks_like_image(b"<svg")


async def test_image_ids_with_a_slash_are_fetched(tmp_path: Path, small_bundle: Path) -> None:
    """Issue 28: quote() kept '/', so the engine read an id like 'user/123' as two path segments."""
    from bot.engine_client import image_path
    from tests.engine.helpers import publish_copy

    def slashed(staged: Path) -> None:
        meta = json.loads((staged / bundle.IMAGE_META).read_text())
        for item in meta["items"]:
            item["post_id"] = f"user/{item.get('post_id')}/x y?#%"
        (staged / bundle.IMAGE_META).write_text(json.dumps(meta))

    models = tmp_path / "models"
    models.mkdir()
    publish_copy(models, small_bundle, edit=slashed)
    engine = InProcessEngine(models)
    await engine.start()
    client = EngineClient(engine.url, admin_token=ENGINE_ADMIN_TOKEN)
    try:
        hit = (await client.images("dog", k=1)).images[0]
        assert hit.id.startswith("user/")
        assert image_path(hit.id) == hit.url  # the engine's own link to the picture
        thumb = await client.image_bytes(hit.id, size=64)
        assert thumb[:3] == b"\xff\xd8\xff"
    finally:
        await client.close()
        await engine.stop()


async def test_a_slow_redis_costs_the_file_id_cache_one_timeout(redis_server: RedisServer) -> None:
    """A paused Redis (CLIENT PAUSE: it answers, late): one MGET for a page of pictures, then the breaker
    keeps further calls in memory, instead of ten 2-second GETs one after another. (A timed-out client's
    commands never run on the server, so the round trips are counted where they are sent.)"""
    cache = FileIdCache(redis_server.url, timeout_s=0.3, retry_after_s=60)
    admin = aioredis.from_url(redis_server.url)
    sent: list[str] = []
    assert cache._redis is not None
    real = cache._redis.execute_command

    async def counted(*args: object, **kwargs: object) -> object:
        sent.append(str(args[0]))
        return await real(*args, **kwargs)

    cache._redis.execute_command = counted
    try:
        await cache.set("v:a:512", "file-a")
        await admin.execute_command("CLIENT", "PAUSE", "3000", "ALL")
        sent.clear()
        keys = [f"v:{i}:512" for i in range(10)] + ["v:a:512"]
        found = await cache.get_many(keys)
        assert found == {"v:a:512": "file-a"}  # from the in-process copy while Redis is slow
        assert await cache.get_many(keys) == found and await cache.get("v:3:512") is None
        await cache.set("v:b:512", "file-b")
        assert await cache.get("v:b:512") == "file-b"
        assert sent == ["MGET"] and cache.failures == 1
    finally:
        await admin.execute_command("CLIENT", "UNPAUSE")
        await admin.aclose()
        await cache.close()


@pytest.mark.parametrize("offset", ["²", "١٠", "10²", "-5", " 10"])
async def test_odd_inline_offsets_are_the_first_page(api: LocalBotApi, engine_url: str, offset: str) -> None:
    """'²'.isdigit() is True and int('²') raises: the query got no answer."""
    async with running(build_application(bot_settings(api, engine_url, engine_public_url=None,
                                                      cache_chat_id=CACHE_CHAT))):
        update = await api.push(api.inline_update("dog", offset=offset))
        query_id = update["inline_query"]["id"]
        for _ in range(300):
            if query_id in api.inline_answered:
                break
            await asyncio.sleep(0.1)
    answer = next(c for c in api.calls_of("answerInlineQuery") if c.params["inline_query_id"] == query_id)
    assert answer.json("results"), answer.params
