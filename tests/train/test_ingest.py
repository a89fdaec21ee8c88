"""The three corpus readers on real files: Flickr8k itself, an instaloader folder, a posts.jsonl."""

from __future__ import annotations

import json
import lzma
from collections import Counter
from pathlib import Path

import pytest

from tests.train.fixtures.corpus import fixture_posts, write_corpus
from train.config import IngestConfig
from train.corpus.ingest import IngestStats, ingest, load_posts, read_instaloader, save_posts


def test_flickr8k_real(flickr8k_dir: Path) -> None:
    posts, stats = ingest(IngestConfig(flickr8k_dir, "flickr8k"))
    assert len(posts) == 8091 and stats.posts == 8091 and not stats.bad
    assert all(len(p.captions) == 5 for p in posts)
    assert Counter(p.split for p in posts) == {"train": 6000, "val": 1000, "test": 1000, None: 91}
    first = next(p for p in posts if p.id == "1000268201_693b08cb0e.jpg")
    assert first.captions[0].startswith("A child in a pink dress")
    assert first.caption.count(". ") == 4 and first.user is None and first.lang is None
    assert first.image.is_file()


def test_limit(flickr8k_dir: Path) -> None:
    posts, _ = ingest(IngestConfig(flickr8k_dir, "flickr8k", limit=7))
    assert len(posts) == 7


def _insta(folder: Path, stem: str, node: dict[str, object], images: list[bytes], txt: str | None) -> None:
    for n, data in enumerate(images, 1):
        (folder / (f"{stem}.jpg" if len(images) == 1 else f"{stem}_{n}.jpg")).write_bytes(data)
    if txt is not None:
        (folder / f"{stem}.txt").write_text(txt + "\n", encoding="utf-8")
    with lzma.open(folder / f"{stem}.json.xz", "wt", check=lzma.CHECK_NONE) as f:
        json.dump({"node": node, "instaloader": {"version": "4.14", "node_type": "Post"}}, f)


def test_instaloader_layout(tmp_path: Path, flickr8k_dir: Path) -> None:
    photos = [p.read_bytes() for p in sorted((flickr8k_dir / "images").glob("*.jpg"))[:4]]
    caption = "Tapas y vermut en el Born #barcelona #food"
    node = {
        "__typename": "GraphSidecar",
        "shortcode": "CxAbC12",
        "taken_at_timestamp": 1556712645,
        "owner": {"id": "42", "username": "maria"},
        "edge_media_to_caption": {"edges": [{"node": {"text": caption}}]},
    }
    _insta(tmp_path, "2019-05-01_12-10-45_UTC", node, photos[:3], caption)
    # Caption only in the metadata (no .txt), owner known only by id.
    node2 = {
        "shortcode": "Dy9",
        "taken_at_timestamp": 1556800000,
        "owner": {"id": 77},
        "edge_media_to_caption": {"edges": [{"node": {"text": "Sunset at the beach of la Barceloneta"}}]},
    }
    _insta(tmp_path, "2019-05-02_12-26-40_UTC", node2, photos[3:4], None)
    # Profile pictures and other files instaloader writes are not posts.
    (tmp_path / "2019-05-01_12-10-45_UTC_profile_pic.jpg").write_bytes(photos[0])
    (tmp_path / "maria_42.json.xz").write_bytes(lzma.compress(b"{}"))
    (tmp_path / "2019-05-01_12-10-45_UTC_1.mp4").write_bytes(b"\x00")
    stats = IngestStats()
    posts = sorted(read_instaloader(tmp_path, stats), key=lambda p: p.id)
    assert [p.id for p in posts] == ["CxAbC12_1", "CxAbC12_2", "CxAbC12_3", "Dy9"]
    assert {p.caption for p in posts[:3]} == {caption}
    assert {p.user for p in posts[:3]} == {"maria"} and posts[3].user == "77"
    assert posts[0].taken_at == "2019-05-01T12:10:45Z"
    assert posts[3].caption == "Sunset at the beach of la Barceloneta"
    assert posts[1].image.name == "2019-05-01_12-10-45_UTC_2.jpg"
    assert not stats.bad


@pytest.mark.parametrize(
    ("fmt", "bad"),
    [
        ("jsonl", {"bad_json": 1, "missing_image": 1}),
        ("instaloader", {"bad_json": 1, "missing_image": 1}),
        ("flickr8k", {"missing_image": 1}),
    ],
)
def test_bad_records_counted_not_fatal(
    fmt: str, bad: dict[str, int], tmp_path: Path, flickr8k_dir: Path, multilingual_tsv: Path
) -> None:
    corpus = write_corpus(fmt, fixture_posts(flickr8k_dir, multilingual_tsv), tmp_path / fmt)
    posts, stats = ingest(IngestConfig(corpus, fmt))  # type: ignore[arg-type]
    assert len(posts) == 58 and dict(stats.bad) == bad
    assert stats.as_dict()["examples"]


def test_jsonl_relative_paths_and_optional_fields(tmp_path: Path, flickr8k_dir: Path) -> None:
    photo = sorted((flickr8k_dir / "images").glob("*.jpg"))[0]
    (tmp_path / "img").mkdir()
    (tmp_path / "img" / "a.jpg").write_bytes(photo.read_bytes())
    rows = [
        {
            "id": "a",
            "image": "img/a.jpg",
            "caption": "Hola",
            "user": "u",
            "taken_at": "2020-01-01T00:00:00Z",
            "lang": "es",
            "split": "test",
        },
        {"id": "b", "image": str(photo), "caption": "Abs path", "user": None, "taken_at": None},
    ]
    (tmp_path / "posts.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n\n", encoding="utf-8")
    posts, stats = ingest(IngestConfig(tmp_path, "jsonl"))
    assert [p.id for p in posts] == ["a", "b"] and not stats.bad
    assert posts[0].image == (tmp_path / "img" / "a.jpg").resolve() and posts[0].split == "test"
    assert posts[0].lang == "es" and posts[0].source["lang_given"] == "es"
    assert posts[1].image == photo.resolve()


def test_posts_round_trip(tmp_path: Path, flickr8k_dir: Path) -> None:
    posts, _ = ingest(IngestConfig(flickr8k_dir, "flickr8k", limit=20))
    save_posts(posts, tmp_path / "p.jsonl")
    assert load_posts(tmp_path / "p.jsonl") == posts


def test_missing_corpus_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="Flickr8k"):
        ingest(IngestConfig(tmp_path, "flickr8k"))
