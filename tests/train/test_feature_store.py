"""The per-photo feature store on real Flickr8k photos and the real BVLC GoogLeNet (issue 26, item 3).

A `train all` killed (SIGKILL, the whole process group) during the features stage keeps every finished
part; the rerun says how many photos were already encoded and encodes only the rest; a filter change
that keeps more posts encodes only the new photos; features imported with `--features DIR` are used and
a folder of another crop count is refused in one line; a work folder of the earlier layout is adopted.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from space.images import network_views, open_image
from space.ort import INPUT_NAME, OUTPUT_NAME, open_session
from train.__main__ import build_parser, pipeline_config
from train.config import PipelineConfig, config_hash
from train.image.features import (
    DEFAULT_LEVELS,
    FeatureImportMismatch,
    FeatureSpec,
    FeatureStore,
    open_import,
    write_folder,
)
from train.image.photokeys import KEY_BYTES, file_sha256, photo_keys
from train.pipeline import Pipeline
from train.recipes.joint.recipe import STORE_DIR, JointRecipe

ROOT = Path(__file__).resolve().parents[2]
N_EN, N_ES = 40, 12
PART_ROWS = 3


def _captions(flickr8k: Path) -> dict[str, list[str]]:
    caps: dict[str, list[str]] = {}
    for line in (flickr8k / "Flickr8k.token.txt").read_text(encoding="utf-8").splitlines():
        name, _, text = line.partition("\t")
        caps.setdefault(name.split("#")[0], []).append(text.strip())
    return caps


@pytest.fixture(scope="module")
def corpus(flickr8k_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """posts.jsonl: N_EN posts declared English, then N_ES declared Spanish (the language filter trusts a
    declared language), each a distinct Flickr8k photo with its five captions."""
    caps = _captions(flickr8k_dir)
    names = sorted(caps)[: N_EN + N_ES]
    path = tmp_path_factory.mktemp("corpus") / "posts.jsonl"
    with path.open("w", encoding="utf-8") as fh:
        for i, name in enumerate(names):
            fh.write(json.dumps({"id": f"p{i}", "image": str(flickr8k_dir / "images" / name),
                                 "caption": caps[name][0], "captions": caps[name],
                                 "lang": "en" if i < N_EN else "es"}) + "\n")
    return path


def _args(corpus: Path, work: Path, weights: Path, *extra: str) -> list[str]:
    return ["all", "--corpus", str(corpus), "--format", "jsonl", "--models", str(work.parent / "models"),
            "--work", str(work), "--weights", str(weights), "--quick", "--no-activate",
            "--feature-part-rows", str(PART_ROWS), *extra]


def _config(args: list[str]) -> PipelineConfig:
    return pipeline_config(build_parser().parse_args(args))


def _features(cfg: PipelineConfig) -> tuple[np.ndarray, list[int], list]:
    """The features stage of ``cfg`` run in this process: (features, failed, posts)."""
    pipe = Pipeline(cfg)
    side = pipe._through_text()
    _, feats, failed = JointRecipe(pipe).features(side.text.posts)
    return np.asarray(feats), failed, side.text.posts


def _stored_rows(work: Path) -> int:
    return sum(p.stat().st_size // KEY_BYTES for p in (work / STORE_DIR).glob("*/part-*.keys"))


def _reference(onnx: Path, photos: list[Path]) -> np.ndarray:
    session = open_session(onnx)
    x = np.stack([network_views(open_image(p), 1, "whole")[0] for p in photos])  # the default framing
    return np.asarray(session.run([OUTPUT_NAME], {INPUT_NAME: x})[0])


def test_killed_run_resumes_and_a_filter_change_encodes_only_new_photos(
        corpus: Path, weights_dir: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    work = tmp_path / "work"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    args = _args(corpus, work, weights_dir, "--languages", "en")
    proc = subprocess.Popen([sys.executable, "-m", "train", *args],
                            cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            start_new_session=True)
    deadline = time.monotonic() + 240
    try:
        while _stored_rows(work) < 2 * PART_ROWS:
            assert proc.poll() is None, proc.stderr.read().decode()[-3000:] if proc.stderr else ""
            assert time.monotonic() < deadline, "no feature part written in 240 s"
            time.sleep(0.02)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the run and its decoding workers, as a crash would
        proc.wait()
        if proc.stderr:
            proc.stderr.close()
    kept = _stored_rows(work)
    assert not list(work.glob("features-[0-9a-f]*/DONE.json")), "the run finished before it was killed"
    assert 2 * PART_ROWS <= kept < N_EN

    # The rerun, same settings: what the killed run stored is read, only the rest is encoded.
    caplog.set_level(logging.INFO)
    progress = tmp_path / "progress.jsonl"
    cfg = _config(_args(corpus, work, weights_dir, "--languages", "en", "--progress-file", str(progress)))
    feats, failed, posts = _features(cfg)
    assert failed == [] and len(posts) == N_EN
    assert f"features: {kept} of {N_EN} photos already encoded, {N_EN - kept} to encode" in caplog.text
    assert "features-onnx: inputs and config unchanged" in caplog.text  # exported once, by the killed run
    encode = [json.loads(line) for line in progress.read_text().splitlines() if '"encode"' in line]
    assert (encode[0]["done"], encode[0]["total"]) == (kept, N_EN)  # the progress starts where it stopped
    assert encode[-1]["done"] == N_EN
    assert _stored_rows(work) == N_EN
    onnx = next(work.glob("features-onnx-*/features.onnx"))
    np.testing.assert_allclose(feats, _reference(onnx, [p.image for p in posts]), atol=1e-4)

    # A filter change that keeps more posts: only their photos are encoded, the others read back as stored.
    caplog.clear()
    feats2, failed2, posts2 = _features(_config(_args(corpus, work, weights_dir, "--languages", "en,es")))
    assert failed2 == [] and len(posts2) == N_EN + N_ES
    assert f"features: {N_EN} of {N_EN + N_ES} photos already encoded, {N_ES} to encode" in caplog.text
    by_photo = {p.image: row for p, row in zip(posts, feats, strict=True)}
    for p, row in zip(posts2, feats2, strict=True):
        if p.image in by_photo:
            assert np.array_equal(row, by_photo[p.image])
    assert _stored_rows(work) == N_EN + N_ES


def test_photo_keys_are_content_hashes_cached_by_path_size_and_mtime(flickr8k_dir: Path,
                                                                     tmp_path: Path) -> None:
    photos = sorted((flickr8k_dir / "images").glob("*.jpg"))[:5]
    copy = tmp_path / "copy.jpg"
    copy.write_bytes(photos[0].read_bytes())
    missing = tmp_path / "missing.jpg"
    cache = tmp_path / "sha.sqlite"
    keys = photo_keys([*photos, copy, missing], cache)
    assert [bytes(k) for k in keys[:5]] == [file_sha256(p) for p in photos]
    assert bytes(keys[5]) == bytes(keys[0])  # same bytes, same key, whatever the path
    assert not keys[6].any()
    # A changed file (new size and mtime) is hashed again; the others come from the cache.
    copy.write_bytes(photos[1].read_bytes())
    again = photo_keys([*photos, copy], cache)
    assert bytes(again[5]) == file_sha256(photos[1])


def test_imported_features_are_used_and_another_crop_count_is_refused(
        corpus: Path, weights_dir: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    posts_photos = [Path(json.loads(line)["image"]) for line in corpus.read_text().splitlines()][:N_EN]
    half = posts_photos[::2]
    rng = np.random.default_rng(0)
    imported = rng.standard_normal((len(half), 2688)).astype(np.float16)
    folder = tmp_path / "elsewhere"
    spec_args = _args(corpus, tmp_path / "work", weights_dir, "--languages", "en", "--features", str(folder))
    spec = JointRecipe(Pipeline(_config(spec_args))).feature_spec()
    keys = np.stack([np.frombuffer(file_sha256(p), np.uint8) for p in half])
    write_folder(folder, keys, imported, spec)
    meta = json.loads((folder / "meta.json").read_text())
    assert meta == {"backbone": "bvlc_googlenet", "crops": 1, "dim": 2688, "levels": ["pool4", "5a", "5b"],
                    "framing": "whole"}

    caplog.set_level(logging.INFO)
    feats, failed, posts = _features(_config(spec_args))
    assert failed == []
    assert (f"features: {len(half)} of {N_EN} photos already encoded ({len(half)} imported), "
            f"{N_EN - len(half)} to encode") in caplog.text
    rows = {p.image: r for p, r in zip(posts, feats, strict=True)}
    for photo, vec in zip(half, imported, strict=True):
        np.testing.assert_array_equal(rows[photo], vec.astype(np.float32))

    # Another crop count: one line on stderr, exit status 1, nothing encoded.
    meta["crops"] = 10
    (folder / "meta.json").write_text(json.dumps(meta))
    work = tmp_path / "work-refused"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "-m", "train",
                          *_args(corpus, work, weights_dir, "--languages", "en", "--features", str(folder))],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 1
    errors = [line for line in out.stderr.splitlines() if line.startswith("error:")]
    assert errors == [f"error: --features {folder}: its features are bvlc_googlenet, 10 whole-photo views, "
                      "2688-d (pool4+5a+5b); this run needs bvlc_googlenet, 1 whole-photo view, 2688-d "
                      "(pool4+5a+5b) (set --encode-crops, --encode-framing, --image-levels or --backbone to "
                      "match, or encode them again)"]
    assert "Traceback" not in out.stderr
    assert _stored_rows(work) == 0
    with pytest.raises(FeatureImportMismatch):
        FeatureStore(tmp_path / "store", spec).import_folder(folder, keys)


def test_the_levels_store_never_meets_the_5b_store(tmp_path: Path) -> None:
    """The default features (pool4, 5a, 5b means) and 5b's alone live in separate stores; 5b's keeps the
    store and key it had before levels existed, and a 5b folder is refused by a levels run in one line."""
    pool5 = FeatureSpec("bvlc_googlenet", "fp", 10)
    levels = FeatureSpec.of("bvlc_googlenet", "fp", 10, ("5b", "pool4", "5a"))
    assert FeatureSpec.of("bvlc_googlenet", "fp", 10, ("5b",)) == pool5
    assert (levels.levels, levels.dim) == (DEFAULT_LEVELS, 2688)
    before = {"backbone": "bvlc_googlenet", "weights": "fp", "crops": 10, "dim": 1024}  # the old key's blob
    assert pool5.key() == hashlib.sha256(json.dumps(before, sort_keys=True).encode()).hexdigest()[:16]
    assert levels.key() != pool5.key()
    a, b = FeatureStore(tmp_path / "store", pool5), FeatureStore(tmp_path / "store", levels)
    assert a.dir != b.dir
    key = b"k" * KEY_BYTES
    with a.writer("t") as w:
        w.add(key, np.ones(1024, np.float32))
    assert key in a.index() and key not in b.index()
    with pytest.raises(ValueError, match="unknown feature levels"):
        FeatureSpec.of("bvlc_googlenet", "fp", 10, ("5c",))
    folder = tmp_path / "pool5"
    write_folder(folder, np.frombuffer(key, np.uint8)[None], np.ones((1, 1024), np.float32), pool5)
    meta = json.loads((folder / "meta.json").read_text())
    del meta["levels"]  # as encode_dist wrote it before levels existed: 5b alone
    (folder / "meta.json").write_text(json.dumps(meta))
    assert open_import(folder, pool5)[0] == pool5
    with pytest.raises(FeatureImportMismatch, match=r"1024-d; this run needs .* 2688-d \(pool4\+5a\+5b\)"):
        open_import(folder, levels)


def test_a_work_folder_of_the_earlier_layout_is_not_encoded_again(
        corpus: Path, weights_dir: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A finished features stage written before the store (one features.npy keyed by the image paths,
    DONE.json listing unreadable rows) moves into the store: nothing is encoded again."""
    work = tmp_path / "work"
    # That layout held 5b's 1,024 features only.
    cfg = _config(_args(corpus, work, weights_dir, "--languages", "en", "--image-levels", "5b",
                        "--encode-framing", "centre"))
    pipe = Pipeline(cfg)
    posts = pipe._through_text().text.posts
    spec = JointRecipe(pipe).feature_spec()
    old = work / ("features-" + config_hash("features", config_hash([str(p.image) for p in posts]), "bvlc",
                                            spec.weights, spec.crops))
    old.mkdir()
    earlier = np.random.default_rng(1).standard_normal((len(posts), 1024)).astype(np.float32)
    np.save(old / "features.npy", earlier)
    (old / "DONE.json").write_text(json.dumps({"failed": [3]}))  # row 3 was unreadable then: encoded now
    caplog.set_level(logging.INFO)
    feats, failed, _ = _features(cfg)
    assert failed == []
    assert (f"features: {N_EN - 1} of {N_EN} photos already encoded ({N_EN - 1} imported), 1 to encode"
            in caplog.text)
    keep = [i for i in range(N_EN) if i != 3]
    np.testing.assert_array_equal(feats[keep], earlier[keep])
    assert float(np.abs(feats[3]).max()) > 1.0 and not np.allclose(feats[3], earlier[3])
