"""The engine's answers parsed into typed objects: real answers of the real engine, and malformed ones."""

from __future__ import annotations

import copy
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from aiohttp import web

from bot.corpus_answers import stats_text, top_text
from bot.engine_answers import (
    BundleSummary,
    MalformedAnswer,
    parse_images,
    parse_related,
    parse_stats,
    parse_versions,
)
from bot.engine_client import EngineClient
from tests.bot.conftest import ENGINE_ADMIN_TOKEN, engine_json

# The shape of engine.service.stats, with a report/stats.json inside it.
STATS: dict[str, Any] = {
    "version": "v2",
    "created": "2026-01-02T03:04:05Z",
    "n_images": 40,
    "n_words": 9,
    "filter_report": {"total": 50, "kept": 40, "dropped": {"short_caption": 6, "city": 4, "duplicate": 0},
                      "languages": {"en": 30, "es": 10}},
    "corpus": {"path": "/data/posts", "format": "jsonl", "n_posts": 50, "n_kept": 40},
    "metrics": {"image_search": {"r1": 7.1, "r5": 23.5, "r10": 38.8, "medr": 17.0}},
    "languages": {"en": 30, "es": 10},
    "top_words": [{"word": "dog", "count": 3}, {"word": "beach", "count": 2}],
    "report": {"top_words_by_language": {"es": [{"word": "perro", "count": 2}]}},
    "report_files": ["languages.png", "tsne_mosaic_1024.png"],
}


def test_stats_parse_and_read_as_the_bot_shows_them() -> None:
    stats = parse_stats(STATS)
    assert (stats.version, stats.kept, stats.total, stats.n_images, stats.n_words) == ("v2", 40, 50, 40, 9)
    assert stats.dropped == {"short_caption": 6, "city": 4, "duplicate": 0}
    assert stats_text(stats) == (
        "Model version: v2\nPosts kept: 40 of 50\nDropped: short caption 6, city 4\n"
        "Images: 40, words in the space: 9\nLanguages: en 75% · es 25%\n"
        "Image search: r1 7.1, r5 23.5, r10 38.8, medr 17"
    )
    assert top_text(stats, "es") == "Top words (es):\n1. perro  2"
    assert top_text(stats, "ca") == "No top words for ca in the report yet (languages: en, es)."


def test_a_bundle_without_filter_report_report_or_evaluation() -> None:
    bare = {**STATS, "filter_report": {}, "metrics": {}, "report": {}}
    stats = parse_stats(bare)
    assert (stats.kept, stats.total, stats.dropped, stats.image_search) == (None, None, None, None)
    assert stats.top_words_by_language == {}
    assert stats_text(stats).splitlines()[1:3] == ["Posts kept: ? of ?", "Images: 40, words in the space: 9"]


def _without(key: str) -> Callable[[dict[str, Any]], None]:
    return lambda body: body.pop(key)


def _set(path: list[str], value: object) -> Callable[[dict[str, Any]], None]:
    def change(body: dict[str, Any]) -> None:
        target = body
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value

    return change


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (_without("version"), "stats has no 'version'"),
        (_set(["n_images"], "40"), "stats.n_images should be an integer, got str"),
        (_set(["top_words"], [{"word": "dog"}]), "stats.top_words[0] has no 'count'"),
        (_set(["languages", "en"], {"posts": 30}), "stats.languages.en should be an integer, got dict"),
        (_set(["filter_report", "kept"], "40"), "stats.filter_report.kept should be an integer, got str"),
        (_set(["metrics", "image_search", "r1"], None), "stats.metrics.image_search.r1 should be a number"),
        (_set(["report", "top_words_by_language"], {"es": "perro"}),
         "stats.report.top_words_by_language.es should be a list, got str"),
        (_without("report_files"), "stats has no 'report_files'"),
    ],
)
def test_malformed_stats_name_the_field(change: Callable[[dict[str, Any]], None], message: str) -> None:
    body = copy.deepcopy(STATS)
    change(body)
    with pytest.raises(MalformedAnswer) as refused:
        parse_stats(body)
    assert message in str(refused.value)


def test_malformed_search_answers_name_the_field() -> None:
    with pytest.raises(MalformedAnswer, match="stats should be an object, got list"):
        parse_stats([])
    with pytest.raises(MalformedAnswer, match="images has no 'confident'"):
        parse_images({"images": [], "unknown": [], "version": "v"})
    with pytest.raises(MalformedAnswer, match=r"images\.images\[0\]\.score should be a number, got str"):
        parse_images({"images": [{"id": "a", "score": "1", "caption": "", "url": "/v1/images/a"}],
                      "unknown": [], "confident": True, "version": "v"})
    with pytest.raises(MalformedAnswer, match=r"related\.unknown\[0\] should be a string, got int"):
        parse_related({"words": [], "unknown": [1], "version": "v"})


def test_versions_with_an_unreadable_bundle() -> None:
    listing = parse_versions({
        "active": "v2", "served": "v2",
        "versions": [
            {"version": "v2", "created": "c", "kept": 40, "total": 50, "metrics": STATS["metrics"]},
            {"version": "v1", "error": "manifest.json is missing"},
        ],
    })
    assert listing.served == "v2"
    assert listing.bundles == [
        BundleSummary("v2", 40, 50, {"r1": 7.1, "r5": 23.5, "r10": 38.8, "medr": 17.0}),
        BundleSummary("v1", None, None, None),
    ]


async def test_the_real_engines_answers_parse(engine_url: str) -> None:
    """Every answer the bot reads, as the engine writes it; unknown words come as data, not as an error."""
    raw = await engine_json(engine_url, "/v1/stats")
    client = EngineClient(engine_url, timeout_s=10, admin_token=ENGINE_ADMIN_TOKEN)
    try:
        stats = await client.stats()
        assert stats == parse_stats(raw)
        assert stats.version == raw["version"] and stats.kept == raw["filter_report"]["kept"]
        assert stats.languages == raw["languages"] and stats.report_files == raw["report_files"]
        top = [(w["word"], w["count"]) for w in raw["top_words"]]
        assert [(w.word, w.count) for w in stats.top_words] == top
        assert set(stats.top_words_by_language) == set(raw["report"].get("top_words_by_language", {}))
        images = await client.images("dog qwzxv", k=3)
        assert len(images.images) == 3 and images.unknown == ["qwzxv"] and images.version == stats.version
        unknown = await client.related("qwzxv")
        assert unknown.words == [] and unknown.unknown == ["qwzxv"]
        versions = await client.versions()
        assert versions.served == stats.version and stats.version in [b.version for b in versions.bundles]
    finally:
        await client.close()


@pytest.fixture
async def engine_answering(request: pytest.FixtureRequest) -> AsyncIterator[str]:
    """An engine that answers /v1/stats 200 with the body the test names."""
    body = request.param

    async def stats(_: web.Request) -> web.Response:
        return web.json_response(body)

    app = web.Application()
    app.router.add_get("/v1/stats", stats)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    yield f"http://127.0.0.1:{runner.addresses[0][1]}"
    await runner.cleanup()


@pytest.mark.parametrize("engine_answering", [{"version": "v2"}], indirect=True)
async def test_client_refuses_a_malformed_answer(engine_answering: str) -> None:
    client = EngineClient(engine_answering, timeout_s=2)
    try:
        with pytest.raises(MalformedAnswer, match="stats has no 'n_images'"):
            await client.stats()
    finally:
        await client.close()
