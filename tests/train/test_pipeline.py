"""`train all` and its stages: caching, clear errors, the progress protocol and the published bundle."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import numpy as np
import pytest

from space import bundle
from space.images import load_for_network
from space.ort import INPUT_NAME, OUTPUT_NAME, open_session
from space.vectorindex import index_info
from tests.bundle_factory import progress_file, small_bundle_args, work_dir
from tests.conftest import ROOT
from tests.train.fixtures.corpus import fixture_posts, write_corpus
from train.__main__ import build_parser, main, pipeline_config
from train.config import FilterConfig, IngestConfig, PipelineConfig, TextConfig, to_jsonable
from train.corpus.topic import load_topic
from train.pipeline import EmptyCorpus, build_bundle, run_text_stages
from train.progress import ProgressReporter
from train.recipes.joint.model import JointConfig

REASONS = {"no_caption", "short_caption", "language", "user", "city", "duplicate", "unreadable"}


@pytest.fixture(scope="module")
def fixture_corpus(
    tmp_path_factory: pytest.TempPathFactory, flickr8k_dir: Path, multilingual_tsv: Path
) -> Path:
    root = tmp_path_factory.mktemp("corpus")
    return write_corpus("jsonl", fixture_posts(flickr8k_dir, multilingual_tsv), root)


# The fixture is a Barcelona corpus: its other-city posts go with the shipped topic file.
TOPIC = ROOT / "topics" / "barcelona.toml"
CITIES = load_topic(TOPIC).cities_to_drop()


def _cfg(corpus: Path, models: Path, **kw: object) -> PipelineConfig:
    return PipelineConfig(
        ingest=IngestConfig(corpus, "jsonl"),
        models=models,
        text=TextConfig(vector_size=16, epochs=3, min_count=1),
        filters=FilterConfig(other_cities=CITIES),
        **kw,  # type: ignore[arg-type]
    )


def test_text_stages_cached_by_inputs_and_config(
    fixture_corpus: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="train.stages")
    cfg = _cfg(fixture_corpus, tmp_path / "models")
    first = run_text_stages(cfg, "text")
    assert first["filter"]["kept"] == 18 and first["split"]["method"] == "hash"
    assert first["text"]["vocab"] > 10
    assert "unchanged" not in caplog.text
    caplog.clear()
    again = run_text_stages(cfg, "text")
    assert again["text"]["dir"] == first["text"]["dir"]
    for stage in ("ingest", "filter", "split", "text"):
        assert f"{stage}: inputs and config unchanged" in caplog.text
    caplog.clear()
    # A changed filter re-runs the filter and what follows, never the ingest.
    changed = PipelineConfig(
        ingest=cfg.ingest, models=cfg.models, text=cfg.text,
        filters=FilterConfig(max_posts_per_user=None, other_cities=CITIES)
    )
    third = run_text_stages(changed, "filter")
    assert third["filter"]["kept"] == 18 + 25
    assert "ingest: inputs and config unchanged" in caplog.text
    assert "filter: inputs and config unchanged" not in caplog.text
    assert Path(first["work"]).parent == tmp_path / "models" / ".work"


def test_cli_text_stage_prints_summary(
    fixture_corpus: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rc = main(["filter", "--corpus", str(fixture_corpus), "--format", "jsonl", "--models", str(tmp_path),
               "--topic", str(TOPIC)])
    assert rc == 0
    out = capsys.readouterr().out
    assert "kept 18 of 58" in out
    summary = json.loads(out[out.index("{\n") :])
    assert summary["filter"]["dropped"]["user"] == 25 and summary["ingest"]["bad"] == {
        "bad_json": 1,
        "missing_image": 1,
    }


def test_empty_corpus_is_a_clear_error_without_bundle(
    tmp_path: Path, weights_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "posts.jsonl").write_text("", encoding="utf-8")
    models = tmp_path / "models"
    progress = tmp_path / "progress.jsonl"
    rc = main(
        [
            "all",
            "--corpus",
            str(tmp_path / "c"),
            "--format",
            "jsonl",
            "--models",
            str(models),
            "--quick",
            "--weights",
            str(weights_dir),
            "--progress-file",
            str(progress),
        ]
    )
    assert rc == 1
    assert "holds no post" in capsys.readouterr().err
    last = json.loads(progress.read_text().splitlines()[-1])
    assert last["stage"] == "failed" and "holds no post" in last["error"] and "\n" not in last["error"]
    assert bundle.list_versions(models) == [] and not list(models.glob(".tmp-*"))


def test_everything_filtered_is_a_clear_error(
    tmp_path: Path, flickr8k_dir: Path, multilingual_tsv: Path
) -> None:
    posts = [p for p in fixture_posts(flickr8k_dir, multilingual_tsv) if p.expect == "language"]
    corpus = write_corpus("jsonl", posts, tmp_path / "c")
    (tmp_path / "models" / ".tmp-stale").mkdir(parents=True)
    with pytest.raises(EmptyCorpus, match="dropped all 6 posts"):
        build_bundle(_cfg(corpus, tmp_path / "models"), ProgressReporter(bars=False))
    assert not (tmp_path / "models" / ".tmp-stale").exists()  # stale staging cleaned at start
    assert bundle.active_version(tmp_path / "models") is None


def test_progress_protocol(tmp_path: Path) -> None:
    path = tmp_path / "p.jsonl"
    rep = ProgressReporter(path, bars=False, min_interval_s=0.2)
    rep.start("encode", 1000, "images")
    t0 = time.monotonic()
    for i in range(1, 1001):
        rep.update(i)
        if i % 100 == 0:
            time.sleep(0.05)
    spent = time.monotonic() - t0
    rep.end()
    rep.finished(tmp_path / "v1", "v1")
    lines = [json.loads(x) for x in path.read_text().splitlines()]
    encode = [x for x in lines if x["stage"] == "encode"]
    assert len(encode) <= 2 + spent / 0.2 + 1  # throttled, plus start and end
    assert set(encode[-1]) == {"stage", "done", "total", "unit", "rate", "elapsed", "eta"}
    assert encode[-1]["done"] == 1000 and encode[-1]["total"] == 1000 and encode[-1]["eta"] == 0.0
    assert encode[0]["done"] == 0 and encode[0]["rate"] is None
    assert (
        lines[-1]["stage"] == "done" and lines[-1]["version"] == "v1" and lines[-1]["bundle"].endswith("v1")
    )


# -- the small bundle, built by tests/bundle_factory.py through this pipeline --------------------------------


def test_small_bundle_contract(small_bundle: Path) -> None:
    manifest = bundle.verify(small_bundle)
    report = manifest["filter_report"]
    assert set(report["dropped"]) >= REASONS and report["total"] == 300
    assert report["kept"] == manifest["corpus"]["n_kept"] > 250
    assert report["languages"] == {"en": report["kept"]}
    assert "user (the corpus has no user ids)" in report["skipped_filters"]
    assert manifest["corpus"]["format"] == "flickr8k" and manifest["corpus"]["n_posts"] == 300
    assert manifest["encoder"]["max_abs_diff"] <= 1e-4
    assert {"ingest", "filters", "split", "text", "image", "report"} <= set(manifest["config"])
    assert manifest["config"]["recipe"] == manifest["config"]["image"]["recipe"] == "joint"
    assert manifest["config"]["image"]["joint"] == to_jsonable(JointConfig())
    assert manifest["config"]["text"]["vector_size"] == 64
    assert {"r1", "r5", "r10", "medr"} <= set(manifest["metrics"]["image_search"])
    for name in ("images.usearch", "words.usearch", "report/stats.json", "words.npy", "vocab.json",
                 "joint_words.npy", "hashtags.npz", "captions.npy", "search.usearch"):
        assert name in manifest["files"]
    meta = json.loads((small_bundle / bundle.IMAGE_META).read_text())
    vectors = np.load(small_bundle / bundle.IMAGE_VECTORS)
    assert len(meta["items"]) == vectors.shape[0] == report["kept"]
    item = meta["items"][0]
    assert set(item) == {"key", "post_id", "path", "caption", "captions", "split", "lang", "user", "taken_at"}
    assert item["key"] == 0 and len(item["captions"]) == 5 and Path(item["path"]).is_absolute()
    assert {it["split"] for it in meta["items"]} == {"train", "val", "test"}


def test_small_bundle_encoder_gives_the_vectors_the_trainer_computed(small_bundle: Path) -> None:
    """The default recipe's features are the means of GoogLeNet's pool4, 5a and 5b (2,688 values) of the
    whole photo; the bundle's encoder, run by ONNX Runtime on a photo framed as the engine frames it, gives
    the image vector the trainer published for that photo."""
    manifest = bundle.read_manifest(small_bundle)
    image = manifest["config"]["image"]
    assert image["levels"] == ["pool4", "5a", "5b"] and image["crops"] == 1 and image["framing"] == "whole"
    assert manifest["config"]["encode_framing"] == "whole"
    meta = json.loads((small_bundle / bundle.IMAGE_META).read_text())
    vectors = np.load(small_bundle / bundle.IMAGE_VECTORS)
    session = open_session(small_bundle / bundle.ENCODER)
    rows = [0, 1, 2, 100, len(vectors) - 1]
    x = np.stack([load_for_network(Path(meta["items"][r]["path"]), "whole") for r in rows])
    served = session.run([OUTPUT_NAME], {INPUT_NAME: x})[0]
    assert served.shape == (len(rows), vectors.shape[1])
    np.testing.assert_allclose(served, vectors[rows], atol=2e-4, rtol=1e-4)


def test_small_bundle_progress_file(small_bundle_models: Path, small_bundle: Path) -> None:
    lines = [json.loads(x) for x in progress_file(small_bundle_models).read_text().splitlines()]
    stages = {x["stage"] for x in lines}
    assert {
        "ingest",
        "filter",
        "split",
        "text",
        "features",
        "joint",
        "export",
        "hashtags",
        "encode",
        "index",
        "eval",
        "report",
    } <= stages
    assert lines[-1] == {
        **lines[-1],
        "stage": "done",
        "bundle": str(small_bundle),
        "version": small_bundle.name,
    }
    elapsed = [x["elapsed"] for x in lines]
    assert elapsed == sorted(elapsed)
    # The stages that take minutes at scale count their work, not only their start and end.
    for stage, unit in (("joint", None), ("hashtags", "batches")):
        counted = [x for x in lines if x["stage"] == stage and x.get("total")]
        assert counted and counted[-1]["done"] == counted[-1]["total"], stage
        assert unit is None or counted[-1]["unit"] == unit


def test_cli_all_reuses_cached_stages_and_prints_path_last(
    small_bundle_models: Path,
    small_bundle: Path,
    flickr8k_dir: Path,
    weights_dir: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="train.stages")
    factory_work = work_dir(small_bundle_models)
    assert (
        pipeline_config(
            build_parser().parse_args(small_bundle_args(small_bundle_models, flickr8k_dir, weights_dir))
        ).work_dir
        == factory_work
    )
    models = tmp_path / "models"
    args = [*small_bundle_args(models, flickr8k_dir, weights_dir), "--work", str(factory_work),
            "--index-dtype", "f16"]
    assert main(args) == 0
    out = capsys.readouterr().out.strip().splitlines()
    published = Path(out[-1])
    assert published.parent == models and bundle.active_path(models) == published
    # The index precision is not a stage input: every stage is reused, only the indexes change.
    assert index_info(published / bundle.IMAGE_INDEX)["dtype"] == "f16"
    for stage in ("ingest", "filter", "split", "text", "features", "joint", "export", "hashtags"):
        assert f"{stage}: inputs and config unchanged" in caplog.text
    np.testing.assert_array_equal(
        np.load(published / bundle.IMAGE_VECTORS), np.load(small_bundle / bundle.IMAGE_VECTORS)
    )
