"""`torchrun -m train all` shares the joint recipe's features stage across ranks (issue 26, item 5).

Two CPU ranks (gloo) on real Flickr8k photos: each encodes its share of the photos into the feature
store, rank 0 merges them and trains the rest; the merged features equal one process's within 1e-5.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.train.test_feature_store import N_EN, _args, _config, _features, corpus  # noqa: F401
from train.recipes.joint.recipe import FEATURES_FILE, STORE_DIR

ROOT = Path(__file__).resolve().parents[2]


def test_two_ranks_share_the_features_and_equal_one_process(corpus: Path,  # noqa: F811
                                                             weights_dir: Path, tmp_path: Path) -> None:
    torchrun = shutil.which("torchrun", path=str(Path(sys.executable).parent))
    if torchrun is None:
        pytest.fail("torchrun is not installed next to the interpreter")
    work = tmp_path / "ddp-work"
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    env["PYTHONPATH"] = str(ROOT)
    args = _args(corpus, work, weights_dir, "--languages", "en", "--joint-set", "epochs=1")
    proc = subprocess.run([torchrun, "--standalone", "--nproc_per_node", "2", "-m", "train", *args],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert proc.stdout.strip().splitlines()[-1].startswith(str(tmp_path / "models"))  # rank 0 published
    shares = [line for line in proc.stderr.splitlines() if "to encode (" in line]
    assert len(shares) == 2, shares  # both ranks encoded a share: 20 photos each
    for rank in (0, 1):
        assert any(f"(20 on rank {rank} of 2)" in line for line in shares), shares
    writers = {p.name.split("-")[1] for p in (work / STORE_DIR).glob("*/part-*.keys")}
    assert writers == {"r0", "r1"}
    merged = np.load(next(work.glob(f"features-[0-9a-f]*/{FEATURES_FILE}")))

    single, failed, posts = _features(_config(_args(corpus, tmp_path / "one-work", weights_dir,
                                                    "--languages", "en")))
    assert failed == [] and len(posts) == N_EN
    assert merged.shape == single.shape == (N_EN, 1024)
    assert float(np.abs(merged - single).max()) <= 1e-5
    assert float(np.abs(single).max()) > 1.0  # real features, not zeros
