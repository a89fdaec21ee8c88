"""`python -m train multilingual`: one caption in one language per image, seeded shares, standard split."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from train.__main__ import main
from train.config import IngestConfig
from train.corpus.ingest import FLICKR_SPLITS, ingest
from train.corpus.multilingual import build_multilingual, read_tsv


def _build(tsv: Path, flickr8k: Path, out: Path, *extra: str) -> int:
    """Run `python -m train multilingual` into ``out``; return its exit code."""
    return main(["multilingual", "--src", str(tsv), "--flickr8k", str(flickr8k), "--out", str(out), *extra])


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory, multilingual_tsv: Path, flickr8k_dir: Path) -> Path:
    out = tmp_path_factory.mktemp("ml")
    assert _build(multilingual_tsv, flickr8k_dir, out, "--shares", "50,30,20", "--seed", "0") == 0
    return out


def _rows(out: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in (out / "posts.jsonl").read_text(encoding="utf-8").splitlines()]


def test_one_caption_per_image_in_shares(built: Path, multilingual_tsv: Path) -> None:
    rows = _rows(built)
    assert len(rows) == 7478 and len({r["id"] for r in rows}) == 7478
    langs = Counter(r["lang"] for r in rows)
    assert abs(langs["en"] / 7478 - 0.5) < 0.02
    assert abs(langs["es"] / 7478 - 0.3) < 0.02
    assert abs(langs["ca"] / 7478 - 0.2) < 0.02
    source = {r["image"]: r for r in read_tsv(multilingual_tsv)}
    for r in rows[:500]:
        tsv = source[str(r["id"])]
        column = str(r["column"])
        assert r["caption"] == tsv[column]
        prefix = {"en": "en_multi30k", "es": "es_nllb_from_", "ca": "ca_apertium_from_es_"}[str(r["lang"])]
        assert column.startswith(prefix)
    assert len({r["column"] for r in rows if r["lang"] == "es"}) == 4


def test_standard_split_kept(built: Path, flickr8k_dir: Path) -> None:
    split_of = {
        name: split for split, f in FLICKR_SPLITS.items() for name in (flickr8k_dir / f).read_text().split()
    }
    rows = _rows(built)
    assert all(r["split"] == split_of.get(str(r["id"])) for r in rows)
    assert Counter(r["split"] for r in rows)["test"] == 929


def test_seeded_and_readable_as_jsonl(
    built: Path, multilingual_tsv: Path, flickr8k_dir: Path, tmp_path: Path
) -> None:
    assert _build(multilingual_tsv, flickr8k_dir, tmp_path, "--seed", "0", "--relative") == 0
    ours = [(r["id"], r["caption"]) for r in _rows(tmp_path)]
    assert ours == [(r["id"], r["caption"]) for r in _rows(built)]
    assert not Path(str(_rows(tmp_path)[0]["image"])).is_absolute()
    posts, stats = ingest(IngestConfig(tmp_path / "posts.jsonl", "jsonl", limit=50))
    assert len(posts) == 50 and not stats.bad and all(p.image.is_file() for p in posts)
    assert _build(multilingual_tsv, flickr8k_dir, tmp_path / "s1", "--seed", "1") == 0
    assert [r["caption"] for r in _rows(tmp_path / "s1")] != [c for _, c in ours]


def test_parallel_sentences_only_for_train_and_val(
    built: Path, multilingual_tsv: Path, flickr8k_dir: Path, tmp_path: Path
) -> None:
    build_multilingual(multilingual_tsv, flickr8k_dir, tmp_path, (50, 30, 20), 0, parallel=True,
                       shuffle=False)
    rows = _rows(tmp_path)
    assert [(r["id"], r["caption"]) for r in rows] == [(r["id"], r["caption"]) for r in _rows(built)]
    source = {r["image"]: r for r in read_tsv(multilingual_tsv)}
    with_parallel = [r for r in rows if "captions" in r]
    assert {r["split"] for r in with_parallel} == {"train", "val"}
    assert not any("captions" in r for r in rows if r["split"] == "test")
    for r in with_parallel[:200]:
        pair = r["captions"]
        assert isinstance(pair, list) and len(pair) == 2
        caption, sentence = str(pair[0]), str(pair[1])
        tsv = source[str(r["id"])]
        assert caption == r["caption"]
        assert tsv["en_multi30k"].strip().rstrip(".") in sentence
        assert tsv["es_nllb_from_en"].strip().rstrip(".") in sentence
        assert tsv["ca_apertium_from_es_en"].strip().rstrip(".") in sentence
    posts, _ = ingest(IngestConfig(tmp_path / "posts.jsonl", "jsonl", limit=20))
    assert any(len(p.captions) == 2 for p in posts)


def test_shuffled_parallel_sentence_mixes_the_same_words(
    built: Path, multilingual_tsv: Path, flickr8k_dir: Path, tmp_path: Path
) -> None:
    # The command line's --parallel shuffles.
    assert _build(multilingual_tsv, flickr8k_dir, tmp_path, "--seed", "0", "--parallel") == 0
    rows = _rows(tmp_path)
    # Shuffling has its own random stream: every post keeps its language, column and caption.
    assert [(r["id"], r["lang"], r["column"], r["caption"]) for r in rows] == [
        (r["id"], r["lang"], r["column"], r["caption"]) for r in _rows(built)
    ]
    source = {r["image"]: r for r in read_tsv(multilingual_tsv)}
    moved = 0
    for r in [r for r in rows if "captions" in r][:300]:
        tsv = source[str(r["id"])]
        ordered = " ".join(tsv[c].strip().rstrip(".") for c in
                           ("en_multi30k", "es_nllb_from_en", "ca_apertium_from_es_en")).split()
        pair = r["captions"]
        assert isinstance(pair, list)
        shuffled = str(pair[1]).split()
        assert sorted(shuffled) == sorted(ordered)
        moved += shuffled != ordered
    assert moved >= 295
    again = tmp_path / "again"
    assert _build(multilingual_tsv, flickr8k_dir, again, "--seed", "0", "--parallel") == 0
    assert _rows(again) == rows
