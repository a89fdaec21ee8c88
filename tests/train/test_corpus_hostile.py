"""A hostile corpus: every bad record is counted and skipped, none ends the ingest or leaks a file.

Each case is one file an attacker (or a broken disk) can put in an instaloader folder or a posts.jsonl:
a symbolic link named like a caption, a metadata file that decompresses to more than any post, JSON nested
a thousand deep, a lone surrogate escaped in a caption, a byte that is not UTF-8.
"""

from __future__ import annotations

import json
import lzma
import os
from pathlib import Path

import pytest

from train.config import FilterConfig, IngestConfig
from train.corpus.filters import run_filters
from train.corpus.ingest import ingest, load_posts, save_posts
from train.corpus.instaloader import MAX_METADATA_BYTES
from train.corpus.posts import Post


def _photo(flickr8k_dir: Path, n: int) -> bytes:
    return sorted((flickr8k_dir / "images").glob("*.jpg"))[n].read_bytes()


def _meta(caption: str, code: str) -> str:
    node = {"__typename": "GraphImage", "shortcode": code, "taken_at_timestamp": 1_500_000_000,
            "owner": {"username": "someone"},
            "edge_media_to_caption": {"edges": [{"node": {"text": caption}}]}}
    return json.dumps({"node": node, "instaloader": {"node_type": "Post"}})


def _good_post(folder: Path, stem: str, flickr8k_dir: Path, n: int = 0) -> None:
    (folder / f"{stem}.jpg").write_bytes(_photo(flickr8k_dir, n))
    (folder / f"{stem}.json.xz").write_bytes(lzma.compress(_meta("a dog runs on the grass", stem).encode()))


def _read(folder: Path, fmt: str = "instaloader") -> tuple[list, dict]:  # type: ignore[type-arg]
    posts, stats = ingest(IngestConfig(corpus=folder, format=fmt))  # type: ignore[arg-type]
    return posts, stats.as_dict()


def test_a_symlinked_caption_file_is_never_read(tmp_path: Path, flickr8k_dir: Path) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("SECRET-TOKEN do not publish", encoding="utf-8")
    folder = tmp_path / "corpus"
    folder.mkdir()
    _good_post(folder, "good", flickr8k_dir)
    # A post saved without metadata: its caption is its .txt, here a link to a file outside the folder.
    (folder / "leak.jpg").write_bytes(_photo(flickr8k_dir, 1))
    os.symlink(secret, folder / "leak.txt")
    os.symlink(secret, folder / "leak2.txt")
    (folder / "leak2.jpg").symlink_to(folder / "good.jpg")
    posts, stats = _read(folder)
    assert all("SECRET" not in p.caption for p in posts)
    assert [p.id for p in posts] == ["good"]
    assert stats["notes"]["symlinks_skipped"] == 3


def test_a_metadata_file_expanding_past_the_cap_is_a_bad_record(tmp_path: Path, flickr8k_dir: Path) -> None:
    folder = tmp_path / "corpus"
    folder.mkdir()
    _good_post(folder, "good", flickr8k_dir)
    (folder / "bomb.jpg").write_bytes(_photo(flickr8k_dir, 1))
    huge = _meta("x" * (MAX_METADATA_BYTES + 1), "bomb").encode()
    (folder / "bomb.json.xz").write_bytes(lzma.compress(huge, preset=9))
    assert (folder / "bomb.json.xz").stat().st_size < 100_000  # small on disk, past the cap unpacked
    posts, stats = _read(folder)
    assert [p.id for p in posts] == ["good"]
    assert stats["bad"] == {"bad_json": 1}


def test_metadata_nested_a_thousand_deep_is_a_bad_record(tmp_path: Path, flickr8k_dir: Path) -> None:
    folder = tmp_path / "corpus"
    folder.mkdir()
    _good_post(folder, "good", flickr8k_dir)
    (folder / "deep.jpg").write_bytes(_photo(flickr8k_dir, 1))
    (folder / "deep.json").write_text("[" * 100_000, encoding="utf-8")
    (folder / "odd.jpg").write_bytes(_photo(flickr8k_dir, 2))
    (folder / "odd.json").write_text(json.dumps({"node": {"shortcode": "odd", "taken_at_timestamp": 1e300}}))
    posts, stats = _read(folder)
    assert [p.id for p in posts] == ["good"]
    assert stats["bad"] == {"bad_json": 2}


def test_a_lone_surrogate_in_a_caption_can_be_saved(tmp_path: Path, flickr8k_dir: Path) -> None:
    folder = tmp_path / "corpus"
    folder.mkdir()
    (folder / "s.jpg").write_bytes(_photo(flickr8k_dir, 0))
    # json.dumps escapes the surrogate as \ud83d: valid JSON, a string no UTF-8 file can hold.
    (folder / "s.json").write_text(_meta("sunset \ud83d at the beach", "s"), encoding="utf-8")
    posts, _ = _read(folder)
    save_posts(posts, tmp_path / "posts.jsonl")
    assert load_posts(tmp_path / "posts.jsonl")[0].caption == "sunset \ufffd at the beach"


def test_save_posts_keeps_a_string_utf8_cannot_hold(tmp_path: Path) -> None:
    odd = Post(id="x\udcff", image=tmp_path / "x\udcff.jpg", caption="a \ud83d b")
    save_posts([odd, Post(id="plain", image=tmp_path / "p.jpg", caption="café")], tmp_path / "posts.jsonl")
    back = load_posts(tmp_path / "posts.jsonl")
    assert [(p.id, p.caption, p.image) for p in back] == [("x\udcff", "a \ud83d b", tmp_path / "x\udcff.jpg"),
                                                          ("plain", "café", tmp_path / "p.jpg")]


@pytest.mark.parametrize("bad_line", [
    b'{"id": "latin1", "image": "a.jpg", "caption": "caf\xe9 con leche"}',
    b"[" * 100_000,
    b'{"id": 1, "image": "a.jpg", "caption": 5, "captions": [1, "y"], "user": {"a": 1}}',
    b'{"id": "sur", "image": "a.jpg", "caption": "\\ud83d"}',
])
def test_a_bad_line_in_posts_jsonl_is_counted_not_fatal(tmp_path: Path, flickr8k_dir: Path,
                                                        bad_line: bytes) -> None:
    (tmp_path / "a.jpg").write_bytes(_photo(flickr8k_dir, 0))
    good = b'{"id": "good", "image": "a.jpg", "caption": "a dog runs"}'
    late = good.replace(b"good", b"late")
    (tmp_path / "posts.jsonl").write_bytes(good + b"\n" + bad_line + b"\n" + late + b"\n")
    posts, stats = _read(tmp_path / "posts.jsonl", "jsonl")
    save_posts(posts, tmp_path / "saved.jsonl")
    ids = [p.id for p in load_posts(tmp_path / "saved.jsonl")]
    assert ids[0] == "good" and ids[-1] == "late"
    assert len(ids) + sum(stats["bad"].values()) == 3
    assert all(isinstance(p.caption, str) and isinstance(p.user, str | None) for p in posts)


def test_empty_downloads_are_unreadable_not_duplicates(tmp_path: Path, flickr8k_dir: Path) -> None:
    rows = []
    for i in range(3):
        (tmp_path / f"e{i}.jpg").write_bytes(b"")
        rows.append({"id": f"e{i}", "image": f"e{i}.jpg", "caption": "a dog runs on the grass"})
    (tmp_path / "posts.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    posts, _ = _read(tmp_path / "posts.jsonl", "jsonl")
    report = run_filters(posts, FilterConfig(languages=(), max_posts_per_user=None)).report
    assert report["dropped"]["unreadable"] == 3 and report["dropped"]["duplicate"] == 0
