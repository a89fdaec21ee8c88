"""One prepared check for a GPU machine (issue 26): image features, the joint map and a short `train all`.

    python scripts/gpu_check.py --weights ../shared/weights/bvlc_googlenet --flickr8k ../shared/data/flickr8k

About 5 minutes on one H100 (under 8 in all). Measures, on the first CUDA device:
- image features photos/s, end to end from the JPEG files through the trainer's own path (decoding in
  worker processes, one per core; :func:`train.image.features.encode_missing` into a fresh store), at 1
  and at 10 crops, for each runtime: torch fp32 (the default on a GPU), torch under float16 autocast,
  ONNX Runtime's CUDA provider (when onnxruntime-gpu is installed, see the README), and ONNX Runtime on
  the CPU for scale; each GPU runtime's largest difference from the CPU features, and the network alone
  (already decoded views) so a decode-bound figure shows as such;
- the joint map's training step (train_joint, synthetic 80,000-word vocabulary, 300-d) on the GPU and on
  the CPU;
- `python -m train all --quick --limit 2000` on Flickr8k end to end (wall time, stage timings, figures).
Human-readable lines go to stderr; the last stdout line is one JSON object. Without a CUDA device (or
with ``--cpu-smoke``) every part runs once at a tiny size on the CPU, the script says "no CUDA device",
and exits 0 (tests run it so).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import torch

from space.ort import CUDA
from space.textspace import TextSpace
from train.corpus.posts import Post
from train.image.decode import decode_pixels, views_of
from train.image.encode import EncodeConfig
from train.image.export import export_features, features_module
from train.image.features import FeatureSpec, FeatureStore, encode_missing
from train.image.photokeys import photo_keys
from train.image.runtime import Encoder, OrtEncoder, TorchEncoder, pick_runtime
from train.recipes.joint.model import JointConfig, train_joint

log = logging.getLogger("gpu_check")
ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class CheckConfig:
    """What to measure and at what size."""

    weights: Path
    flickr8k: Path
    photos: int  # photos per features measurement
    cpu_photos: int  # photos for ONNX Runtime on the CPU (slower)
    words: int  # the joint map's vocabulary
    joint_posts: int  # posts per joint epoch (batches of 128)
    e2e_limit: int  # posts read by the end-to-end run
    cuda: bool


def features_rate(cfg: CheckConfig, ecfg: EncodeConfig, photos: list[Path], onnx: Path,
                  work: Path) -> tuple[float, np.ndarray]:
    """Steady photos/s of ``ecfg`` from the JPEGs into a fresh store (from the first photo stored to the
    last: the workers' start-up, paid once per run, left out), and the features in photo order."""
    keys = photo_keys(photos)
    spec = FeatureSpec("bvlc_googlenet", "check", ecfg.crops)
    store = FeatureStore(work / "store", spec)
    marks: list[tuple[float, int]] = []

    def progress(stage: str, done: int, total: int | None, unit: str) -> None:
        if done > 0:
            marks.append((time.perf_counter(), done))

    started = time.perf_counter()
    encode_missing(store, photos, keys, ecfg, onnx_path=onnx, progress=progress,
                   module=lambda: features_module("bvlc", cfg.weights))
    seconds = time.perf_counter() - started
    feats, _ = store.gather(keys)
    if len(marks) >= 2 and marks[-1][1] > marks[0][1]:
        (t0, d0), (t1, d1) = marks[0], marks[-1]
        return (d1 - d0) / (t1 - t0), feats
    return len(photos) / seconds, feats


def network_rate(encoder: Encoder, views: np.ndarray, seconds: float, sync: Callable[[], None]) -> float:
    """Views/s of the encoder alone on already-decoded uint8 views."""
    encoder(views)
    sync()
    n, started = 0, time.perf_counter()
    while n == 0 or time.perf_counter() - started < seconds:
        encoder(views)
        n += len(views)
    sync()
    return n / (time.perf_counter() - started)


def measure_features(cfg: CheckConfig, work: Path) -> dict[str, Any]:
    """Every runtime at 1 and 10 crops (see the module docstring)."""
    all_photos = sorted((cfg.flickr8k / "images").glob("*.jpg"))
    work.mkdir(parents=True, exist_ok=True)
    onnx = work / "features.onnx"
    export_features("bvlc", cfg.weights, onnx, all_photos[:8])
    cores = os.cpu_count() or 1
    base = EncodeConfig(batch_size=256 if cfg.cuda else 8, decode_workers=cores, threads=None)
    runtimes: dict[str, EncodeConfig] = {"ort_cpu": replace(base, runtime="onnx", device="cpu",
                                                            batch_size=32)}
    if cfg.cuda:
        runtimes["torch_fp32"] = replace(base, runtime="torch", device="cuda")
        runtimes["torch_fp16"] = replace(base, runtime="torch", device="cuda", half=True)
        runtimes["ort_cuda"] = replace(base, runtime="onnx", device="cuda")
    else:
        runtimes["torch_cpu"] = replace(base, runtime="torch", device="cpu")
    out: dict[str, Any] = {"photos_per_s": {}, "max_abs_diff_vs_ort_cpu": {}, "network_views_per_s": {},
                           "decode_workers": cores}
    for crops in (1, 10):
        reference: np.ndarray | None = None
        for name, ecfg in runtimes.items():
            n = cfg.cpu_photos if name == "ort_cpu" else cfg.photos
            photos = all_photos[:n]
            if name == "ort_cuda" and CUDA not in ort.get_available_providers():
                out["photos_per_s"][name] = "unavailable: onnxruntime-gpu is not installed (README, GPU)"
                continue
            try:
                rate, feats = features_rate(cfg, replace(ecfg, crops=crops), photos, onnx, work / name)
            except Exception as exc:  # a runtime that cannot start here is a finding, not a crash
                out["photos_per_s"].setdefault(name, {})[str(crops)] = f"failed: {exc}"
                continue
            out["photos_per_s"].setdefault(name, {})[str(crops)] = round(rate, 1)
            if name == "ort_cpu":
                reference = feats
            elif reference is not None:
                m = min(len(reference), len(feats))
                diff = float(np.abs(feats[:m] - reference[:m]).max())
                out["max_abs_diff_vs_ort_cpu"].setdefault(name, {})[str(crops)] = diff
            log.info("features %s, %d crop(s): %.1f photos/s on %d photos", name, crops, rate, len(photos))
    views = np.concatenate([views_of(p, 10) for p in
                            (decode_pixels(str(q), 10) for q in all_photos[:26]) if not isinstance(p, str)])
    views = views[: 256 if cfg.cuda else 8]
    sync: Callable[[], None] = torch.cuda.synchronize if cfg.cuda else (lambda: None)
    encoders: dict[str, Encoder] = {"ort_cpu": OrtEncoder(onnx, device="cpu")}
    if cfg.cuda:
        encoders["torch_fp32"] = TorchEncoder(features_module("bvlc", cfg.weights), "cuda")
        encoders["torch_fp16"] = TorchEncoder(features_module("bvlc", cfg.weights), "cuda", half=True)
        if CUDA in ort.get_available_providers():
            encoders["ort_cuda"] = OrtEncoder(onnx, device="cuda")
    for name, enc in encoders.items():
        out["network_views_per_s"][name] = round(network_rate(enc, views, 5.0 if cfg.cuda else 0.0, sync), 1)
    out["default_runtime"] = pick_runtime("auto", "auto")
    return out


def synthetic_corpus(words: int, posts: int) -> tuple[list[Post], TextSpace, np.ndarray]:
    """Captions of 10 Zipf-drawn words over ``words`` letter-only words, 300-d vectors, 1,024-d features."""
    rng = np.random.default_rng(0)
    letters = np.array(list("abcdefghijklmnopqrstuvwxyz"))
    vocab = ["zq" + "".join(letters[(i // 26 ** k) % 26] for k in range(4)) for i in range(words)]
    p = 1.0 / np.arange(1, words + 1)
    p /= p.sum()
    draws = rng.choice(words, (posts, 10), p=p)
    items = [Post(id=str(i), image=Path(f"{i}.jpg"), caption=" ".join(vocab[w] for w in row), lang="en",
                  split="train" if i % 20 else "val") for i, row in enumerate(draws)]
    space = TextSpace(vocab, rng.normal(size=(words, 300)).astype(np.float32), np.ones(words, np.float32),
                      np.ones(words, np.int64))
    return items, space, rng.normal(size=(posts, 1024)).astype(np.float32)


def measure_joint(cfg: CheckConfig) -> dict[str, Any]:
    """ms per training step of the joint map (one epoch, validation excluded) on the GPU and the CPU."""
    posts, space, feats = synthetic_corpus(cfg.words, cfg.joint_posts)
    jcfg = JointConfig(epochs=1)
    out: dict[str, Any] = {"words": cfg.words, "dim": 300, "posts": cfg.joint_posts}
    for device in ("cuda", "cpu") if cfg.cuda else ("cpu",):
        marks: list[tuple[float, int]] = []

        def progress(stage: str, done: int, total: int | None, unit: str,
                     marks: list[tuple[float, int]] = marks) -> None:
            marks.append((time.perf_counter(), done))

        train_joint(jcfg, feats, posts, space, np.ones(len(posts), bool), progress, device=device)
        (t0, d0), (t1, d1) = marks[0], marks[-1]
        out[f"{device}_ms_per_step"] = round(1000 * (t1 - t0) / max(1, d1 - d0), 2)
        log.info("joint map on %s: %.1f ms/step", device, out[f"{device}_ms_per_step"])
    return out


def measure_train_all(cfg: CheckConfig, work: Path) -> dict[str, Any]:
    """`python -m train all --quick --limit N` on Flickr8k: wall time, stage timings, test figures."""
    models = work / "models"
    cmd = [sys.executable, "-m", "train", "all", "--corpus", str(cfg.flickr8k), "--format", "flickr8k",
           "--weights", str(cfg.weights), "--models", str(models), "--work", str(work / "work"), "--quick",
           "--limit", str(cfg.e2e_limit)]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    started = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if proc.returncode != 0:
        return {"failed": proc.stderr[-2000:], "seconds": round(seconds, 1)}
    bundle = Path(proc.stdout.strip().splitlines()[-1])
    manifest = json.loads((bundle / "manifest.json").read_text())
    log.info("train all --quick --limit %d: %.1f s", cfg.e2e_limit, seconds)
    return {"limit": cfg.e2e_limit, "seconds": round(seconds, 1), "stages": manifest.get("timings"),
            "image_search_r10": manifest.get("metrics", {}).get("image_search", {}).get("r10")}


def main(argv: list[str] | None = None) -> int:
    """Run every measurement and print the JSON line."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--weights", type=Path, required=True, help="the bvlc_googlenet weight folder")
    p.add_argument("--flickr8k", type=Path, required=True, help="the Flickr8k folder (images/)")
    p.add_argument("--photos", type=int, default=4000, help="photos per GPU features measurement")
    p.add_argument("--cpu-smoke", action="store_true", help="tiny CPU run of every measurement (tests)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    cuda = torch.cuda.is_available() and not args.cpu_smoke
    if not cuda:
        log.info("no CUDA device%s: every part once at a tiny size on the CPU instead",
                 " (--cpu-smoke)" if args.cpu_smoke else "")
    cfg = CheckConfig(args.weights, args.flickr8k, photos=args.photos if cuda else 6,
                      cpu_photos=1000 if cuda else 6, words=80000 if cuda else 2000,
                      joint_posts=12800 if cuda else 512, e2e_limit=2000 if cuda else 24, cuda=cuda)
    started = time.monotonic()
    result: dict[str, Any] = {
        "device": torch.cuda.get_device_name(0) if cuda else f"cpu ({platform.processor() or 'unknown'})",
        "cuda": cuda, "torch": torch.__version__, "cuda_version": torch.version.cuda,
        "onnxruntime": ort.__version__, "ort_providers": ort.get_available_providers(),
        "cpu_cores": os.cpu_count(),
    }
    with tempfile.TemporaryDirectory() as tmp:
        result["features"] = measure_features(cfg, Path(tmp) / "features")
        result["joint"] = measure_joint(cfg)
        result["train_all"] = measure_train_all(cfg, Path(tmp) / "train")
    result["seconds"] = round(time.monotonic() - started, 1)
    if not cuda:
        result["note"] = "no CUDA device: CPU smoke figures at a tiny size, not a benchmark"
        print("no CUDA device: nothing measured on a GPU (CPU smoke figures only)", file=sys.stderr)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
