"""Head-training throughput of the CNN stage: one process against ``torchrun`` ranks on this machine.

    python scripts/bench_ddp.py --flickr8k ../shared/data/flickr8k --weights ../shared/weights/bvlc_googlenet

Both runs train the same regressor (quick preset, one cached view per image) on the same trunk cache, built
first and not timed; the figure is training views per second in the last epoch (validation included).
Targets are random vectors: the loop's cost does not depend on them.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def _worker(spec_path: Path, work: Path) -> int:
    """One training run (under torchrun: this rank's part of it)."""
    from train.recipes.seed.config import ImageConfig
    from train.recipes.seed.regressor import read_checkpoint
    from train.recipes.seed.training import train_regressor

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    spec = json.loads(spec_path.read_text())
    cfg = ImageConfig(**spec["config"])
    path = train_regressor(cfg, [Path(p) for p in spec["images"]], np.load(spec["targets"]), spec["splits"],
                           Path(spec["weights"]), work, cache_dir=Path(spec["cache"]))
    if int(os.environ.get("RANK", "0")) == 0:
        ckpt = read_checkpoint(path)
        views, seconds = ckpt["n_train_views"], ckpt["history"][-1]["seconds"]
        print(json.dumps({"world_size": ckpt["world_size"], "views": views, "seconds": seconds,
                          "views_per_s": views / seconds}))
    return 0


def main() -> int:
    """Build the cache, then time one process and ``--nproc`` ranks; print both."""
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--flickr8k", type=Path, default=ROOT.parent / "shared" / "data" / "flickr8k")
    parser.add_argument("--weights", type=Path, default=ROOT.parent / "shared" / "weights" / "bvlc_googlenet")
    parser.add_argument("--images", type=int, default=96)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--nproc", type=int, default=2)
    parser.add_argument("--work", type=Path, default=Path("/tmp/bench-ddp"))
    parser.add_argument("--worker", nargs=2, metavar=("SPEC", "WORK"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return _worker(Path(args.worker[0]), Path(args.worker[1]))

    from train.recipes.seed.config import ImageConfig

    names = (args.flickr8k / "Flickr_8k.trainImages.txt").read_text().split()[: args.images]
    val = (args.flickr8k / "Flickr_8k.devImages.txt").read_text().split()[:8]
    args.work.mkdir(parents=True, exist_ok=True)
    targets = np.random.default_rng(0).normal(size=(len(names) + len(val), 300)).astype(np.float32)
    np.save(args.work / "targets.npy", targets)
    cfg = ImageConfig.quick_preset(epochs=args.epochs, train_views=1, batch_size=args.batch)
    spec = {"config": cfg.to_dict(), "images": [str(args.flickr8k / "images" / n) for n in names + val],
            "targets": str(args.work / "targets.npy"), "splits": ["train"] * len(names) + ["val"] * len(val),
            "weights": str(args.weights), "cache": str(args.work / "cache")}
    (args.work / "spec.json").write_text(json.dumps(spec))
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    me = [str(Path(__file__).resolve()), "--worker", str(args.work / "spec.json")]
    # Warm-up: builds the trunk cache (one epoch, not reported).
    warm = replace(cfg, epochs=1)
    (args.work / "warm.json").write_text(json.dumps({**spec, "config": warm.to_dict()}))
    subprocess.run([sys.executable, me[0], "--worker", str(args.work / "warm.json"), str(args.work / "w0")],
                   check=True, env=env, capture_output=True)
    results = []
    torchrun = [str(Path(sys.executable).parent / "torchrun"), "--standalone", "--nproc_per_node",
                str(args.nproc)]
    for label, cmd in [
        ("1 process", [sys.executable, *me, str(args.work / "single")]),
        (f"{args.nproc} ranks (torchrun, gloo)", [*torchrun, *me, str(args.work / "ddp")]),
    ]:
        out = subprocess.run(cmd, check=True, env=env, capture_output=True, text=True).stdout
        row = json.loads([ln for ln in out.splitlines() if ln.startswith("{")][-1])
        results.append((label, row))
        print(f"{label:28s} {row['views']:5d} views  {row['seconds']:7.2f} s/epoch  "
              f"{row['views_per_s']:7.1f} images/s", flush=True)
    print(json.dumps({"cpu_count": os.cpu_count(), "batch": args.batch, "results": dict(results)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
