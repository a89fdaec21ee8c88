"""The language filter on real human French/German/Czech and on English/Spanish/Catalan captions."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from train.corpus.filters import LanguageDetector
from train.corpus.multilingual import read_tsv

SAMPLE = 300
ALLOWED = ("en", "es", "ca")


@pytest.fixture(scope="module")
def rows(multilingual_tsv: Path) -> list[dict[str, str]]:
    rows = read_tsv(multilingual_tsv)
    return random.Random(0).sample(rows, SAMPLE)


@pytest.fixture(scope="module")
def detector() -> LanguageDetector:
    return LanguageDetector()


def _kept_share(detector: LanguageDetector, texts: list[str]) -> float:
    return sum(detector.pick(t, ALLOWED, 0.2)[1] for t in texts) / len(texts)


@pytest.mark.parametrize("column", ["fr_human", "de_human", "cs_human"])
def test_foreign_human_sentences_dropped(
    rows: list[dict[str, str]], detector: LanguageDetector, column: str
) -> None:
    assert 1.0 - _kept_share(detector, [r[column] for r in rows]) >= 0.98


@pytest.mark.parametrize(
    "column",
    ["en_multi30k", "es_nllb_from_en", "es_nllb_from_fr", "ca_apertium_from_es_en", "ca_apertium_from_es_de"],
)
def test_kept_languages_kept(rows: list[dict[str, str]], detector: LanguageDetector, column: str) -> None:
    assert _kept_share(detector, [r[column] for r in rows]) >= 0.95


def test_detected_language_is_the_right_one(rows: list[dict[str, str]], detector: LanguageDetector) -> None:
    for column, lang in (("en_multi30k", "en"), ("es_nllb_from_en", "es"), ("ca_apertium_from_es_en", "ca")):
        right = sum(detector.pick(r[column], ALLOWED, 0.2)[0] == lang for r in rows[:100])
        assert right >= 90, (column, right)
