"""Language detections are cached per caption: a rerun of the filters after a kill or a changed setting
detects only captions it has not seen (counted: calls of the detector)."""

from __future__ import annotations

from pathlib import Path

import pytest

from train.config import FilterConfig, IngestConfig, PipelineConfig
from train.corpus import filters
from train.corpus.synth import SynthConfig, write_synth
from train.pipeline import run_text_stages


class Killed(Exception):
    """Stands for the kill -9 of a filter stage part way."""


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory, flickr8k_dir: Path, multilingual_tsv: Path) -> Path:
    out = tmp_path_factory.mktemp("lang") / "corpus"
    write_synth(SynthConfig(150, flickr8k_dir, out, multilingual_tsv))
    return out / "posts.jsonl"


def _config(corpus: Path, work: Path, languages: tuple[str, ...] = ("en", "es", "ca")) -> PipelineConfig:
    return PipelineConfig(ingest=IngestConfig(corpus=corpus, format="jsonl"), models=work / "models",
                          work=work, filters=FilterConfig(languages=languages, max_posts_per_user=None))


def _counting(monkeypatch: pytest.MonkeyPatch, fail_after: int | None = None) -> list[str]:
    calls: list[str] = []
    real = filters._detect

    def detect(key: str) -> list[tuple[str, float]]:
        if fail_after is not None and len(calls) >= fail_after:
            raise Killed
        calls.append(key)
        return real(key)

    monkeypatch.setattr(filters, "_detect", detect)
    return calls


def test_a_changed_language_setting_detects_nothing_again(corpus: Path, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    calls = _counting(monkeypatch)
    first = run_text_stages(_config(corpus, tmp_path), "filter")["filter"]
    assert len(calls) > 100 and set(first["languages"]) == {"en", "es", "ca"}
    calls.clear()
    second = run_text_stages(_config(corpus, tmp_path, ("en", "es")), "filter")["filter"]
    assert calls == []
    # The same figures as detecting afresh.
    fresh = run_text_stages(_config(corpus, tmp_path / "fresh", ("en", "es")), "filter")["filter"]
    assert len(calls) > 100 and fresh == second


def test_a_killed_filter_stage_resumes_from_the_saved_chunks(corpus: Path, tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(filters, "CHUNK", 10)
    calls = _counting(monkeypatch, fail_after=25)
    with pytest.raises(Killed):
        run_text_stages(_config(corpus, tmp_path), "filter")
    assert len(calls) == 25
    monkeypatch.undo()
    calls = _counting(monkeypatch)
    report = run_text_stages(_config(corpus, tmp_path), "filter")["filter"]
    resumed = len(calls)
    calls.clear()
    fresh = run_text_stages(_config(corpus, tmp_path / "fresh"), "filter")["filter"]
    # Two whole chunks of ten survived the kill; the five detections after them were lost.
    assert resumed == len(calls) - 20
    assert report == fresh
