"""Answers through indexes, as a bundle above ``EXACT_ROWS`` is served (the threshold lowered under the small
bundle's 300 images): the same hashtags as the exact path, and language-filtered pages that walk their
language's own index, never return another language's post and page consistently."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from engine import service
from engine.app import RUNTIME, create_app
from engine.model import load_model
from space import bundle, vectorindex
from space.vectorindex import LazyRows
from tests.engine.helpers import make_settings, publish_copy, spy_searches

LANGS = ("ca", "en", "es")
K = 12
PAGES = 5


def test_forced_index_path_gives_the_exact_hashtags(small_bundle: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    exact = load_model(small_bundle)
    # The trainer built hashtags.usearch (an exactly ranked bundle maps it but never searches it).
    assert exact.hashtagger is not None and exact.pool_index is not None
    monkeypatch.setattr(vectorindex, "EXACT_ROWS", 50)
    searched = spy_searches(monkeypatch)
    indexed = load_model(small_bundle)
    assert not indexed.eager and isinstance(indexed.pool_vectors, LazyRows)
    raw = np.load(small_bundle / bundle.IMAGE_VECTORS)
    rng = np.random.default_rng(0)
    photos = [raw[i] * (1 + 0.05 * rng.standard_normal(raw.shape[1])).astype(np.float32)
              for i in range(0, len(raw), 10)]
    identical = 0
    for vec in photos:
        for lang in (None, "en"):
            monkeypatch.setattr(vectorindex, "EXACT_ROWS", 50)
            through_index = service.hashtags(indexed, vec, 10, lang)
            monkeypatch.setattr(vectorindex, "EXACT_ROWS", 20_000)
            exactly = service.hashtags(exact, vec, 10, lang)
            a, b = json.loads(through_index)["hashtags"], json.loads(exactly)["hashtags"]
            assert [h["word"] for h in a] == [h["word"] for h in b]
            # The same neighbours, each rescored exactly: the same votes, to the last bits of one product.
            assert [h["score"] for h in a] == pytest.approx([h["score"] for h in b], abs=1e-4)
            identical += through_index == exactly
    assert identical >= len(photos)  # and mostly byte for byte
    assert any(index is indexed.pool_index for index, _ in searched)  # the neighbours came from the index


def _languages(staged: Path) -> None:
    """Posts in three languages, in turn (the small Flickr8k bundle's are all English)."""
    meta_path = staged / bundle.IMAGE_META
    meta = json.loads(meta_path.read_text(encoding="utf-8"))
    for i, item in enumerate(meta["items"]):
        item["lang"] = LANGS[i % len(LANGS)]
    meta_path.write_text(json.dumps(meta), encoding="utf-8")


async def test_language_filtered_pages_stay_in_their_language(
    aiohttp_client: Any, models: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    version = publish_copy(models, bundle.active_path(models), edit=_languages)
    assert all((models / version / f"search-{lang}.usearch").is_file() for lang in LANGS)
    monkeypatch.setattr(vectorindex, "EXACT_ROWS", 50)
    searched = spy_searches(monkeypatch)
    client = await aiohttp_client(create_app(make_settings(models)))
    model = client.app[RUNTIME].holder.require()
    assert model.version == version and set(model.lang_indexes) == set(LANGS)
    lang_of = {model.ids[i]: LANGS[i % len(LANGS)] for i in range(model.n_images)}

    async def get(**params: Any) -> list[dict[str, Any]]:
        r = await client.get("/v1/images", params={name: str(value) for name, value in params.items()})
        assert r.status == 200
        return (await r.json())["images"]

    for text in ("dog", "red shirt girl", "beach water -grass"):
        for lang in LANGS:
            pages = [await get(q=text, k=K, offset=K * p, lang=lang) for p in range(PAGES)]
            hits = [hit for page in pages for hit in page]
            assert hits and {lang_of[h["id"]] for h in hits} == {lang}, (text, lang)
            assert {h["lang"] for h in hits} == {lang}
            assert hits == await get(q=text, k=K * PAGES, lang=lang)  # pages are one deeper answer
            assert len({h["id"] for h in hits}) == len(hits) == min(K * PAGES, model.n_images // 3)
            every = await get(q=text, k=100, lang=lang)  # deeper than a beam: all of the language's posts
            assert len(every) == 100 and {lang_of[h["id"]] for h in every} == {lang}
    assert {id(model.lang_indexes[lang]) for lang in LANGS} <= {id(index) for index, _ in searched}
    assert not any(index is model.search_index for index, _ in searched)  # never the unfiltered index


def test_indexes_text_queries_walk_are_searched_wider(small_bundle: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """The search index and each language's are searched as wide as TEXT_WIDTHS gives for their size (a
    graph walk from a caption's words misses more neighbours than one from a photo); the word, image and
    hashtag-pool indexes keep the default breadth."""
    monkeypatch.setattr(vectorindex, "EXACT_ROWS", 50)
    monkeypatch.setattr(vectorindex, "TEXT_WIDTHS", ((90, 100), (200, 300), (400, 700)))
    model = load_model(small_bundle)
    widths = {len(rows): model.lang_indexes[lang].expansion_search for lang, rows in model.langs.items()
              if lang in model.lang_indexes}
    assert model.lang_indexes and all(w == (100 if n <= 90 else 300 if n <= 200 else 700)
                                      for n, w in widths.items())
    assert len(model.search_index) == 300 and model.search_index.expansion_search == 700
    default = vectorindex.EXPANSION_SEARCH
    assert model.words_index.expansion_search == model.images_index.expansion_search == default
    assert model.pool_index.expansion_search == default
