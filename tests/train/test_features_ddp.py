"""Features on several processes (issue 26, item 5): `torchrun -m train all` shares the joint recipe's
features stage across ranks, and `torchrun -m train.image.encode_dist` writes the `--features` format.

Two CPU ranks (gloo) on real Flickr8k photos: each encodes its share into the feature store, rank 0 merges
them (and, for `train all`, trains the rest); the features equal one process's within 1e-5.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.train.test_feature_store import N_EN, _args, _config, _features, corpus  # noqa: F401
from train.image.photokeys import file_sha256
from train.recipes.joint.recipe import FEATURES_FILE, STORE_DIR

ROOT = Path(__file__).resolve().parents[2]
TOL = 1e-5


def _torchrun() -> str:
    found = shutil.which("torchrun", path=str(Path(sys.executable).parent))
    if found is None:
        pytest.fail("torchrun is not installed next to the interpreter")
    return found


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    env["PYTHONPATH"] = str(ROOT)
    return env


@pytest.fixture(scope="module")
def single(corpus: Path, weights_dir: Path,  # noqa: F811
           tmp_path_factory: pytest.TempPathFactory) -> tuple[np.ndarray, list[Path]]:
    """One process's features of the English posts, and their photos."""
    work = tmp_path_factory.mktemp("one") / "work"
    feats, failed, posts = _features(_config(_args(corpus, work, weights_dir, "--languages", "en")))
    assert failed == [] and len(posts) == N_EN
    assert float(np.abs(feats).max()) > 1.0  # real features, not zeros
    return feats, [p.image for p in posts]


def test_two_ranks_share_the_features_of_train_all(corpus: Path, weights_dir: Path,  # noqa: F811
                                                   tmp_path: Path,
                                                   single: tuple[np.ndarray, list[Path]]) -> None:
    work = tmp_path / "ddp-work"
    args = _args(corpus, work, weights_dir, "--languages", "en", "--joint-set", "epochs=1")
    proc = subprocess.run([_torchrun(), "--standalone", "--nproc_per_node", "2", "-m", "train", *args],
                          cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert proc.stdout.strip().splitlines()[-1].startswith(str(tmp_path / "models"))  # rank 0 published
    shares = [line for line in proc.stderr.splitlines() if "to encode (" in line]
    assert len(shares) == 2, shares  # both ranks encoded a share: 20 photos each
    for rank in (0, 1):
        assert any(f"(20 on rank {rank} of 2)" in line for line in shares), shares
    writers = {p.name.split("-")[1] for p in (work / STORE_DIR).glob("*/part-*.keys")}
    assert writers == {"r0", "r1"}
    merged = np.load(next(work.glob(f"features-[0-9a-f]*/{FEATURES_FILE}")))
    assert merged.shape == single[0].shape == (N_EN, 2688)  # the default: pool4's, 5a's and 5b's means
    assert float(np.abs(merged - single[0]).max()) <= TOL


def test_encode_dist_writes_the_features_folder_on_two_ranks(weights_dir: Path, tmp_path: Path,
                                                             single: tuple[np.ndarray, list[Path]]) -> None:
    feats, photos = single
    listing = tmp_path / "photos.txt"
    listing.write_text("".join(f"{p}\n" for p in photos))
    out = tmp_path / "features"
    cmd = [_torchrun(), "--standalone", "--nproc_per_node", "2", "-m", "train.image.encode_dist",
           "--weights", str(weights_dir), "--images", str(listing), "--out", str(out), "--encode-crops", "1"]
    proc = subprocess.run(cmd, cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    meta = json.loads((out / "meta.json").read_text())
    assert meta == {"backbone": "bvlc_googlenet", "crops": 1, "dim": 2688, "levels": ["pool4", "5a", "5b"],
                    "framing": "whole"}
    keys = (out / "keys.txt").read_text().split()
    rows = np.load(out / "features.npy")
    assert rows.dtype == np.float32 and rows.shape == (N_EN, 2688)
    by_key = dict(zip(keys, rows, strict=True))
    for photo, expected in zip(photos, feats, strict=True):
        assert float(np.abs(by_key[file_sha256(photo).hex()] - expected).max()) <= TOL
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    assert summary["world_size"] == 2 and summary["encoded"] == N_EN and summary["rows"] == N_EN
