"""Answers at the edges, on the real engine: weak matches, long queries, bad images, report pictures."""

from __future__ import annotations

import io
import shutil
from pathlib import Path

from PIL import Image

from bot.app import build_application, running
from bot.local_api import LocalBotApi
from tests.bot.conftest import InProcessEngine, bot_settings, engine_json
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
    assert len(data.encode()) <= 64 and data.startswith("M|")
    n = len(bot.calls)
    await bot.push(bot.callback_update(data, more.result))
    page = await bot.wait_for("sendMessage", lambda c: "(7–12)" in c.text, after=n)
    assert query in page.text


async def test_unreadable_photo_is_answered_not_crashed(bot: LocalBotApi) -> None:
    await bot.push(bot.photo_update(b"\x89PNG but not really"))
    reply = await bot.wait_for("sendMessage")
    assert reply.text.startswith("I can't read that image")


def _png(color: str) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (64, 48), color).save(buf, "PNG")
    return buf.getvalue()


async def test_report_pictures_are_sent(api: LocalBotApi, small_bundle_models: Path, tmp_path: Path) -> None:
    models = tmp_path / "models"
    shutil.copytree(small_bundle_models, models)
    report = models / (models / "ACTIVE").read_text().strip() / "report"
    for name, color in [
        ("tsne_mosaic_2048.png", "red"),
        ("tsne_mosaic_4096.png", "blue"),
        ("languages.png", "green"),
        ("word_map.png", "white"),
    ]:
        (report / name).write_bytes(_png(color))
    engine = InProcessEngine(models)
    await engine.start()
    try:
        async with running(build_application(bot_settings(api, engine.url))):
            await api.push(api.text_update("/map"))
            photo = await api.wait_for("sendPhoto")
            doc = await api.wait_for("sendDocument")
            assert photo.files["photo"] == _png("red")
            assert doc.files["document"] == _png("blue") and doc.params.get("caption")
            await api.push(api.text_update("/languages"))
            await api.wait_for(
                "sendMessage", lambda c: c.text.startswith("Languages of the kept posts: en 100%")
            )
            await api.wait_for("sendPhoto", lambda c: c.files.get("photo") == _png("green"))
            await api.push(api.text_update("/words"))
            await api.wait_for("sendPhoto", lambda c: c.files.get("photo") == _png("white"))
    finally:
        await engine.stop()


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
