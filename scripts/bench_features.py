"""Image features on this machine: photos/s at 1 and 10 crops, and what a `kill -9` loses.

    python scripts/bench_features.py --weights ../shared/weights/bvlc_googlenet \
        --flickr8k ../shared/data/flickr8k [--photos 1500] [--photos10 200] [--kill-after 75]

Rates: the trainer's own path (`train.image.features.encode_missing`: decoding in worker processes, ONNX
Runtime on every core, into a fresh per-photo store) from the JPEG files, steady rate (from the first
photo stored to the last; the workers' start-up, paid once per run, left out) and CPU time per photo (what
two idle cores would give: 2,000 / ms), with decoding in processes (the default) and in threads,
alternating. Then the CPU time of one photo's decoding (a worker's part) and
of cutting its views into float32 network inputs (the main process's part with ONNX Runtime), for Flickr8k
photos and for Instagram-sized copies (1080 px, JPEG quality 90), and the photo keys' rate, first run and
cached. Kill: the same encoding in a child process with the default parts
(4,096 photos or 30 s), SIGKILLed after ``--kill-after`` seconds; photos lost = photos it had encoded (its
last progress line, at most 0.5 s old) minus photos the store kept. One JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from PIL import Image

from train.image.encode import EncodeConfig
from train.image.export import export_features
from train.image.features import FeatureSpec, FeatureStore, encode_missing
from train.image.photokeys import KEY_BYTES, photo_keys

ROOT = Path(__file__).resolve().parents[1]


def rate(photos: list[Path], onnx: Path, store_dir: Path, cfg: EncodeConfig) -> tuple[float, float]:
    """Steady photos/s of one run into a fresh store, and its CPU milliseconds per photo (this process and
    its decoding workers, start-up included): 2,000 / that is what two idle cores would give."""
    keys = photo_keys(photos)
    store = FeatureStore(store_dir, FeatureSpec("bvlc_googlenet", "bench", cfg.crops))
    marks: list[tuple[float, int]] = []

    def progress(stage: str, done: int, total: int | None, unit: str) -> None:
        if done > 0:
            marks.append((time.perf_counter(), done))

    before = os.times()
    encode_missing(store, photos, keys, cfg, onnx_path=onnx, module=lambda: None, progress=progress)
    after = os.times()
    cpu = sum(after[i] - before[i] for i in range(4))  # user, system, children's user and system
    (t0, d0), (t1, d1) = marks[0], marks[-1]
    return (d1 - d0) / (t1 - t0), 1000 * cpu / len(photos)


def decode_cost(photos: list[Path], crops: int) -> tuple[float, float]:
    """CPU milliseconds per photo (one process, one thread): decoding it to the pixels its views need (a
    worker's part), and cutting the views into float32 network inputs (the main process's part with ONNX
    Runtime; torch does that on the GPU). Load-independent, so a GPU box's decode rate is cores / this."""
    from train.image.decode import decode_pixels, network_batch, views_of

    worker = main = 0.0
    for p in photos:
        t0 = time.process_time()
        pixels = decode_pixels(str(p), crops)
        t1 = time.process_time()
        if not isinstance(pixels, str):
            network_batch(views_of(pixels, crops))
        worker += t1 - t0
        main += time.process_time() - t1
    return 1000 * worker / len(photos), 1000 * main / len(photos)


def hashing(photos: list[Path], work: Path) -> dict[str, float]:
    """Photos/s of the SHA-256 keys: first run (every byte read and hashed, the cache written), and a
    rerun (one stat and one cache lookup per photo)."""
    cache = work / "sha.sqlite"
    t0 = time.perf_counter()
    photo_keys(photos, cache)
    t1 = time.perf_counter()
    photo_keys(photos, cache)
    t2 = time.perf_counter()
    size = sum(p.stat().st_size for p in photos) / len(photos)
    return {"photos": len(photos), "mean_kb": round(size / 1024, 1),
            "first_photos_per_s": round(len(photos) / (t1 - t0)),
            "cached_photos_per_s": round(len(photos) / (t2 - t1))}


def child(photos_file: Path, onnx: Path, store_dir: Path) -> None:
    """The killed run: encode every listed photo, printing each progress count."""
    photos = [Path(p) for p in photos_file.read_text().split()]
    keys = photo_keys(photos)
    store = FeatureStore(store_dir, FeatureSpec("bvlc_googlenet", "bench", 1))

    def progress(stage: str, done: int, total: int | None, unit: str) -> None:
        print(done, flush=True)

    encode_missing(store, photos, keys, EncodeConfig(), onnx_path=onnx, module=lambda: None,
                   progress=progress)


def kill_test(photos: list[Path], onnx: Path, work: Path, after: float) -> dict[str, Any]:
    """SIGKILL a run after ``after`` s; what it had encoded, what the store kept, what a rerun says."""
    listing = work / "photos.txt"
    listing.write_text("\n".join(map(str, photos)))
    store_dir = work / "kill-store"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, __file__, "--child", str(listing), str(onnx), str(store_dir)],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                            start_new_session=True)
    time.sleep(after)
    os.killpg(proc.pid, signal.SIGKILL)
    out, _ = proc.communicate()
    counts = [int(x) for x in out.split()]
    encoded = max(counts) if counts else 0
    kept = sum(p.stat().st_size // KEY_BYTES for p in store_dir.glob("*/part-*.keys"))
    store = FeatureStore(store_dir, FeatureSpec("bvlc_googlenet", "bench", 1))
    return {"killed_after_s": after, "photos_encoded_before_kill": encoded, "photos_kept": kept,
            "photos_lost": encoded - kept, "store_parts": len(store.parts())}


def main() -> None:
    """Measure, print one JSON line."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--weights", type=Path, required=False)
    ap.add_argument("--flickr8k", type=Path, required=False)
    ap.add_argument("--photos", type=int, default=1500, help="photos per 1-crop run")
    ap.add_argument("--photos10", type=int, default=200, help="photos per 10-crop run")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--kill-after", type=float, default=75.0)
    ap.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(Path(args.child[0]), Path(args.child[1]), Path(args.child[2]))
        return
    photos = sorted((args.flickr8k / "images").glob("*.jpg"))
    out: dict[str, Any] = {"cores": os.cpu_count(), "load_before": round(os.getloadavg()[0], 2)}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        onnx = work / "features.onnx"
        export_features("bvlc", args.weights, onnx, photos[:8])
        for crops, n in ((1, args.photos), (10, args.photos10)):
            for r in range(args.rounds):
                for decode in ("processes", "threads"):
                    cfg = replace(EncodeConfig(), crops=crops, decode_processes=decode == "processes")
                    got, cpu = rate(photos[:n], onnx, work / f"s-{crops}-{decode}-{r}", cfg)
                    out.setdefault(f"photos_per_s_{crops}crop_{decode}", []).append(round(got, 1))
                    out.setdefault(f"cpu_ms_per_photo_{crops}crop_{decode}", []).append(round(cpu, 1))
        out["hash"] = hashing(photos, work)
        large = work / "large"  # Instagram-sized: 1080 × 1080, JPEG quality 90 (about 140 KB)
        large.mkdir()
        for i, p in enumerate(photos[:100]):
            Image.open(p).convert("RGB").resize((1080, 1080)).save(large / f"{i}.jpg", quality=90)
        for name, sample in (("flickr8k", photos[:300]), ("1080px", sorted(large.glob("*.jpg")))):
            for crops in (1, 10):
                worker, main = decode_cost(sample, crops)
                out[f"decode_cpu_ms_per_photo_{name}_{crops}crop"] = round(worker, 2)
                out[f"views_cpu_ms_per_photo_{name}_{crops}crop"] = round(main, 2)
        if args.kill_after > 0:
            out["kill"] = kill_test(photos[: 20 * args.photos], onnx, work, args.kill_after)
    out["load_after"] = round(os.getloadavg()[0], 2)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
