"""What the image stage trains and validates on: the posts of each split, their cached trunk views and
each view's target, raw (word space) and min-max scaled to [0, 1] with the training targets' range."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from space.errors import SpaceError
from train.image.distributed import DistContext
from train.progress import ProgressCallback
from train.recipes.seed.config import ImageConfig
from train.recipes.seed.regressor import Regressor, scale_targets
from train.recipes.seed.trunk_cache import FeatureCache, cache_key_parts, cache_trunk_features, shared_cache

log = logging.getLogger(__name__)


class TrainingFailed(SpaceError):
    """The regressor cannot be trained on these inputs (no usable image, bad targets)."""

    code = "training_failed"
    status = 500


@dataclass(frozen=True)
class Rows:
    """The cached views one split reads (rows of ``feats``), each with its raw and [0, 1]-scaled target."""

    feats: np.memmap
    rows: np.ndarray
    raw: np.ndarray
    scaled: np.ndarray


def checked_targets(cfg: ImageConfig, images: Sequence[Path], targets: np.ndarray, splits: Sequence[str],
                    view_targets: np.ndarray | None) -> np.ndarray:
    """``targets`` as float32, after checking that the inputs line up."""
    if not (len(images) == len(targets) == len(splits)):
        raise TrainingFailed("images, targets and splits must have the same length")
    targets = np.asarray(targets, dtype=np.float32)
    want = (len(targets), cfg.train_views, targets.shape[1])
    if view_targets is not None and np.shape(view_targets) != want:
        raise TrainingFailed(f"view_targets must be posts × {cfg.train_views} views × {targets.shape[1]}")
    return targets


def split_indices(cfg: ImageConfig, splits: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """The posts that train and the posts that validate."""
    split_arr = np.asarray(splits)
    train_idx = np.flatnonzero(split_arr == "train")
    val_idx = np.flatnonzero(split_arr == "val")
    if len(train_idx) == 0:
        raise TrainingFailed("no training images (split == 'train')")
    if len(val_idx) == 0:
        # Without a validation split, hold out a few training images so "best" still means something.
        rng = np.random.default_rng(cfg.seed)
        held = rng.choice(train_idx, size=max(1, len(train_idx) // 10), replace=False)
        val_idx = np.sort(held)
        train_idx = np.setdiff1d(train_idx, held)
        log.warning("no 'val' split: holding out %d training images for validation", len(val_idx))
    return train_idx, val_idx


def trunk_caches(ctx: DistContext, cfg: ImageConfig, model: Regressor, images: Sequence[Path],
                 train_idx: np.ndarray, val_idx: np.ndarray, weights_dir: Path | None, cache_dir: Path,
                 progress: ProgressCallback | None) -> tuple[FeatureCache, FeatureCache]:
    """The trunk activations of ``cfg.train_views`` random views per training image and of each
    validation image's centre crop (rank 0 computes them, every rank reads them)."""
    key_parts = cache_key_parts(cfg, weights_dir)
    train_cache = shared_cache(ctx, lambda: cache_trunk_features(
        model.backbone, [images[int(i)] for i in train_idx], cfg.train_views, cache_dir, key_parts=key_parts,
        random_views=True, view_seed=cfg.view_seed, batch_size=cfg.feature_batch, progress=progress,
    ))
    val_cache = shared_cache(ctx, lambda: cache_trunk_features(
        model.backbone, [images[int(i)] for i in val_idx], 1, cache_dir, key_parts=key_parts,
        random_views=False, batch_size=cfg.feature_batch, progress=progress, stage="cnn-features-val",
    ))
    return train_cache, val_cache


def training_rows(cfg: ImageConfig, cache: FeatureCache, targets: np.ndarray,
                  view_targets: np.ndarray | None, train_idx: np.ndarray, tmin: np.ndarray,
                  tmax: np.ndarray) -> Rows:
    """Every usable training view, with the target of the image it came from (or its own view target)."""
    views = cfg.train_views
    bad = set(cache.failed)
    rows = np.array([i * views + v for i in range(len(train_idx)) if i not in bad for v in range(views)],
                    dtype=np.int64)
    if len(rows) == 0:
        raise TrainingFailed("no training image could be decoded")
    if view_targets is None:
        raw = targets[train_idx][rows // views]
    else:
        per_view = np.asarray(view_targets, dtype=np.float32)
        raw = per_view[train_idx][rows // views, rows % views]
    return Rows(cache.open(), rows, raw, scale_targets(raw, tmin, tmax))


def validation_rows(cache: FeatureCache, targets: np.ndarray, val_idx: np.ndarray, tmin: np.ndarray,
                    tmax: np.ndarray) -> Rows:
    """Every readable validation image (one view each) with its target."""
    rows = np.array([i for i in range(len(val_idx)) if i not in set(cache.failed)], dtype=np.int64)
    raw = targets[val_idx][rows]
    return Rows(cache.open(), rows, raw, scale_targets(raw, tmin, tmax))
