"""The corpus fingerprint walks a folder a listing at a time (bounded memory at 1.8 million files) and gives
the value the stage caches were keyed by before (sorted rglob entries through config_hash)."""

from __future__ import annotations

import os
import tracemalloc
from pathlib import Path

from train.config import config_hash
from train.stages import corpus_fingerprint


def rglob_fingerprint(path: Path) -> str:
    """The definition the caches were keyed by: every file under the folder, sorted, through config_hash."""
    path = path.resolve()
    entries = []
    for p in sorted(path.rglob("*")):
        if p.is_file():
            st = p.stat()
            entries.append([p.relative_to(path).as_posix(), st.st_size, st.st_mtime_ns])
    return config_hash(entries)


def test_same_value_as_the_sorted_rglob(tmp_path: Path) -> None:
    for rel in ("a.txt", "a/b.jpg", "a b/c", "a.b/x", "a-b/é.json", ".hidden", "z/.h/y", "Z/q", "d/e/f/g.txt",
                "#barcelona/2016-01-01_00-00-00_UTC.jpg"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(rel, encoding="utf-8")
    os.symlink(tmp_path / "a.txt", tmp_path / "link.txt")
    os.symlink(tmp_path / "a", tmp_path / "linkdir")
    os.symlink(tmp_path / "missing", tmp_path / "dangling")
    (tmp_path / "empty").mkdir()
    assert corpus_fingerprint(tmp_path) == rglob_fingerprint(tmp_path)
    assert corpus_fingerprint(tmp_path / "empty") == rglob_fingerprint(tmp_path / "empty")
    before = corpus_fingerprint(tmp_path)
    (tmp_path / "a" / "b.jpg").write_text("changed!", encoding="utf-8")
    assert corpus_fingerprint(tmp_path) != before


def test_memory_is_one_listing_not_a_path_per_file(tmp_path: Path) -> None:
    for i in range(3_000):
        (tmp_path / f"2017-03-01_00-{i:05d}_UTC.json.xz").write_bytes(b"x")
    tracemalloc.start()
    try:
        corpus_fingerprint(tmp_path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 1_000_000, f"{peak / 1e6:.1f} MB for 3,000 files"  # the sorted rglob took 1.9 MB
