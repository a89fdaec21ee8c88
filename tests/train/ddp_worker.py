"""Run ``train_regressor`` for each config of a spec file (test_ddp.py launches it by torchrun)."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

import numpy as np

from train.image.distributed import process_group
from train.recipes.seed.config import ImageConfig
from train.recipes.seed.training import train_regressor


def main(spec_path: str) -> int:
    """Train every ``runs`` entry of the spec (same images/targets/splits) into its own work folder."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    spec = json.loads(Path(spec_path).read_text())
    data = np.load(spec["data"])
    images = [Path(p) for p in spec["images"]]
    # One process group for all the runs, as `train all` holds one (train_regressor joins it, not a new one).
    with process_group():
        for run in spec["runs"]:
            train_regressor(ImageConfig(**run["config"]), images, data["targets"], spec["splits"],
                            Path(spec["weights"]), Path(run["work"]), cache_dir=Path(spec["cache"]))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
