"""Filter counts on one fixture corpus written in all three formats, and the filters' building blocks."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import ROOT
from tests.train.fixtures.corpus import FixturePost, expected_report, fixture_posts, write_corpus
from train.config import FilterConfig, IngestConfig
from train.corpus.filters import CityMatcher, run_filters
from train.corpus.ingest import ingest
from train.corpus.posts import Post
from train.corpus.topic import load_topic

# The fixture is a Barcelona corpus: its other-city posts go with the shipped topic file.
BARCELONA = FilterConfig(other_cities=load_topic(ROOT / "topics" / "barcelona.toml").cities_to_drop())


@pytest.fixture(scope="module")
def posts(flickr8k_dir: Path, multilingual_tsv: Path) -> list[FixturePost]:
    return fixture_posts(flickr8k_dir, multilingual_tsv)


def _ids(p: FixturePost, fmt: str) -> list[str]:
    base = f"B{p.key}" if fmt == "instaloader" else p.key + (".jpg" if fmt == "flickr8k" and p.n == 1 else "")
    if p.n == 1:
        return [base]
    return [f"{base}_{n}" + (".jpg" if fmt == "flickr8k" else "") for n in range(1, p.n + 1)]


@pytest.mark.parametrize("fmt", ["jsonl", "instaloader", "flickr8k"])
def test_filter_counts_exact_in_each_format(fmt: str, posts: list[FixturePost], tmp_path: Path) -> None:
    corpus = write_corpus(fmt, posts, tmp_path / fmt)
    read, stats = ingest(IngestConfig(corpus, fmt))  # type: ignore[arg-type]
    result = run_filters(read, BARCELONA)
    with_users = fmt != "flickr8k"
    expected = expected_report(posts, with_users)
    report = result.report
    keys = ("total", "kept", "dropped")
    assert {k: report[k] for k in keys} == {k: expected[k] for k in keys}
    assert report["languages"] == expected["languages"]
    assert report["skipped_filters"] == ([] if with_users else ["user (the corpus has no user ids)"])
    # Every post dropped for its own reason, not just the right totals.
    reason_of = {i: r for r, ids in result.dropped_ids.items() for i in ids}
    for p in posts:
        want = p.expect if with_users or p.expect != "user" else "kept"
        assert {reason_of.get(i, "kept") for i in _ids(p, fmt)} == {want}, (p.key, p.caption)
    # Bad records were counted, never fatal.
    assert sum(stats.bad.values()) >= 1
    assert result.summary().startswith(f"kept {expected['kept']} of 58")
    assert expected["kept"] == (18 if with_users else 43)


def test_kept_posts_carry_detected_language(posts: list[FixturePost], tmp_path: Path) -> None:
    corpus = write_corpus("jsonl", posts, tmp_path / "c")
    read, _ = ingest(IngestConfig(corpus, "jsonl"))
    kept = {p.id: p.lang for p in run_filters(read, FilterConfig()).kept}
    assert kept["chrome"] == "en" and kept["es1"] == "es" and kept["ca0"] == "ca"
    assert kept["es0_1"] == kept["es0_2"] == "es"


def test_switched_off_filters_are_listed_and_keep_posts(posts: list[FixturePost], tmp_path: Path) -> None:
    corpus = write_corpus("jsonl", posts, tmp_path / "c")
    read, _ = ingest(IngestConfig(corpus, "jsonl"))
    cfg = FilterConfig(languages=(), max_posts_per_user=None, other_cities=())
    report = run_filters(read, cfg).report
    assert report["dropped"]["language"] == report["dropped"]["user"] == report["dropped"]["city"] == 0
    assert set(report["skipped_filters"]) == {
        "language (disabled)", "user (disabled)",
        "city (no other cities configured: no --topic file or --cities list)"}
    assert report["kept"] == 58 - 2 - 2 - 2 - 1


@pytest.mark.parametrize(
    ("text", "city"),
    [
        ("A shiny chrome bumper", None),
        ("Holidays in Rome!", "rome"),
        ("romería en el pueblo", None),
        ("Skyline of New York at dusk", "new york"),
        ("#new #york #pizza", "new york"),
        ("a newyork style bagel", None),
        ("Paseando por Málaga", "malaga"),
        ("Barcelona by night #barcelona", None),
    ],
)
def test_city_matcher_whole_tokens(text: str, city: str | None) -> None:
    matcher = CityMatcher(["rome", "new york", "málaga", "paris"])
    assert matcher.find(text) == city


def test_a_declared_language_is_trusted() -> None:
    image = Path("/nonexistent.jpg")
    posts = [Post("ca", image, "Un gos corre per la platja de sorra", lang="ca"),
             Post("fr", image, "Un chien court sur la plage de sable", lang="fr"),
             Post("und", image, "A dog runs along the sandy beach")]
    cfg = FilterConfig(max_posts_per_user=None, other_cities=(), drop_duplicates=False, check_images=False)
    result = run_filters(posts, cfg)
    assert {p.id: p.lang for p in result.kept} == {"ca": "ca", "und": "en"}
    assert result.report["dropped"]["language"] == 1


def test_parallel_language_detection_answers_as_one_process(
    multilingual_tsv: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from train.corpus import filters
    from train.corpus.multilingual import read_tsv

    rows = read_tsv(multilingual_tsv)[:120]
    texts = [r[c] for r in rows for c in ("en_multi30k", "es_nllb_from_en", "ca_apertium_from_es_en")]
    monkeypatch.setattr(filters, "PARALLEL_MIN_TEXTS", 10)
    seen: list[tuple[int, int]] = []
    parallel = filters.LanguageDetector()
    parallel.warm(texts, workers=2, progress=lambda done, total: seen.append((done, total)))
    # Every text was detected by the worker processes, before anyone asked.
    assert seen and seen[-1][0] == seen[-1][1] == len(set(texts))
    assert len(parallel._cache) == len(set(texts))
    one = filters.LanguageDetector()
    assert [parallel.languages(t) for t in texts] == [one.languages(t) for t in texts]
    detected = [parallel.detect(t) for t in texts]
    truth = ["en", "es", "ca"] * len(rows)
    assert sum(lang == want for lang, want in zip(detected, truth, strict=True)) >= 330
