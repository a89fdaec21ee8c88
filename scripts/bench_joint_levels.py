"""What the levels features cost the joint stage: `train_joint` on the same posts with 5b's 1,024 features
(the recipe before levels: dropout 0.2) and with the means of pool4, 5a and 5b (2,688, dropout 0.4:
today's default), in one process, rounds alternating, so both see the same machine load.

    python scripts/bench_joint_levels.py [--rounds 2] [--epochs 2] [--threads 1] -- \
        --corpus ../shared/data/flickr8k --format flickr8k --weights ../shared/weights/bvlc_googlenet \
        --models var/quick --quick

The arguments after ``--`` are ``train all``'s (default levels); its text side and features stage are run
or reused from its work folder (a finished `train all` with them costs nothing here). 5b's features are
the last 1,024 columns of the levels features (the same numbers: tests/train/test_levels.py). Prints one
JSON line: each recipe's seconds per epoch (median over the rounds), the validation image-search R@10 of
its last epoch, and the machine's load average before and after.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import sys
import time
from dataclasses import replace
from typing import Any

import numpy as np

from train.__main__ import build_parser, pipeline_config
from train.pipeline import Pipeline
from train.recipes.joint.model import JointConfig, train_joint
from train.recipes.joint.recipe import JointRecipe


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit status."""
    argv = sys.argv[1:] if argv is None else argv
    cut = argv.index("--") if "--" in argv else len(argv)
    ours, train_args = argv[:cut], argv[cut + 1 :]
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1, help="torch threads (1: steadier on a shared machine)")
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
    load.append(os.getloadavg()[0])
    print(json.dumps({"posts": len(text.posts), "epochs": args.epochs, "threads": args.threads,
                      "seconds_per_epoch": {k: round(statistics.median(v), 2) for k, v in seconds.items()},
                      "val_r10_last_epoch": last_r10, "load": [round(x, 2) for x in load]}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
