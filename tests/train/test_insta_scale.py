"""The instaloader reader lists each directory once and does the same work per post however big the folder.

Work is counted, not timed: the directory listings (``os.scandir`` calls) and the lines of the reader's
module the interpreter executes. Reading a folder four times as big must execute about four times the
lines (4.0 measured); the reader that scanned the folder for each post's pictures (O(N²)) executed 9.1
times as many.
"""

from __future__ import annotations

import json
import os
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import FrameType
from typing import Any

import pytest

import train.corpus.instaloader as reader
from train.corpus.ingest import IngestStats, read_instaloader


def _folder(root: Path, n: int) -> Path:
    """``n`` posts under instaloader's default pattern in two hashtag folders; every 10th a sidecar."""
    start = datetime(2017, 3, 1, tzinfo=UTC)
    for i in range(n):
        folder = root / ("#barcelona" if i % 3 else "#bcn")
        folder.mkdir(parents=True, exist_ok=True)
        when = start + timedelta(minutes=7 * i)
        stem = when.strftime("%Y-%m-%d_%H-%M-%S") + "_UTC"
        caption = {"edges": [{"node": {"text": f"post {i} in the sun"}}]}
        node: dict[str, Any] = {"__typename": "GraphImage", "shortcode": f"C{i:08d}",
                                "taken_at_timestamp": int(when.timestamp()),
                                "owner": {"username": f"u{i % 37}"}, "edge_media_to_caption": caption}
        if i % 10 == 0:
            node["__typename"] = "GraphSidecar"
            node["edge_sidecar_to_children"] = {"edges": [{"node": {"display_url": ""}}] * 2}
            for k in (1, 2):
                (folder / f"{stem}_{k}.jpg").write_bytes(b"jpeg")
        else:
            (folder / f"{stem}.jpg").write_bytes(b"jpeg")
        (folder / f"{stem}.json").write_text(json.dumps({"node": node}), encoding="utf-8")
        (folder / f"{stem}.txt").write_text(f"post {i} in the sun", encoding="utf-8")
    return root


def _count_work(root: Path) -> tuple[int, int, int]:
    """(posts read, lines of the reader's module executed, directory listings) reading ``root``."""
    lines = 0
    module = reader.__file__

    def local(frame: FrameType, event: str, arg: Any) -> Any:
        nonlocal lines
        if event == "line":
            lines += 1
        return local

    def tracer(frame: FrameType, event: str, arg: Any) -> Any:
        return local if frame.f_code.co_filename == module else None

    listings = 0
    real_scandir = os.scandir

    def counting_scandir(path: Any = ".") -> Any:
        nonlocal listings
        listings += 1
        return real_scandir(path)

    mp = pytest.MonkeyPatch()
    mp.setattr(os, "scandir", counting_scandir)
    sys.settrace(tracer)
    try:
        posts = list(read_instaloader(root, IngestStats()))
    finally:
        sys.settrace(None)
        mp.undo()
    return len(posts), lines, listings


def test_each_directory_is_listed_once(tmp_path: Path) -> None:
    posts, _, listings = _count_work(_folder(tmp_path / "c", 200))
    assert posts == 200 + 20  # 20 sidecars of two pictures
    assert listings == 3  # the root and its two hashtag folders


def test_reading_grows_linearly_with_the_folder(tmp_path: Path) -> None:
    small = _count_work(_folder(tmp_path / "small", 100))
    big = _count_work(_folder(tmp_path / "big", 400))
    assert (small[0], big[0]) == (110, 440)
    ratio = big[1] / small[1]
    assert ratio < 5, f"4x the posts took {ratio:.1f}x the work"


def test_the_ingest_reports_the_metadata_it_reads_before_the_first_post(tmp_path: Path) -> None:
    from train.corpus.ingest import IngestConfig, ingest

    root = _folder(tmp_path / "insta", 40)
    calls: list[tuple[int, int | None, str]] = []
    posts, _ = ingest(IngestConfig(corpus=root, format="instaloader"),
                      lambda stage, done, total, unit: calls.append((done, total, unit)))
    # Every metadata file is read before the reader yields a post: that phase is counted, to its end.
    reading = [c for c in calls if c[2] == "metadata files"]
    assert reading and reading[-1] == (40, 40, "metadata files")
    assert calls.index(reading[-1]) < calls.index((len(posts), len(posts), "posts"))
