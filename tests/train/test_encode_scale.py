"""Encoding at scale on real Flickr8k images and the small bundle's real ONNX encoder.

Chunked streaming equals one plain ONNX Runtime batch; an interrupted run resumes without re-encoding
finished chunks; unreadable files become zero rows in the failed list; two torchrun ranks merge into the
same vectors and one index; the GPU check script runs its CPU smoke path (every part: both encoding
runtimes, the joint map, a short `train all`).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from space.bundle import ENCODER, manifest_framing, read_manifest
from space.images import load_for_network
from space.ort import INPUT_NAME, OUTPUT_NAME
from space.vectorindex import load_index, search
from train.image.encode import EncodeConfig, chunk_files, encode_corpus
from train.image.runtime import encoder_session

ROOT = Path(__file__).resolve().parents[2]
N_IMAGES = 40


class Interrupted(Exception):
    """Raised by the test hook to stop an encoding run part-way."""


@pytest.fixture(scope="module")
def encoder(small_bundle: Path) -> Path:
    return small_bundle / ENCODER


@pytest.fixture(scope="module")
def images(flickr8k_dir: Path) -> list[Path]:
    return sorted((flickr8k_dir / "images").glob("*.jpg"))[:N_IMAGES]


@pytest.fixture(scope="module")
def framing(small_bundle: Path) -> str:
    return manifest_framing(read_manifest(small_bundle))


@pytest.fixture(scope="module")
def plain(encoder: Path, images: list[Path], framing: str) -> np.ndarray:
    """The reference: every image decoded up front (framed as its bundle frames photos) and run through
    ONNX Runtime as one batch."""
    session, _ = encoder_session(encoder, device="cpu")
    batch = np.stack([load_for_network(p, framing=framing) for p in images])
    return np.asarray(session.run([OUTPUT_NAME], {INPUT_NAME: batch})[0])


def test_streaming_matches_one_plain_batch(tmp_path: Path, encoder: Path, images: list[Path],
                                          plain: np.ndarray, framing: str) -> None:
    cfg = EncodeConfig(batch_size=5, chunk_size=8, decode_workers=3, decode_processes=True,
                       device="cpu", framing=framing)
    calls: list[tuple[str, int, int | None, str]] = []
    result = encode_corpus(encoder, images[:24], tmp_path / "work", cfg, out_path=tmp_path / "vectors.npy",
                           progress=lambda *a: calls.append(a))
    assert isinstance(result.vectors, np.memmap)
    assert result.vectors.shape == (24, plain.shape[1])
    np.testing.assert_allclose(result.vectors, plain[:24], atol=1e-5)
    assert (result.failed, result.chunks_encoded, result.chunks_resumed) == ([], 3, 0)
    assert result.provider == "CPUExecutionProvider"
    assert [chunk_files(tmp_path / "work", c)[0].is_file() for c in range(4)] == [True, True, True, False]
    np.testing.assert_array_equal(np.load(tmp_path / "vectors.npy"), result.vectors)
    assert calls[-1] == ("encode", 24, 24, "images")


def test_interrupted_run_resumes_without_reencoding(tmp_path: Path, encoder: Path, images: list[Path],
                                                   plain: np.ndarray, framing: str) -> None:
    cfg = EncodeConfig(batch_size=4, chunk_size=6, device="cpu", framing=framing)
    work, subset = tmp_path / "work", images[:18]
    finished: list[int] = []

    def stop_after_two(chunk: int) -> None:
        finished.append(chunk)
        if len(finished) == 2:
            raise Interrupted

    with pytest.raises(Interrupted):
        encode_corpus(encoder, subset, work, cfg, on_chunk=stop_after_two)
    assert finished == [0, 1]
    first = chunk_files(work, 0)[0]
    stamp = first.stat().st_mtime_ns

    encoded: list[int] = []
    result = encode_corpus(encoder, subset, work, cfg, on_chunk=encoded.append)
    assert (encoded, result.chunks_encoded, result.chunks_resumed) == ([2], 1, 2)
    assert first.stat().st_mtime_ns == stamp
    np.testing.assert_allclose(result.vectors, plain[:18], atol=1e-5)

    # A damaged finished chunk (wrong shape on disk) is found and encoded again; the others are kept.
    np.save(chunk_files(work, 1)[0], np.zeros((2, plain.shape[1]), np.float32))
    encoded.clear()
    again = encode_corpus(encoder, subset, work, cfg, on_chunk=encoded.append)
    assert (encoded, again.chunks_resumed) == ([1], 2)
    np.testing.assert_allclose(again.vectors, plain[:18], atol=1e-5)

    # Another image list in the same folder is another job: nothing of the old one is reused.
    other = encode_corpus(encoder, subset[::-1][:6], work, cfg)
    assert (other.chunks_encoded, other.chunks_resumed) == (1, 0)
    np.testing.assert_allclose(other.vectors, plain[:18][::-1][:6], atol=1e-5)


def test_unreadable_images_are_zero_rows_in_the_failed_list(tmp_path: Path, encoder: Path, images: list[Path],
                                                            plain: np.ndarray, framing: str) -> None:
    truncated = tmp_path / "truncated.jpg"
    truncated.write_bytes(images[0].read_bytes()[:3000])
    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")
    text = tmp_path / "notes.jpg"
    text.write_text("not an image", encoding="utf-8")
    corpus = [images[0], truncated, images[1], empty, text, tmp_path / "missing.jpg", images[2]]
    cfg = EncodeConfig(batch_size=2, chunk_size=3, framing=framing)
    result = encode_corpus(encoder, corpus, tmp_path / "work", cfg)
    assert result.failed == [1, 3, 4, 5]
    assert not result.vectors[result.failed].any()
    np.testing.assert_allclose(result.vectors[[0, 2, 6]], plain[:3], atol=1e-5)
    assert json.loads(chunk_files(tmp_path / "work", 1)[1].read_text(encoding="utf-8")) == [3, 4, 5]


def test_two_torchrun_ranks_merge_into_one_index(tmp_path: Path, encoder: Path, images: list[Path],
                                                 plain: np.ndarray) -> None:
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(images[3].read_bytes()[:1000])
    corpus = [*images[:7], broken, *images[7:]]
    listing = tmp_path / "images.txt"
    listing.write_text("".join(f"{p}\n" for p in corpus), encoding="utf-8")
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "train.image.encode_dist", "--onnx", str(encoder), "--images", str(listing),
           "--out", str(out), "--chunk-size", "8", "--batch-size", "8"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    assert summary["world_size"] == 2 and summary["images"] == len(corpus) == N_IMAGES + 1
    assert [r["rows"] for r in summary["ranks"]] == [21, 20]
    assert (summary["failed"], summary["indexed"]) == (1, N_IMAGES)

    merged = np.load(out / "images.npy")
    assert json.loads((out / "failed.json").read_text(encoding="utf-8")) == [7]
    assert not merged[7].any()
    np.testing.assert_allclose(np.delete(merged, 7, axis=0), plain, atol=1e-5)
    index = load_index(out / "images.usearch")
    assert len(index) == N_IMAGES
    for row in [i for i in range(len(corpus)) if i != 7]:
        keys, sims = search(index, merged[row], 1, exact=True)
        assert keys[0] == row and sims[0] > 0.999


def test_gpu_check_cpu_smoke(weights_dir: Path, flickr8k_dir: Path) -> None:
    cmd = [sys.executable, str(ROOT / "scripts" / "gpu_check.py"), "--cpu-smoke",
           "--weights", str(weights_dir), "--flickr8k", str(flickr8k_dir)]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=480)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "no CUDA device" in proc.stderr
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["cuda"] is False and result["device"].startswith("cpu")
    features = result["features"]
    for runtime in ("ort_cpu", "torch_cpu"):  # the two encoding paths, at 1 and 10 crops
        assert set(features["photos_per_s"][runtime]) == {"1", "10"}
        assert all(v > 0 for v in features["photos_per_s"][runtime].values())
    # torch and ONNX Runtime compute the same features.
    assert max(features["max_abs_diff_vs_ort_cpu"]["torch_cpu"].values()) < 1e-3
    assert features["default_runtime"] == "onnx"  # no GPU: ONNX Runtime on the CPU
    assert result["joint"]["cpu_ms_per_step"] > 0
    assert result["train_all"]["seconds"] > 0 and "failed" not in result["train_all"]
    assert set(result["train_all"]["stages"]) >= {"features", "joint", "hashtags"}


def test_a_loose_encoder_must_be_told_its_framing(tmp_path: Path, encoder: Path, framing: str) -> None:
    from space.envvars import SettingError
    from train.image.encode_dist import build_parser, config_from_args

    loose = tmp_path / "encoder.onnx"
    loose.write_bytes(encoder.read_bytes())
    base = ["--images", str(tmp_path / "list.txt"), "--out", str(tmp_path / "out")]
    cmd = [sys.executable, "-m", "train.image.encode_dist", "--onnx", str(loose), *base]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0 and "--encode-framing whole|centre and --encode-crops N" in proc.stderr
    assert "Traceback" not in proc.stderr
    told = config_from_args(build_parser().parse(["--onnx", str(loose), "--encode-framing", "centre",
                                                  "--encode-crops", "10", *base]))
    assert (told.encode.crops, told.encode.framing) == (10, "centre")
    own = config_from_args(build_parser().parse(["--onnx", str(encoder), *base]))
    assert (own.encode.crops, own.encode.framing) == (1, framing)  # the small (--quick) bundle's
    features = config_from_args(build_parser().parse(base))
    assert (features.encode.crops, features.encode.framing) == (2, "whole")  # train all's default
    with pytest.raises(SettingError, match="crops must be one of"):
        config_from_args(build_parser().parse(["--encode-framing", "whole", "--encode-crops", "10", *base]))
