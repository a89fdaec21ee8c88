"""Data-parallel training (torchrun, 2 CPU ranks, gloo) gives single-process training's weights.

Real Flickr8k images and Word2Vec caption vectors; the 2-rank run builds the shared trunk cache (rank 0
builds, rank 1 waits), the single-process run reuses it, so both train on identical activations.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from tests.train.test_image_model import caption_targets
from train.image.distributed import DistContext, batch_share, gather_order, shard_indices
from train.recipes.seed.config import ImageConfig
from train.recipes.seed.training import train_regressor

ROOT = Path(__file__).resolve().parents[2]
# 7 training rows in batches of 3: shares of 2/1 rows, and a last batch of one row, so rank 1 trains on a
# zero-weight stand-in row there. Both the uneven weighting and the empty share are exercised.
N_TRAIN, N_VAL, BATCH = 7, 4, 3
# fp32 gradients summed in a different order (two ranks' shares, then gloo's allreduce) differ by ~1e-7
# relative; over a few momentum-SGD steps the weights stay within ~3e-7 of each other (measured), while
# training moves them by more than 10× the tolerance (checked below) and a naively split batch's gradient
# is off by far more (test_batch_share_weighting...).
WEIGHT_TOL = 1e-5
LOSS_TOL = 1e-5


def _configs() -> dict[str, ImageConfig]:
    base = ImageConfig.quick_preset(epochs=2, train_views=1, batch_size=BATCH, feature_batch=16)
    # cosine: a mean of per-row terms (weighted shares); contrastive: couples the batch (gathered logits).
    return {"cosine": base, "contrastive": dataclasses.replace(base, loss="contrastive", init="gaussian",
                                                                epochs=1)}


@pytest.fixture(scope="module")
def runs(flickr8k_dir: Path, weights_dir: Path,
         tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[dict, dict]]:
    """For each config: (single-process checkpoint, 2-rank checkpoint)."""
    if shutil.which("torchrun", path=str(Path(sys.executable).parent)) is None:
        pytest.fail("torchrun is not installed next to the interpreter")
    tmp = tmp_path_factory.mktemp("ddp")
    train = (flickr8k_dir / "Flickr_8k.trainImages.txt").read_text().split()[:N_TRAIN]
    val = (flickr8k_dir / "Flickr_8k.devImages.txt").read_text().split()[:N_VAL]
    names = train + val
    images = [flickr8k_dir / "images" / n for n in names]
    targets = caption_targets(flickr8k_dir, names)
    splits = ["train"] * len(train) + ["val"] * len(val)
    np.savez(tmp / "data.npz", targets=targets)
    cfgs = _configs()
    spec = {"data": str(tmp / "data.npz"), "images": [str(p) for p in images], "splits": splits,
            "weights": str(weights_dir), "cache": str(tmp / "cache"),
            "runs": [{"config": c.to_dict(), "work": str(tmp / f"ddp-{k}")} for k, c in cfgs.items()]}
    (tmp / "spec.json").write_text(json.dumps(spec))
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    env["PYTHONPATH"] = str(ROOT)
    proc = subprocess.run(
        [str(Path(sys.executable).parent / "torchrun"), "--standalone", "--nproc_per_node", "2",
         str(ROOT / "tests" / "train" / "ddp_worker.py"), str(tmp / "spec.json")],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "rank 1/2: data-parallel training" in proc.stderr
    out = {}
    for key, cfg in cfgs.items():
        single = train_regressor(cfg, images, targets, splits, weights_dir, tmp / f"one-{key}",
                                 cache_dir=tmp / "cache")
        out[key] = (torch.load(single, weights_only=False),
                    torch.load(tmp / f"ddp-{key}" / "image_best.pt", weights_only=False))
    # One trunk cache per split, built once (by rank 0) and reused by the single-process runs.
    assert len(list((tmp / "cache").glob("trunk-*.f16"))) == 2
    return out


@pytest.fixture(scope="module")
def pretrained_head(weights_dir: Path) -> dict[str, torch.Tensor]:
    """The ImageNet weights of the trained inception blocks, before any training."""
    from train.image.googlenet import build_backbone

    fresh = build_backbone("bvlc", weights_dir, pretrained=True).state_dict()
    return {k: v for k, v in fresh.items() if k.split(".")[1:2] in (["4e"], ["5a"], ["5b"])}


@pytest.mark.parametrize("loss", ["cosine", "contrastive"])
def test_two_ranks_match_one_process(runs: dict[str, tuple[dict, dict]], loss: str,
                                     pretrained_head: dict[str, torch.Tensor]) -> None:
    one, two = runs[loss]
    assert one["world_size"] == 1 and two["world_size"] == 2
    assert one["epoch"] == two["epoch"]
    for a, b in zip(one["history"], two["history"], strict=True):
        assert a.keys() == b.keys()
        for k in ("val_loss", "train_loss"):
            if k in a:
                assert abs(a[k] - b[k]) <= LOSS_TOL, (k, a, b)
    diffs = {k: float((one["model"][k] - two["model"][k]).abs().max()) for k in one["model"]}
    worst = max(diffs, key=diffs.__getitem__)
    assert diffs[worst] <= WEIGHT_TOL, (worst, diffs[worst])
    # Training moved the weights far beyond the tolerance, so the comparison is not between two starts.
    moved = max(float((one["model"][f"backbone.{k}"] - v).abs().max()) for k, v in pretrained_head.items())
    assert moved > 10 * WEIGHT_TOL, moved


def _grads(model: nn.Module, x: torch.Tensor, y: torch.Tensor, scale: float) -> list[torch.Tensor]:
    model.zero_grad()
    (nn.functional.mse_loss(model(x), y) * scale).backward()
    return [p.grad.clone() for p in model.parameters() if p.grad is not None]


@pytest.mark.parametrize("world", [1, 2, 3, 4])
def test_batch_share_weighting_gives_the_full_batch_gradient(world: int) -> None:
    torch.manual_seed(0)
    model = nn.Linear(5, 3)
    for n in range(1, 10):
        x, y = torch.randn(n, 5), torch.randn(n, 3)
        full = _grads(model, x, y, 1.0)
        total = [torch.zeros_like(g) for g in full]
        shares = []
        for rank in range(world):
            pos, weight = batch_share(n, DistContext(rank=rank, world_size=world))
            shares.append(pos)
            if len(pos) == 0:
                assert weight == 0.0
                continue
            for t, g in zip(total, _grads(model, x[pos], y[pos], weight), strict=True):
                t += g / world  # what DDP's allreduce-average does
        assert sorted(np.concatenate(shares).tolist()) == list(range(n))
        for t, g in zip(total, full, strict=True):
            torch.testing.assert_close(t, g, rtol=1e-5, atol=1e-6)
        if world > 1 and n % world:
            # The naive split (every rank's plain mean, averaged) is wrong on uneven shares.
            naive = [torch.zeros_like(g) for g in full]
            for rank in range(world):
                pos = shard_indices(n, DistContext(rank=rank, world_size=world))
                if len(pos):
                    for t, g in zip(naive, _grads(model, x[pos], y[pos], 1.0), strict=True):
                        t += g / world
            pairs = zip(naive, full, strict=True)
            assert any(not torch.allclose(t, g, rtol=1e-3, atol=1e-5) for t, g in pairs)


@pytest.mark.parametrize("world", [1, 2, 3, 5])
def test_gather_order_restores_the_batch(world: int) -> None:
    for n in range(1, 12):
        m = -(-n // world)
        parts = []
        for rank in range(world):
            pos = shard_indices(n, DistContext(rank=rank, world_size=world))
            parts.append(np.concatenate([pos, np.full(m - len(pos), -1)]))
        assert np.concatenate(parts)[gather_order(n, world)].tolist() == list(range(n))
