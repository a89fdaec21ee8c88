"""Text analyses of the report on a small real multilingual corpus (Flickr8k captions in en/es/ca)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from space.textspace import TextSpace
from space.tokenize import tokenize
from train.corpus.posts import Post
from train.report import Attraction, ReportConfig, write_report
from train.report.text_analyses import compare_with_reference, count_attractions

# (language, TSV column, rows): disjoint row ranges, so each post is one photo with one caption.
SLICES = (("en", "en_multi30k", range(0, 90)), ("es", "es_nllb_from_en", range(90, 150)),
          ("ca", "ca_apertium_from_es_en", range(150, 180)))
FAST = ReportConfig(show_progress=False, word_map_words=120)


@pytest.fixture(scope="module")
def multilingual_posts(multilingual_tsv: Path, flickr8k_dir: Path) -> list[Post]:
    with multilingual_tsv.open(encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE))
    posts = []
    for lang, column, span in SLICES:
        for i in span:
            row = rows[i]
            # Only the Spanish posts carry a date: the report's range comes from the posts that have one.
            taken = f"2024-05-{i % 28 + 1:02d}T12:00:00+00:00" if lang == "es" else None
            posts.append(Post(id=f"{lang}-{i}", image=flickr8k_dir / "images" / row["image"],
                              caption=row[column], lang=lang, taken_at=taken))
    assert all(p.image.is_file() for p in posts)
    return posts


@pytest.fixture(scope="module")
def multilingual_space(multilingual_posts: list[Post]) -> TextSpace:
    from gensim.models import Word2Vec

    sentences = [tokenize(p.caption) for p in multilingual_posts]
    w2v = Word2Vec(sentences, vector_size=32, window=5, min_count=2, epochs=20, workers=1, seed=1)
    words = list(w2v.wv.index_to_key)
    counts = np.array([w2v.wv.get_vecattr(w, "count") for w in words])
    return TextSpace(words, w2v.wv.vectors.copy(), np.ones(len(words)), counts)


@pytest.fixture(scope="module")
def text_report(tmp_path_factory: pytest.TempPathFactory, multilingual_posts: list[Post],
                multilingual_space: TextSpace) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("report_text")
    filter_report = {"total": 200, "kept": len(multilingual_posts), "dropped": {"language": 20}}
    stats = write_report(out, multilingual_posts, multilingual_space, None, filter_report, FAST)
    return out, stats


def test_language_shares_match_the_fixture(text_report: tuple[Path, dict]) -> None:
    out, stats = text_report
    assert {k: v["posts"] for k, v in stats["languages"].items()} == {"en": 90, "es": 60, "ca": 30}
    assert stats["languages"]["en"]["share"] == pytest.approx(0.5)
    assert list(stats["languages"]) == ["en", "es", "ca"]  # largest first
    saved = json.loads((out / "languages.json").read_text(encoding="utf-8"))
    assert saved["languages"] == stats["languages"] and saved["note"] is None


def test_top_words_per_language_come_from_that_language(text_report: tuple[Path, dict]) -> None:
    out, stats = text_report
    per = {code: [e["word"] for e in entries] for code, entries in stats["top_words_by_language"].items()}
    assert per["en"][0] == "dog" and per["es"][0] == "perro" and per["ca"][0] == "gos"
    assert "perro" not in per["en"] and "gos" not in per["es"] and "dog" not in per["ca"]
    assert "hombre" in per["es"] and "nen" in per["ca"]
    overall = [e["word"] for e in stats["top_words"]]
    assert overall[0] == "dog" and {"perro", "gos"} <= set(overall)
    counts = [e["count"] for e in stats["top_words"]]
    assert counts == sorted(counts, reverse=True) and len(overall) == FAST.stats_top_words
    assert len(json.loads((out / "top_words.json").read_text(encoding="utf-8"))) == FAST.top_words


def test_report_files_and_index_without_images(text_report: tuple[Path, dict]) -> None:
    out, stats = text_report
    files = stats["files"]
    assert set(files) == {"top_words", "top_words_by_language", "languages", "attractions", "word_map",
                          "top_words_en", "top_words_es", "top_words_ca"}
    es = json.loads((out / "top_words_es.json").read_text(encoding="utf-8"))
    assert es == stats["top_words_by_language"]["es"]
    for name in files.values():
        assert (out / name).is_file() and (out / name).with_suffix(".json").is_file()
        with Image.open(out / name) as img:
            assert img.format == "PNG" and min(img.size) > 200
    assert "skipped" in stats["image_maps"]
    assert stats["filter_report"]["dropped"] == {"language": 20}
    assert stats["corpus"] == {"posts": 180, "images": 0, "captions": 180}
    assert stats["dates"] == {"first": "2024-05-01T12:00:00+00:00", "last": "2024-05-28T12:00:00+00:00"}
    assert json.loads((out / "stats.json").read_text(encoding="utf-8")) == stats
    # Without a topic file no attraction is configured, and the report says so.
    assert stats["attractions"]["total_mentions"] == 0 and stats["attractions"]["ranking"] == []
    assert stats["attractions"]["note"] == "no attractions configured (no --topic file)"
    word_map = json.loads((out / "word_map.json").read_text(encoding="utf-8"))
    assert len(word_map["words"]) == min(FAST.word_map_words, stats["vocabulary"]["space_words"])


def test_posts_without_language_are_unknown(tmp_path: Path, multilingual_posts: list[Post],
                                            multilingual_space: TextSpace) -> None:
    from dataclasses import replace

    posts = [replace(p, lang=None) for p in multilingual_posts[:40]]
    cfg = ReportConfig(show_progress=False, word_map_words=30)
    stats = write_report(tmp_path, posts, multilingual_space, None, {}, cfg)
    assert stats["languages"] == {"unknown": {"posts": 40, "share": 1.0}}
    note = json.loads((tmp_path / "languages.json").read_text(encoding="utf-8"))["note"]
    assert note == "no post carries a language code"


MY_PLACES = (
    Attraction("El Born", ("born", "el born")),
    Attraction("Sagrada Família", ("sagrada família", "sagrada familia", "sagradafamilia")),
    Attraction("La Rambla", ("la rambla", "rambla", "las ramblas")),
    Attraction("Tibidabo", ("tibidabo",)),
)


def _post(i: int, caption: str) -> Post:
    return Post(id=str(i), image=Path(f"/nonexistent/{i}.jpg"), caption=caption)


def test_attractions_match_whole_tokens_only() -> None:
    posts = [
        _post(0, "Watching The Born Identity tonight"),
        _post(1, "an unborn idea, reborn and newborn"),
        _post(2, "La Rambla at dusk, then la rambla again #rambla"),
        _post(3, "SAGRADA FAMÍLIA from the park #sagradafamilia"),
        _post(4, "sagrada familia"),
        _post(5, "el born, born again"),
    ]
    ranked = {e["name"]: e for e in count_attractions(posts, MY_PLACES)}
    assert ranked["El Born"]["mentions"] == 3 and ranked["El Born"]["posts"] == 2
    # "la rambla" consumes its "rambla": two phrase mentions + the hashtag, never double-counted.
    assert ranked["La Rambla"]["mentions"] == 3 and ranked["La Rambla"]["posts"] == 1
    assert ranked["Sagrada Família"]["mentions"] == 3 and ranked["Sagrada Família"]["posts"] == 2
    assert ranked["Tibidabo"]["mentions"] == 0 and ranked["Tibidabo"]["rank"] is None
    assert [e["rank"] for e in count_attractions(posts, MY_PLACES)] == [1, 2, 3, None]


def test_reference_ranking_spearman(tmp_path: Path, multilingual_space: TextSpace) -> None:
    posts = [_post(0, "born born born rambla rambla tibidabo sagrada familia sagrada familia")]
    ranked = count_attractions(posts, MY_PLACES)  # Born 3, Rambla 2, Sagrada 2, Tibidabo 1
    same = compare_with_reference(ranked, ["El Born", "La Rambla", "Sagrada Família", "Tibidabo"])
    assert same["spearman"] == pytest.approx(0.9486833, abs=1e-6)  # one tie in ours
    reverse = compare_with_reference(ranked, ["Tibidabo", "Sagrada Família", "La Rambla", "El Born"])
    assert reverse["spearman"] == pytest.approx(-0.9486833, abs=1e-6)
    cfg = ReportConfig(show_progress=False, attractions=MY_PLACES, word_map_words=20,
                       reference_ranking=("Sagrada Família", "La Rambla", "El Born", "Park Güell"))
    stats = write_report(tmp_path, posts, multilingual_space, None, {}, cfg)
    by_name = {e["name"]: e for e in stats["attractions"]["ranking"]}
    assert by_name["Sagrada Família"]["reference_rank"] == 1 and by_name["Tibidabo"]["reference_rank"] is None
    assert stats["attractions"]["reference"]["shared"] == 3
    assert stats["attractions"]["reference"]["spearman"] is not None


def test_analyses_count_each_posts_own_caption_not_its_translations(
    tmp_path: Path, multilingual_tsv: Path, flickr8k_dir: Path, multilingual_space: TextSpace
) -> None:
    """Posts of the demo corpus's shape carry their image's captions in the other languages as references
    (the trainer learns from them); every analysis counts only what the post's author wrote."""
    with multilingual_tsv.open(encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE))
    columns = dict((lang, column) for lang, column, _ in SLICES)
    posts = []
    for lang, _, span in SLICES:
        for i in span:
            row = rows[i]
            own = row[columns[lang]]
            others = tuple(row[c] for code, c in columns.items() if code != lang)
            posts.append(Post(id=f"{lang}-{i}", image=flickr8k_dir / "images" / row["image"], caption=own,
                              lang=lang, captions=(own, *others)))
    attractions = (Attraction("Beach", ("beach",)),)
    cfg = ReportConfig(show_progress=False, word_map_words=120, attractions=attractions)
    stats = write_report(tmp_path, posts, multilingual_space, None, {"kept": len(posts)}, cfg)

    per = {code: [e["word"] for e in entries] for code, entries in stats["top_words_by_language"].items()}
    assert per["ca"][0] == "gos" and per["es"][0] == "perro" and per["en"][0] == "dog"
    assert not {"dog", "perro"} & set(per["ca"]) and not {"dog", "gos"} & set(per["es"])
    assert not {"perro", "gos"} & set(per["en"])
    own_dog = sum(tokenize(p.caption, language=p.lang).count("dog") for p in posts)
    overall = {e["word"]: e["count"] for e in stats["top_words"]}
    assert overall["dog"] == own_dog
    word_map = json.loads((tmp_path / "word_map.json").read_text(encoding="utf-8"))
    assert {e["word"]: e["count"] for e in word_map["words"]}["dog"] == own_dog
    beach = sum(1 for p in posts if "beach" in tokenize(p.caption, language=p.lang))
    assert stats["attractions"]["ranking"][0]["posts"] == beach
