"""The scale corpus (`python -m train synth`): shaped like a crawl, every filter at work, each photo its own.

Small (300 posts) but real: Flickr8k's photos re-encoded, the multilingual TSV's captions, the real
readers and filters with the Barcelona topic file.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from train.__main__ import main
from train.config import FilterConfig, IngestConfig
from train.corpus.filters import run_filters
from train.corpus.ingest import ingest
from train.corpus.synth import SynthConfig, read_base_captions, write_synth
from train.corpus.synth_features import BACKBONE, FeatureTable, file_sha256
from train.corpus.topic import load_topic

N = 300
TOPIC = Path(__file__).resolve().parents[2] / "topics" / "barcelona.toml"


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory, flickr8k_dir: Path, multilingual_tsv: Path) -> Path:
    out = tmp_path_factory.mktemp("synth") / "jsonl"
    assert main(["synth", "--posts", str(N), "--from", str(flickr8k_dir), "--multilingual",
                 str(multilingual_tsv), "--out", str(out), "--workers", "1", "--topic", str(TOPIC)]) == 0
    return out


def test_same_seed_same_bytes_with_any_number_of_workers(corpus: Path, tmp_path: Path, flickr8k_dir: Path,
                                                         multilingual_tsv: Path) -> None:
    cities = tuple(c.title() for c in load_topic(TOPIC).cities_to_drop())
    again = tmp_path / "again"
    write_synth(SynthConfig(N, flickr8k_dir, again, multilingual_tsv, workers=2, cities=cities))
    assert (again / "posts.jsonl").read_bytes() == (corpus / "posts.jsonl").read_bytes()
    photos = sorted(p.relative_to(corpus) for p in (corpus / "photos").rglob("*.jpg"))
    assert photos == sorted(p.relative_to(again) for p in (again / "photos").rglob("*.jpg"))
    assert all(_sha(corpus / p) == _sha(again / p) for p in photos)


def test_the_filters_drop_about_half_for_every_reason(corpus: Path) -> None:
    posts, stats = ingest(IngestConfig(corpus=corpus / "posts.jsonl", format="jsonl"))
    assert set(stats.bad) == {"missing_image"}  # downloads that failed
    topic = load_topic(TOPIC)
    result = run_filters(posts, FilterConfig(other_cities=topic.cities_to_drop()), workers=1)
    report = result.report
    assert all(n > 0 for n in report["dropped"].values()), report["dropped"]
    assert 0.45 <= report["kept"] / N <= 0.60, report
    assert set(report["languages"]) == {"en", "es", "ca"}
    assert report["languages"]["en"] > report["languages"]["es"] > report["languages"]["ca"]
    users = Counter(p.user for p in posts)
    assert users.most_common(1)[0][1] > 20  # a heavy user


def test_each_photo_is_its_own_except_exact_reposts(corpus: Path) -> None:
    rows = [json.loads(line) for line in (corpus / "posts.jsonl").read_text(encoding="utf-8").splitlines()]
    shas: Counter[str] = Counter()
    reposts = 0
    for row in rows:
        path = corpus / row["image"]
        if not path.is_file() or path.stat().st_size == 0:
            continue
        shas[_sha(path)] += 1
        reposts += row["caption"].endswith("#repost")
        with Image.open(path) as img:
            try:
                img.load()
            except OSError:  # a download cut short
                continue
            assert max(img.size) <= 256
    copies = sum(n - 1 for n in shas.values())
    assert 0 < reposts <= copies <= round(N * 0.04)
    assert {r["caption"] for r in rows} >= {""}
    assert any("Ein" in r["caption"] or "Une" in r["caption"] for r in rows)  # German, French
    assert any("#" in r["caption"] for r in rows) and len({r["id"] for r in rows}) == N


def test_the_instaloader_layout_holds_the_same_posts(corpus: Path, tmp_path: Path, flickr8k_dir: Path,
                                                     multilingual_tsv: Path) -> None:
    cities = tuple(c.title() for c in load_topic(TOPIC).cities_to_drop())
    folder = tmp_path / "insta"
    write_synth(SynthConfig(N, flickr8k_dir, folder, multilingual_tsv, layout="instaloader", cities=cities))
    insta, stats = ingest(IngestConfig(corpus=folder, format="instaloader"))
    flat, _ = ingest(IngestConfig(corpus=corpus / "posts.jsonl", format="jsonl"))
    assert stats.notes["layout"] == "{date_utc}_UTC"
    assert {p.id: (p.caption, p.user) for p in insta} == {p.id: (p.caption, p.user) for p in flat}
    assert {p.id: _sha(p.image) for p in insta} == {p.id: _sha(p.image) for p in flat}


def test_the_features_folder_gives_each_photo_its_base_photos_row(tmp_path: Path, flickr8k_dir: Path,
                                                                   multilingual_tsv: Path) -> None:
    names = read_base_captions(flickr8k_dir, multilingual_tsv).names
    rng = np.random.default_rng(0)
    base = FeatureTable(tuple(file_sha256(flickr8k_dir / "images" / n) for n in names),
                        rng.standard_normal((len(names), 16)).astype(np.float32),
                        {"backbone": BACKBONE, "crops": 1, "dim": 16})
    base.save(tmp_path / "base")
    out = tmp_path / "corpus"
    summary = write_synth(SynthConfig(200, flickr8k_dir, out, multilingual_tsv), tmp_path / "features",
                          FeatureTable.load(tmp_path / "base"))
    table = FeatureTable.load(tmp_path / "features")
    assert table.meta == {"backbone": BACKBONE, "crops": 1, "dim": 16}
    assert table.features.dtype == np.float16 and summary["features"]["rows"] == len(table.keys)
    row_of, base_row = table.row_of(), base.row_of()
    assert len(row_of) == len(table.keys)  # one row a photo, however many posts carry it
    captions = read_base_captions(flickr8k_dir, multilingual_tsv)
    english = {c: i for i, caps in enumerate(captions.by_lang["en"]) for c in caps}
    checked = 0
    for line in (out / "posts.jsonl").read_text(encoding="utf-8").splitlines():
        row = json.loads(line)
        path = out / row["image"]
        if not path.is_file() or path.stat().st_size == 0:
            continue
        key = _sha(path)
        if row["caption"] in english and key in row_of:  # an undecorated English post: its base is known
            want = base.features[base_row[base.keys[english[row["caption"]]]]]
            assert np.allclose(table.features[row_of[key]], want, atol=1e-2)
            checked += 1
    assert checked >= 10
