"""The image filters (duplicate bytes, undecodable photos) read each photo once, over the worker processes,
and answer as one process does: on a scale corpus with re-posts and broken downloads."""

from __future__ import annotations

from pathlib import Path

import pytest

from train.config import FilterConfig, IngestConfig
from train.corpus import filters
from train.corpus.ingest import ingest
from train.corpus.synth import SynthConfig, write_synth


def test_photos_checked_in_two_processes_answer_as_in_one(tmp_path: Path, flickr8k_dir: Path,
                                                          multilingual_tsv: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    write_synth(SynthConfig(400, flickr8k_dir, tmp_path / "c", multilingual_tsv))
    posts, _ = ingest(IngestConfig(corpus=tmp_path / "c" / "posts.jsonl", format="jsonl"))
    cfg = FilterConfig(languages=(), min_words=0, max_posts_per_user=None)
    one = filters.run_filters(posts, cfg, workers=1)
    monkeypatch.setattr(filters, "PARALLEL_MIN_IMAGES", 10)
    reads: list[Path] = []
    real = filters.image_check

    def counted(path: Path) -> tuple[str | None, bool]:
        reads.append(path)
        return real(path)

    monkeypatch.setattr(filters, "image_check", counted)
    serial = filters.run_filters(posts, cfg, workers=1)
    assert sorted(reads) == sorted({p.image for p in posts if p.caption.strip()})  # once a photo
    monkeypatch.setattr(filters, "image_check", real)  # the worker processes are handed it by reference
    two = filters.run_filters(posts, cfg, workers=2)
    assert one.report == serial.report == two.report
    assert [p.id for p in one.kept] == [p.id for p in two.kept]
    assert one.report["dropped"]["duplicate"] > 0 and one.report["dropped"]["unreadable"] > 0
