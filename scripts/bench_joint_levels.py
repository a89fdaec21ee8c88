"""What the levels features cost: the joint stage, `train_joint` on the same posts with 5b's 1,024 features
(the recipe before levels: dropout 0.2) and with the means of pool4, 5a and 5b (2,688, dropout 0.4:
today's default), and with ``--photos N`` the features stage's network (both exported graphs through
ONNX Runtime on the first N photos, one crop); in one process, rounds alternating, so both see the same
machine load.

    python scripts/bench_joint_levels.py [--rounds 2] [--epochs 2] [--threads 1] [--photos 0] -- \
        --corpus ../shared/data/flickr8k --format flickr8k --weights ../shared/weights/bvlc_googlenet \
        --models var/quick --quick

The arguments after ``--`` are ``train all``'s (default levels); its text side and features stage are run
or reused from its work folder (a finished `train all` with them costs nothing here). 5b's features are
the last 1,024 columns of the levels features (the same numbers: tests/train/test_levels.py). Prints one
JSON line: each recipe's seconds per epoch (median over the rounds), the validation image-search R@10 of
its last epoch, milliseconds per photo of each graph (median), and the load average before and after.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from train.__main__ import build_parser, pipeline_config
from train.config import PipelineConfig
from train.image.features import POOL5
from train.pipeline import Pipeline
from train.recipes.joint.model import JointConfig, train_joint
from train.recipes.joint.recipe import JointRecipe


def graph_ms(cfg: PipelineConfig, photos: list[Path], rounds: int) -> dict[str, float]:
    """Median milliseconds per photo of the 5b graph and the levels graph, encoding ``photos`` (one crop)."""
    from train.image.encode import encode_images
    from train.image.export import export_features

    graphs: dict[str, Path] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, levels in (("5b", POOL5), ("pool4+5a+5b", cfg.levels)):
            graphs[name] = Path(tmp) / f"{name}.onnx"
            export_features(cfg.backbone, cfg.weights, graphs[name], photos[:2], levels)
        times: dict[str, list[float]] = {name: [] for name in graphs}
        for _ in range(rounds):
            for name, onnx in graphs.items():
                started = time.monotonic()
                encode_images(onnx, photos, crops=1)
                times[name].append(1000 * (time.monotonic() - started) / len(photos))
    return {k: round(statistics.median(v), 1) for k, v in times.items()}


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit status."""
    argv = sys.argv[1:] if argv is None else argv
    cut = argv.index("--") if "--" in argv else len(argv)
    ours, train_args = argv[:cut], argv[cut + 1 :]
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1, help="torch threads (1: steadier on a shared machine)")
    ap.add_argument("--photos", type=int, default=0, help="also time both features graphs on N photos")
    args = ap.parse_args(ours)
    if not train_args:
        ap.error("give train all's arguments after --")
    logging.basicConfig(level=logging.WARNING)
    cfg = pipeline_config(build_parser().parse_args(["all", *train_args]))
    pipe = Pipeline(cfg)
    text = pipe._through_text().text
    _, features, failed = JointRecipe(pipe).features(text.posts)
    usable = np.ones(len(text.posts), bool)
    usable[list(failed)] = False
    recipes: dict[str, tuple[JointConfig, np.ndarray]] = {
        "5b (1,024; dropout 0.2)": (replace(cfg.joint, dropout=0.2),
                                           np.ascontiguousarray(features[:, -1024:])),
        "pool4+5a+5b (2,688; dropout 0.4)": (cfg.joint, features),
    }
    seconds: dict[str, list[float]] = {name: [] for name in recipes}
    last_r10: dict[str, Any] = {}
    load = [os.getloadavg()[0]]
    for _ in range(args.rounds):
        for name, (joint, feats) in recipes.items():
            run = replace(joint, epochs=args.epochs, num_threads=args.threads)
            started = time.monotonic()
            model = train_joint(run, feats, text.posts, text.space, usable, device="cpu")
            seconds[name].append((time.monotonic() - started) / args.epochs)
            last_r10[name] = model.history[-1].get("val_r10")
    photos = [Path(p.image) for p in text.posts[: args.photos]]
    per_photo = graph_ms(cfg, photos, args.rounds) if photos else {}
    load.append(os.getloadavg()[0])
    print(json.dumps({"features_ms_per_photo": per_photo, "posts": len(text.posts), "epochs": args.epochs,
                      "threads": args.threads,
                      "seconds_per_epoch": {k: round(statistics.median(v), 2) for k, v in seconds.items()},
                      "val_r10_last_epoch": last_r10, "load": [round(x, 2) for x in load]}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
