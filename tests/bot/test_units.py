"""The bot's small parts alone: callback data, report names, stats, limits, redaction, engine errors."""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import AsyncIterator

import pytest
from aiohttp import web

from bot.admin import status_text
from bot.callbacks import MORE, Button, as_button
from bot.corpus_answers import mosaic_names
from bot.engine_answers import parse_stats
from bot.engine_client import EngineClient, EngineRequestError, EngineUnavailable, ReportMissing
from bot.inline_memory import InlineMemory, InlinePage
from bot.logs import REDACTED, RedactingFilter
from bot.retrain import status_from_record
from bot.services import FileIdCache, UserRateLimiter
from tests.conftest import free_port


@pytest.mark.parametrize("value", ["dog", "plaça", "sagrada família " * 6, "x" * 200, "a|b|c"])
def test_button_data_round_trips_through_json(value: str) -> None:
    """A button's data survives the Redis persistence's JSON (a NamedTuple comes back as a list)."""
    pressed = Button(MORE, value, 120)
    assert as_button(pressed) == pressed
    assert as_button(json.loads(json.dumps(pressed))) == pressed
    assert as_button("m|120|dog") is None and as_button(["m", "dog"]) is None  # not a Button: expired


@pytest.mark.parametrize(
    ("files", "expected"),
    [
        (["tsne_mosaic_1024.png", "stats.json"], ("tsne_mosaic_1024.png", None)),
        (["tsne_mosaic_4096.png", "tsne_mosaic_2048.png"], ("tsne_mosaic_2048.png", "tsne_mosaic_4096.png")),
        (["tsne_mosaic_8192.png"], ("tsne_mosaic_8192.png", None)),
        (["word_map.png"], (None, None)),
    ],
)
def test_mosaic_names(files: list[str], expected: tuple[str | None, str | None]) -> None:
    assert mosaic_names(files) == expected


def test_stats_words_and_languages() -> None:
    """Top words overall (the engine's) and per language (the report's); kept posts per language."""
    stats = parse_stats({
        "version": "v1", "created": "2026-01-01T00:00:00Z", "n_images": 40, "n_words": 9,
        "filter_report": {}, "corpus": None, "metrics": {},
        "top_words": [{"word": "dog", "count": 3}],
        "report": {"top_words_by_language": {"es": [{"word": "perro", "count": 2}]}},
        "languages": {"en": 30, "es": 10},
        "report_files": [],
    })
    assert [(w.word, w.count) for w in stats.words()] == [("dog", 3.0)]
    assert [(w.word, w.count) for w in stats.words("es")] == [("perro", 2.0)]
    assert stats.words("ca") == []
    assert stats.languages == {"en": 30, "es": 10}


def test_user_rate_limiter_refills() -> None:
    limiter = UserRateLimiter(per_minute=60, burst=2)
    assert [limiter.allow(1, now=0.0) for _ in range(3)] == [True, True, False]
    assert limiter.allow(2, now=0.0)  # per user
    assert limiter.allow(1, now=1.1)  # one token a second
    assert not limiter.allow(1, now=1.2)


def test_user_rate_limiter_forgets_the_least_recently_seen_user() -> None:
    """A flood of new users must not free a user who keeps writing (issue 25: the oldest were dropped)."""
    limiter = UserRateLimiter(per_minute=1, burst=1, users=3)
    assert limiter.allow(1, now=0.0) and not limiter.allow(1, now=0.0)  # user 1 is out of tokens
    assert limiter.allow(2, now=1.0) and limiter.allow(3, now=2.0)
    assert not limiter.allow(1, now=3.0)  # user 1 writes again: the most recently seen now
    assert limiter.allow(4, now=4.0)  # a fourth user: user 2's bucket goes, not user 1's
    assert not limiter.allow(1, now=5.0)
    assert limiter.allow(2, now=5.0)  # forgotten: a full bucket again


async def test_file_id_cache_keeps_the_recently_used() -> None:
    cache = FileIdCache(capacity=2)
    await cache.set("a", "A")
    await cache.set("b", "B")
    assert await cache.get("a") == "A"
    await cache.set("c", "C")
    assert [await cache.get(k) for k in "abc"] == ["A", None, "C"]


def test_inline_memory_is_bounded_least_recently_used_first() -> None:
    memory = InlineMemory(capacity=2)
    for key in ("q1", "q2"):
        memory.keep(key, InlinePage([]))
    assert memory.page("q1") is not None
    memory.keep("q3", InlinePage([]))
    assert memory.page("q2") is None and memory.page("q1") is not None and memory.page("q3") is not None
    for user in range(25):
        memory.typed(user, f"id{user}")
    assert len(memory.latest) == 20 and not memory.is_latest(0, "id0") and memory.is_latest(24, "id24")


def test_redacting_filter_covers_args_and_tracebacks() -> None:
    token = "999:SECRET"
    record = logging.LogRecord(
        "httpx", logging.INFO, __file__, 1, "POST %s", (f"https://x/bot{token}/getMe",), None
    )
    try:
        raise RuntimeError(f"failed at /bot{token}/sendMessage")
    except RuntimeError:
        record.exc_info = sys.exc_info()
    assert RedactingFilter([token]).filter(record)
    text = logging.Formatter().format(record)
    assert token not in text and text.count(REDACTED) == 2


def test_progress_records() -> None:
    running = status_from_record(
        {"stage": "encode", "done": 5, "total": 20, "unit": "img", "rate": 2.5, "elapsed": 70, "eta": 6},
        running=True,
    )
    assert (
        status_text(running, "en")
        == "Retraining — stage: encoding the images · 5/20 img (25%) · 2.5 img/s · elapsed 1m10s · ETA 6s"
    )
    assert (
        status_from_record({"stage": "done", "bundle": "/m/v1", "version": "v1"}, running=False).version
        == "v1"
    )
    assert status_from_record({"stage": "encode"}, running=False).state == "failed"  # died mid-way


@pytest.fixture
async def stub_engine() -> AsyncIterator[str]:
    """An engine that answers each route with one of the contract's error shapes."""

    def reply(status: int, body: dict[str, object] | str) -> web.Response:
        if isinstance(body, str):
            return web.Response(status=status, text=body)
        return web.json_response(body, status=status)

    app = web.Application()
    app.router.add_get(
        "/v1/related",
        lambda r: _async(reply(400, {"error": "unknown_words", "message": "?", "unknown": ["qq"]})),
    )
    app.router.add_get("/v1/images", lambda r: _async(reply(503, {"error": "busy", "message": "full"})))
    app.router.add_get("/v1/stats", lambda r: _async(reply(502, "<html>bad gateway</html>")))
    app.router.add_get(
        "/v1/report/{name}", lambda r: _async(reply(404, {"error": "not_found", "message": "no"}))
    )
    app.router.add_post(
        "/v1/hashtags", lambda r: _async(reply(413, {"error": "image_too_large", "message": "big"}))
    )
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    yield f"http://127.0.0.1:{runner.addresses[0][1]}"
    await runner.cleanup()


async def _async(response: web.Response) -> web.Response:
    return response


async def test_engine_errors_are_mapped(stub_engine: str) -> None:
    client = EngineClient(stub_engine, timeout_s=2)
    try:
        with pytest.raises(EngineRequestError) as refused:
            await client.related("qq")
        assert refused.value.code == "unknown_words" and refused.value.unknown == ["qq"]
        with pytest.raises(EngineUnavailable):
            await client.images("dog")
        with pytest.raises(EngineUnavailable):
            await client.stats()
        with pytest.raises(ReportMissing):
            await client.report_file("word_map.png")
        with pytest.raises(EngineRequestError) as too_big:
            await client.hashtags(b"x")
        assert too_big.value.code == "image_too_large"
    finally:
        await client.close()
    nobody = EngineClient(f"http://127.0.0.1:{free_port()}", timeout_s=2)
    with pytest.raises(EngineUnavailable):
        await nobody.related("dog")
    await nobody.close()


def test_public_telegram_api_only_and_no_shadowed_lock_name() -> None:
    """Issue 25: bot/persistence.py imported PTB's private ``telegram.ext._utils.types``, and
    ``bot.joblock.FileLock`` shadowed ``filelock.FileLock``."""
    import re

    import bot.joblock
    from tests.conftest import ROOT

    private = [p.name for p in (ROOT / "bot").glob("*.py")
               if re.search(r"^\s*(from|import) telegram[\w.]*\._", p.read_text(), re.MULTILINE)]
    assert private == []
    assert not hasattr(bot.joblock, "FileLock") and hasattr(bot.joblock, "LockFile")
