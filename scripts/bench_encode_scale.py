"""Encoding throughput: one process against torchrun-launched ranks on the same images, same machine.

    python scripts/bench_encode_scale.py --onnx BUNDLE/image_encoder.onnx \\
        --flickr8k ../shared/data/flickr8k \\
        --images 1000 --ranks 1 2

Each run is the real command (``python -m train.image.encode_dist`` for one process, ``torchrun
--standalone --nproc_per_node R -m train.image.encode_dist`` for R ranks) into a fresh folder; the table
shows the command's wall time (start-up and merge included), the encoding time inside it and images/s, and
checks the merged vectors of every run equal the first run's. The last stdout line is JSON.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def run_once(onnx: Path, listing: Path, out: Path, ranks: int, extra: list[str]) -> dict[str, Any]:
    """Run one encoding command; return its summary with the command's wall time added."""
    launcher = [sys.executable, "-m", "train.image.encode_dist"] if ranks == 1 else [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(ranks),
        "-m", "train.image.encode_dist"]
    cmd = [*launcher, "--onnx", str(onnx), "--images", str(listing), "--out", str(out), *extra]
    started = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - started
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{proc.stderr[-3000:]}")
    summary: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    summary["wall_seconds"] = round(wall, 2)
    summary["encode_seconds"] = round(max(r["seconds"] for r in summary["ranks"]), 2)
    return summary


def main() -> int:
    """Write the image list, run each configuration once, print the table and a JSON line."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--onnx", type=Path, required=True)
    p.add_argument("--flickr8k", type=Path, required=True)
    p.add_argument("--images", type=int, default=1000)
    p.add_argument("--ranks", type=int, nargs="+", default=[1, 2])
    p.add_argument("--chunk-size", type=int, default=256)
    args = p.parse_args()
    images = sorted((args.flickr8k / "images").glob("*.jpg"))[:args.images]
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="bench-encode-") as tmp:
        listing = Path(tmp) / "images.txt"
        listing.write_text("".join(f"{p.resolve()}\n" for p in images), encoding="utf-8")
        reference: np.ndarray | None = None
        for ranks in args.ranks:
            out = Path(tmp) / f"ranks-{ranks}"
            summary = run_once(args.onnx, listing, out, ranks, ["--chunk-size", str(args.chunk_size)])
            vectors = np.load(out / "images.npy")
            reference = vectors if reference is None else reference
            rows.append({
                "ranks": ranks, "images": summary["images"], "wall_s": summary["wall_seconds"],
                "encode_s": summary["encode_seconds"], "merge_s": summary["merge_seconds"],
                "img_per_s_wall": round(summary["images"] / summary["wall_seconds"], 2),
                "img_per_s_encode": round(summary["images"] / summary["encode_seconds"], 2),
                "threads_per_rank": summary["encode"]["threads"],
                "max_abs_diff_vs_first": float(np.abs(vectors - reference).max()),
            })
            print(f"{ranks} rank(s): {rows[-1]}", file=sys.stderr, flush=True)
    print("| ranks | images | wall s | encode s | img/s (wall) | img/s (encode) | max diff vs 1st |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['ranks']} | {r['images']} | {r['wall_s']} | {r['encode_s']} | {r['img_per_s_wall']} | "
              f"{r['img_per_s_encode']} | {r['max_abs_diff_vs_first']:.1e} |")
    print(json.dumps({"runs": rows}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
