"""The image side of training: GoogLeNet fine-tuned to regress images onto their caption vectors.

Seed-faithful recipe (the original system): the ImageNet GoogLeNet with a new linear layer from the
1,024 pooled features to the word space; conv1 … inception_4d frozen, inception_4e/5a/5b and the new layer
trained with sigmoid cross-entropy against caption vectors min-max scaled to [0, 1] **per dimension**;
SGD lr 0.001, momentum 0.9, weight decay 2e-4, batch 120; random 224 crops of the 256-resized image with
mirroring; validation loss each epoch, best checkpoint kept.

To train on a 2-core CPU the frozen trunk runs once: its inception_4d activations (528×14×14, fp16) for a
fixed number of random crop/mirror views per image are cached in a ``np.memmap`` under ``work_dir``, keyed
by the weights, the image list and the view recipe, and reused across epochs and runs (on CPU the trunk
runs through ONNX Runtime, about 2.9× faster than torch eager).

Under ``torchrun`` the head trains data-parallel (DistributedDataParallel: gloo on CPU, NCCL on GPUs): rank 0
builds the trunk cache while the others wait, every rank draws the same permutation and dropout masks, and
each takes a strided share of every global batch, weighted so the averaged gradient is the one-process
gradient (the contrastive loss, which couples a batch's rows, gathers the logits instead); rank 0 alone
validates and writes the checkpoint. Two CPU ranks match one process to ~3e-7 (tests/train/test_ddp.py).

Other options (never the default): ``loss="cosine"`` (1 − cosine in the word space after subtracting the
mean training target), ``schedule="cosine"``, ``init="ridge"`` (the new layer starts from a closed-form
ridge fit). The quick preset uses the ridge start and the cosine loss: with a few hundred images and a few
epochs, the seed recipe barely leaves its random start.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import nn
from tqdm import tqdm

from space.errors import SpaceError
from space.images import CROP, center_crop, open_image, resize_short_side, to_network_input
from space.ort import open_session
from train.distributed import (
    DistContext,
    all_reduce_sum,
    barrier,
    batch_share,
    broadcast_floats,
    device_for,
    gather_order,
    process_group,
)
from train.googlenet import FEATURE_DIM, TRUNK_SHAPE, build_backbone, weights_fingerprint
from train.progress import ProgressCallback, throttled

log = logging.getLogger(__name__)

CHECKPOINT_NAME = "image_best.pt"
LAST_CHECKPOINT_NAME = "image_last.pt"


class TrainingFailed(SpaceError):
    """The regressor cannot be trained on these inputs (no usable image, bad targets)."""

    code = "training_failed"
    status = 500


@dataclass(frozen=True)
class ImageConfig:
    """How the image regressor is trained; defaults are the seed-faithful recipe."""

    backbone: str = "bvlc"  # "bvlc" (local Caffe weights) or "torchvision" (downloads ImageNet weights)
    # "bce": sigmoid cross-entropy on [0,1]-scaled targets; "cosine": 1 − cos in word space;
    # "contrastive": symmetric in-batch InfoNCE between centred outputs and centred caption vectors.
    loss: str = "bce"
    temperature: float = 0.05  # the contrastive loss's softmax temperature
    # Serve centred: the bundle carries the mean training image and caption vectors (space.centering),
    # subtracted before cosine ranking (Flickr8k 1K test, ridge-cosine: annotation R@10 28.6 → 30.6).
    centre: bool = True
    lr: float = 0.001
    momentum: float = 0.9
    weight_decay: float = 2e-4
    batch_size: int = 120
    epochs: int = 4  # with 4 cached views per image: ~16 passes over each image, within ~60 min on 2 cores
    schedule: str = "constant"  # or "cosine"
    dropout: float = 0.4  # GoogLeNet's dropout before the classifier, kept before the new layer
    train_views: int = 4  # cached random crop/mirror views per training image
    view_seed: int = 0
    seed: int = 0
    feature_batch: int = 32
    max_train_minutes: float | None = None  # stop after the epoch that crosses this budget
    num_threads: int | None = None  # None: all cores
    # "ridge": closed-form ridge fit of the new layer on the frozen head's pooled features (logit space), so
    # training starts from a useful map; "gaussian": N(0, 0.01) like Caffe's new layers. The seed recipe
    # names no initialisation: from noise its 4 epochs leave every output at the mean caption vector
    # (Flickr8k image search R@10 4.9, chance); from the ridge map the same recipe gives 37.9 (README).
    init: str = "ridge"
    ridge_alpha: float = 1.0
    quick: bool = False

    @classmethod
    def quick_preset(cls, **overrides: Any) -> ImageConfig:
        """Settings for a few hundred images in a few minutes on a CPU."""
        base = cls(quick=True, epochs=4, train_views=2, batch_size=32, lr=0.01, init="ridge", loss="cosine")
        return replace(base, **overrides)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict (stored in checkpoints and manifests)."""
        return asdict(self)


class Regressor(nn.Module):
    """Backbone + new linear layer; ``forward`` maps network inputs to word-space vectors."""

    def __init__(self, backbone: nn.Module, dim: int, tmin: np.ndarray, tmax: np.ndarray,
                 dropout: float) -> None:
        super().__init__()
        self.backbone = backbone
        self.dropout = nn.Dropout(dropout)
        self.proj = nn.Linear(FEATURE_DIM, dim)
        nn.init.normal_(self.proj.weight, std=0.01)
        nn.init.zeros_(self.proj.bias)
        span = np.maximum(tmax - tmin, 1e-6).astype(np.float32)
        self.tmin: torch.Tensor
        self.tspan: torch.Tensor
        self.register_buffer("tmin", torch.from_numpy(tmin.astype(np.float32)))
        self.register_buffer("tspan", torch.from_numpy(span))

    def logits_from_trunk(self, feats: torch.Tensor) -> torch.Tensor:
        """Scaled-space logits from cached inception_4d activations."""
        return self.proj(self.dropout(self.backbone.head(feats)))  # type: ignore[operator]

    def to_word_space(self, logits: torch.Tensor) -> torch.Tensor:
        """Undo the [0, 1] min-max scaling: sigmoid, then the per-dimension affine map."""
        return torch.sigmoid(logits) * self.tspan + self.tmin

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, 224, 224) network inputs → (B, D) word-space vectors."""
        return self.to_word_space(self.logits_from_trunk(self.backbone.trunk(images)))  # type: ignore[operator]


def build_regressor(cfg: ImageConfig, weights_dir: Path | None, dim: int, tmin: np.ndarray,
                    tmax: np.ndarray) -> Regressor:
    """A fresh regressor (backbone weights loaded when ``weights_dir`` is given)."""
    backbone = build_backbone(cfg.backbone, weights_dir, pretrained=weights_dir is not None)
    return Regressor(backbone, dim, tmin, tmax, cfg.dropout)


def load_checkpoint(path: Path) -> tuple[Regressor, dict[str, Any]]:
    """Rebuild the regressor stored in ``path`` (eval mode) and return it with the checkpoint dict."""
    ckpt = torch.load(path, map_location="cpu", weights_only=False)
    cfg = ImageConfig(**ckpt["config"])
    tmin, tmax = np.asarray(ckpt["target_min"]), np.asarray(ckpt["target_max"])
    backbone = build_backbone(cfg.backbone, None, pretrained=False)
    model = Regressor(backbone, int(ckpt["dim"]), tmin, tmax, cfg.dropout)
    model.load_state_dict(ckpt["model"])
    return model.eval(), ckpt


def _view(img: Image.Image, rng: np.random.Generator | None) -> np.ndarray:
    """A random 224 crop (mirrored half the time) of the 256-resized image, or the centre crop."""
    img = resize_short_side(img)
    if rng is None:
        return to_network_input(center_crop(img))
    w, h = img.size
    left, top = int(rng.integers(0, w - CROP + 1)), int(rng.integers(0, h - CROP + 1))
    img = img.crop((left, top, left + CROP, top + CROP))
    if rng.random() < 0.5:
        img = img.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    return to_network_input(img)


@dataclass(frozen=True)
class FeatureCache:
    """Cached trunk activations: row ``i * views + v`` is view ``v`` of image ``i``."""

    path: Path
    n_images: int
    views: int
    failed: tuple[int, ...]

    def open(self) -> np.memmap:
        """The activations, read-only, shape (n_images * views, 528, 14, 14), fp16."""
        shape = (self.n_images * self.views, *TRUNK_SHAPE)
        return np.memmap(self.path, dtype=np.float16, mode="r", shape=shape)


def _device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


class _Trunk(nn.Module):
    """The backbone's trunk as a plain module (for ONNX export)."""

    def __init__(self, backbone: nn.Module) -> None:
        super().__init__()
        self.backbone = backbone

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Network inputs → trunk activations."""
        return self.backbone.trunk(x)  # type: ignore[operator]


def _trunk_runner(backbone: nn.Module, device: torch.device,
                  onnx_path: Path) -> Callable[[np.ndarray], np.ndarray]:
    """A function computing trunk activations: ONNX Runtime on CPU (about 2.5× torch eager), torch on CUDA."""
    if device.type == "cuda":

        def run_torch(x: np.ndarray) -> np.ndarray:
            with torch.no_grad(), torch.autocast("cuda"):
                out = backbone.trunk(torch.from_numpy(x).to(device))  # type: ignore[operator]
            return out.float().cpu().numpy()

        return run_torch
    tmp = onnx_path.with_suffix(".partial.onnx")
    with torch.no_grad():
        torch.onnx.export(_Trunk(backbone).eval(), (torch.zeros(1, 3, CROP, CROP),), str(tmp),
                          input_names=["images"], output_names=["trunk"],
                          dynamic_axes={"images": {0: "batch"}, "trunk": {0: "batch"}}, opset_version=17,
                          dynamo=False)
    os.replace(tmp, onnx_path)
    session = open_session(onnx_path)

    def run_ort(x: np.ndarray) -> np.ndarray:
        return session.run(["trunk"], {"images": x})[0]

    return run_ort


def cache_trunk_features(
    backbone: nn.Module,
    images: Sequence[Path],
    views: int,
    work_dir: Path,
    *,
    key_parts: Sequence[str],
    random_views: bool,
    view_seed: int = 0,
    batch_size: int = 32,
    progress: ProgressCallback | None = None,
    stage: str = "cnn-features",
) -> FeatureCache:
    """Compute (or reuse) the trunk activations of ``views`` views per image; failures stay zero."""
    key_src = json.dumps([list(key_parts), [str(p) for p in images], views, random_views, view_seed])
    key = hashlib.sha256(key_src.encode()).hexdigest()[:20]
    path = work_dir / f"trunk-{key}.f16"
    meta_path = path.with_suffix(".json")
    if path.is_file() and meta_path.is_file():
        meta = json.loads(meta_path.read_text())
        log.info("reusing cached trunk features %s (%d views)", path.name, len(images) * views)
        return FeatureCache(path, len(images), views, tuple(meta["failed"]))
    work_dir.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".partial")
    total = len(images) * views
    mm = np.memmap(tmp, dtype=np.float16, mode="w+", shape=(max(total, 1), *TRUNK_SHAPE))
    device = _device()
    backbone = backbone.to(device).eval()
    run_trunk = _trunk_runner(backbone, device, work_dir / f"trunk-{key}.onnx")
    report = throttled(progress)
    failed: list[int] = []
    rows: list[np.ndarray] = []
    row_ids: list[int] = []
    started = time.monotonic()

    def flush() -> None:
        if not rows:
            return
        out_np = run_trunk(np.stack(rows)).astype(np.float16)
        for j, r in enumerate(row_ids):
            mm[r] = out_np[j]
        rows.clear()
        row_ids.clear()

    bar = tqdm(total=total, desc=stage, unit="view", mininterval=1.0)
    for i, p in enumerate(images):
        try:
            img = open_image(p)
        except SpaceError as exc:
            log.warning("cannot read %s: %s", p, exc)
            failed.append(i)
            mm[i * views : (i + 1) * views] = 0
            bar.update(views)
            continue
        for v in range(views):
            rng = np.random.default_rng([view_seed, i, v]) if random_views else None
            rows.append(_view(img, rng))
            row_ids.append(i * views + v)
        if len(rows) >= batch_size:
            flush()
        bar.update(views)
        done = (i + 1) * views
        bar.set_postfix(img_s=f"{(i + 1) / max(time.monotonic() - started, 1e-6):.1f}", refresh=False)
        if report:
            report(stage, done, total, "views")
    flush()
    bar.close()
    mm.flush()
    os.replace(tmp, path)
    meta_path.write_text(json.dumps({"failed": failed, "n_images": len(images), "views": views}))
    log.info("cached %d trunk views in %.0fs (%d failed images)", total, time.monotonic() - started,
             len(failed))
    return FeatureCache(path, len(images), views, tuple(failed))


def cache_key_parts(cfg: ImageConfig, weights_dir: Path) -> list[str]:
    """What, besides the image list and view recipe, decides the cached trunk activations."""
    return [cfg.backbone, weights_fingerprint(weights_dir) if cfg.backbone == "bvlc" else "torchvision"]


def scale_targets(targets: np.ndarray, tmin: np.ndarray, tmax: np.ndarray) -> np.ndarray:
    """Per-dimension min-max scaling of word-space vectors to [0, 1]."""
    span = np.maximum(tmax - tmin, 1e-6)
    return np.clip((targets - tmin) / span, 0.0, 1.0).astype(np.float32)


LossFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


def _loss_fn(cfg: ImageConfig, model: Regressor, center: torch.Tensor) -> LossFn:
    """(logits, scaled targets, raw targets) → mean loss.

    The cosine loss compares vectors after subtracting the mean training target: caption vectors share a
    large common component (raw cosines are all about 0.99), which would otherwise swamp the signal.

    The contrastive loss (symmetric InfoNCE over the batch, temperature ``cfg.temperature``) scores each
    image against every caption vector in the batch, on the same centred vectors: retrieval ranks, so the
    loss asks for ranking rather than for the exact caption vector. Rows with identical targets (two views
    of one image in a batch) are not counted as each other's negatives.
    """
    bce = nn.BCEWithLogitsLoss()
    if cfg.loss == "bce":
        return lambda logits, scaled, raw: bce(logits, scaled)
    if cfg.loss == "cosine":
        return lambda logits, scaled, raw: (
            1 - nn.functional.cosine_similarity(model.to_word_space(logits) - center, raw - center, dim=1)
        ).mean()
    if cfg.loss == "contrastive":

        def info_nce(logits: torch.Tensor, scaled: torch.Tensor, raw: torch.Tensor) -> torch.Tensor:
            out = nn.functional.normalize(model.to_word_space(logits) - center, dim=1)
            tgt = nn.functional.normalize(raw - center, dim=1)
            sims = out @ tgt.T / cfg.temperature
            same = (raw[:, None, :] == raw[None, :, :]).all(dim=2)
            same.fill_diagonal_(False)
            sims = sims.masked_fill(same, float("-inf"))
            labels = torch.arange(len(sims), device=sims.device)
            ce = nn.functional.cross_entropy
            return (ce(sims, labels) + ce(sims.T, labels)) / 2

        return info_nce
    raise ValueError(f"unknown loss {cfg.loss!r} (expected 'bce', 'cosine' or 'contrastive')")


def ridge_init(model: Regressor, feats: np.memmap, rows: np.ndarray, scaled: np.ndarray, alpha: float,
               device: torch.device, batch: int = 120) -> None:
    """Set the new layer to the ridge solution from pooled features to logit-space targets.

    Near 0.5 the sigmoid is about 0.5 + z/4, so targets z = 4·(scaled − 0.5) make the initial output a
    linear regression of the caption vectors; ``alpha`` scales the penalty relative to the mean feature
    energy.
    """
    model.eval()
    pooled = []
    with torch.no_grad():
        for s in range(0, len(rows), batch):
            x = torch.from_numpy(np.asarray(feats[rows[s : s + batch]], dtype=np.float32)).to(device)
            pooled.append(model.backbone.head(x).float().cpu().numpy())  # type: ignore[operator]
    f = np.concatenate(pooled).astype(np.float64)
    z = 4.0 * (scaled.astype(np.float64) - 0.5)
    fm, zm = f.mean(axis=0), z.mean(axis=0)
    fc = f - fm
    gram = fc.T @ fc
    lam = alpha * float(np.trace(gram)) / gram.shape[0]
    w = np.linalg.solve(gram + lam * np.eye(gram.shape[0]), fc.T @ (z - zm))  # (1024, D)
    b = zm - fm @ w
    with torch.no_grad():
        model.proj.weight.copy_(torch.from_numpy(w.T.astype(np.float32)))
        model.proj.bias.copy_(torch.from_numpy(b.astype(np.float32)))
    log.info("new layer initialised by ridge on %d pooled views (lambda %.3g)", len(rows), lam)


def _evaluate(model: Regressor, feats: np.memmap, rows: np.ndarray, scaled: np.ndarray, raw: np.ndarray,
              loss: LossFn, batch: int,
              device: torch.device) -> float:
    """Mean loss over the cached validation views ``rows`` (targets given per row)."""
    model.eval()
    total, n = 0.0, 0
    with torch.no_grad(), torch.autocast(device.type, enabled=device.type == "cuda"):
        for s in range(0, len(rows), batch):
            r = rows[s : s + batch]
            x = torch.from_numpy(np.asarray(feats[r], dtype=np.float32)).to(device)
            logits = model.logits_from_trunk(x).float()
            value = loss(logits, torch.from_numpy(scaled[s : s + batch]).to(device),
                         torch.from_numpy(raw[s : s + batch]).to(device))
            total += float(value) * len(r)
            n += len(r)
    return total / max(n, 1)


class _HeadStep(nn.Module):
    """The trained part as one module (what DDP wraps): trunk activations → logits, given dropout mask."""

    def __init__(self, model: Regressor) -> None:
        super().__init__()
        self.model = model

    def forward(self, feats: torch.Tensor, keep: torch.Tensor | None) -> torch.Tensor:
        """Logits of ``feats``; ``keep`` (already scaled by 1/(1 − p)) stands in for the dropout layer."""
        pooled = self.model.backbone.head(feats)  # type: ignore[operator]
        return self.model.proj(pooled if keep is None else pooled * keep)


# Losses that are a mean of per-row terms: each rank's share is weighted (``batch_share``). Any other loss
# (the in-batch contrastive one) couples the rows of a batch, so its logits are gathered across ranks first.
PER_ROW_LOSSES = ("bce", "cosine")


def _keep_mask(p: float, seed: int, step: int, n: int, device: torch.device) -> torch.Tensor | None:
    """Dropout's scaled keep-mask for a whole global batch, drawn from (seed, step): the same on every rank.

    Drawing the mask per global batch (not per rank) makes training independent of how many ranks share it.
    """
    if p <= 0:
        return None
    rng = np.random.default_rng([seed, step])
    keep = (rng.random((n, FEATURE_DIM), dtype=np.float32) >= p).astype(np.float32) / (1.0 - p)
    return torch.from_numpy(keep).to(device)


def _gather_rows(local: torch.Tensor, n: int, ctx: DistContext) -> torch.Tensor:
    """The whole global batch's rows in batch order, from each rank's strided share (gradients flow back)."""
    if not ctx.enabled:
        return local
    from torch.distributed.nn.functional import all_gather

    m = -(-n // ctx.world_size)  # shares differ by at most one row: pad each to m for all_gather
    padded = torch.cat([local, local.new_zeros(m - len(local), *local.shape[1:])])
    idx = torch.from_numpy(gather_order(n, ctx.world_size)).to(local.device)
    return torch.cat(all_gather(padded))[idx]


def _shared_cache(ctx: DistContext, build: Callable[[], FeatureCache]) -> FeatureCache:
    """Rank 0 builds (or finds) a trunk cache; the other ranks wait, then open the same files (a cache hit).

    Under a multi-node launch the work folder must be on a filesystem every node sees; otherwise each node
    recomputes the same cache for itself after the barrier.
    """
    if ctx.is_main:
        cache = build()
    barrier(ctx)
    if not ctx.is_main:
        cache = build()
    return cache


def train_regressor(
    cfg: ImageConfig,
    images: Sequence[Path],
    targets: np.ndarray,
    splits: Sequence[str],
    weights_dir: Path,
    work_dir: Path,
    *,
    progress: ProgressCallback | None = None,
    cache_dir: Path | None = None,
    view_targets: np.ndarray | None = None,
) -> Path:
    """Fine-tune the regressor on the "train" images, validate on "val"; return the best checkpoint.

    ``view_targets`` (posts × ``cfg.train_views`` × D), when given, is each cached view's own training
    target (e.g. one of the image's reference captions per view, so training sees single captions as the
    queries will be); validation still uses ``targets``.

    Trunk activations are cached under ``cache_dir`` (default ``work_dir``); share it between runs. Launched
    by ``torchrun`` the training runs data-parallel (DDP: gloo on CPU, NCCL on GPUs) and gives the same
    weights as one process, up to float rounding; only rank 0 validates and writes the checkpoint.
    """
    with process_group() as ctx:
        return _train(ctx, cfg, images, targets, splits, weights_dir, Path(work_dir),
                      progress if ctx.is_main else None, cache_dir, view_targets)


def _train(
    ctx: DistContext,
    cfg: ImageConfig,
    images: Sequence[Path],
    targets: np.ndarray,
    splits: Sequence[str],
    weights_dir: Path,
    work_dir: Path,
    progress: ProgressCallback | None,
    cache_dir: Path | None,
    view_targets: np.ndarray | None = None,
) -> Path:
    """:func:`train_regressor` on one rank of ``ctx`` (rank 0 of 1 when not distributed)."""
    if not (len(images) == len(targets) == len(splits)):
        raise TrainingFailed("images, targets and splits must have the same length")
    targets = np.asarray(targets, dtype=np.float32)
    want = (len(targets), cfg.train_views, targets.shape[1])
    if view_targets is not None and np.shape(view_targets) != want:
        raise TrainingFailed(f"view_targets must be posts × {cfg.train_views} views × {targets.shape[1]}")
    torch.set_num_threads(cfg.num_threads or ctx.cpu_threads())
    torch.manual_seed(cfg.seed)
    device = device_for(ctx)
    work_dir.mkdir(parents=True, exist_ok=True)
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
    tmin = targets[train_idx].min(axis=0)
    tmax = targets[train_idx].max(axis=0)
    model = build_regressor(cfg, weights_dir, targets.shape[1], tmin, tmax)
    key_parts = cache_key_parts(cfg, weights_dir)
    cache_dir = cache_dir or work_dir
    train_cache = _shared_cache(ctx, lambda: cache_trunk_features(
        model.backbone, [images[int(i)] for i in train_idx], cfg.train_views, cache_dir, key_parts=key_parts,
        random_views=True, view_seed=cfg.view_seed, batch_size=cfg.feature_batch, progress=progress,
    ))
    val_cache = _shared_cache(ctx, lambda: cache_trunk_features(
        model.backbone, [images[int(i)] for i in val_idx], 1, cache_dir, key_parts=key_parts,
        random_views=False, batch_size=cfg.feature_batch, progress=progress, stage="cnn-features-val",
    ))
    # Rows of usable views, with the target of the image they came from.
    bad_train = set(train_cache.failed)
    train_rows = np.array([i * cfg.train_views + v for i in range(len(train_idx)) if i not in bad_train
                           for v in range(cfg.train_views)], dtype=np.int64)
    if len(train_rows) == 0:
        raise TrainingFailed("no training image could be decoded")
    if view_targets is None:
        row_raw = targets[train_idx][train_rows // cfg.train_views]
    else:
        per_view = np.asarray(view_targets, dtype=np.float32)
        row_raw = per_view[train_idx][train_rows // cfg.train_views, train_rows % cfg.train_views]
    row_scaled = scale_targets(row_raw, tmin, tmax)
    val_rows = np.array([i for i in range(len(val_idx)) if i not in set(val_cache.failed)], dtype=np.int64)
    val_raw = targets[val_idx][val_rows]
    val_scaled = scale_targets(val_raw, tmin, tmax)

    # channels_last convolutions train the head about 1.4× faster on CPU (oneDNN's preferred layout).
    memory_format = torch.channels_last
    model = model.to(device, memory_format=memory_format)  # type: ignore[call-overload]
    for p in model.parameters():
        p.requires_grad_(False)
    trainable = [p for m in [*model.backbone.head_modules(), model.proj] for p in m.parameters()]
    for p in trainable:
        p.requires_grad_(True)
    opt = torch.optim.SGD(trainable, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    steps_per_epoch = math.ceil(len(train_rows) / cfg.batch_size)
    total_steps = steps_per_epoch * cfg.epochs
    sched = (torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=total_steps) if cfg.schedule == "cosine"
             else None)
    loss_fn = _loss_fn(cfg, model, torch.from_numpy(targets[train_idx].mean(axis=0)).to(device))
    per_row = cfg.loss in PER_ROW_LOSSES
    if cfg.init == "ridge":
        # Rank 0 fits; DDP's construction broadcasts rank 0's weights to the others.
        if ctx.is_main:
            ridge_init(model, train_cache.open(), train_rows, row_scaled, cfg.ridge_alpha, device)
    elif cfg.init != "gaussian":
        raise ValueError(f"unknown init {cfg.init!r} (expected 'gaussian' or 'ridge')")
    step_module: nn.Module = _HeadStep(model)
    if ctx.enabled:
        from torch.nn.parallel import DistributedDataParallel

        ids = [device] if device.type == "cuda" else None
        step_module = DistributedDataParallel(step_module, device_ids=ids)
        log.info("rank %d/%d: data-parallel training, %d threads", ctx.rank, ctx.world_size,
                 torch.get_num_threads())
    scaler = torch.amp.GradScaler(device.type, enabled=device.type == "cuda")
    train_feats, val_feats = train_cache.open(), val_cache.open()
    report = throttled(progress)

    best_path = work_dir / CHECKPOINT_NAME

    def validate() -> float:
        """Rank 0's validation loss, on every rank."""
        value = (_evaluate(model, val_feats, val_rows, val_scaled, val_raw, loss_fn, cfg.batch_size, device)
                 if ctx.is_main else 0.0)
        return broadcast_floats([value], ctx)[0]

    best_loss = validate()
    history: list[dict[str, float]] = [{"epoch": 0, "val_loss": best_loss}]
    log.info("initial validation loss %.5f", best_loss)
    best_state: dict[str, Any] | None = None
    best_epoch = 0
    rng = np.random.default_rng(cfg.seed)  # the same permutation on every rank
    step = 0
    started = time.monotonic()
    for epoch in range(1, cfg.epochs + 1):
        model.train()
        # Frozen layers stay in eval mode (matters only for dropout; there is no BatchNorm).
        order = rng.permutation(len(train_rows))
        bar = tqdm(range(steps_per_epoch), desc=f"cnn-train {epoch}/{cfg.epochs}", unit="batch",
                   mininterval=1.0, disable=not ctx.is_main)
        running, seen, views, t0 = 0.0, 0, 0, time.monotonic()
        for b in bar:
            sel = np.sort(order[b * cfg.batch_size : (b + 1) * cfg.batch_size])
            n = len(sel)
            keep = _keep_mask(cfg.dropout, cfg.seed, step, n, device)
            pos, weight = batch_share(n, ctx)
            if len(pos) == 0:
                # More ranks than rows: a zero-weight stand-in row, since every rank must run backward.
                pos, weight = np.zeros(1, dtype=np.int64), 0.0
            mine = sel[pos]
            x = torch.from_numpy(np.asarray(train_feats[train_rows[mine]], dtype=np.float32)).to(device)
            x = x.contiguous(memory_format=memory_format)
            with torch.autocast(device.type, enabled=device.type == "cuda"):
                mask = None if keep is None else keep[torch.from_numpy(pos).to(device)]
                logits = step_module(x, mask).float()
            if per_row:
                loss = loss_fn(logits, torch.from_numpy(row_scaled[mine]).to(device),
                               torch.from_numpy(row_raw[mine]).to(device))
                scaled_loss, counted = loss * weight, (len(mine) if weight > 0 else 0)
            else:
                # Every rank computes the whole batch's loss; all_gather's backward sums the world's identical
                # gradients onto each share and DDP's average divides that sum back out.
                loss = loss_fn(_gather_rows(logits, n, ctx), torch.from_numpy(row_scaled[sel]).to(device),
                               torch.from_numpy(row_raw[sel]).to(device))
                scaled_loss, counted = loss, (n if ctx.is_main else 0)
            opt.zero_grad(set_to_none=True)
            scaler.scale(scaled_loss).backward()
            scaler.step(opt)
            scaler.update()
            if sched is not None:
                sched.step()
            step += 1
            running += float(loss.detach()) * counted
            seen += counted
            views += n
            rate = views / max(time.monotonic() - t0, 1e-6)
            bar.set_postfix(loss=f"{running / max(seen, 1):.5f}", img_s=f"{rate:.0f}", refresh=False)
            if report:
                report("cnn-train", step, total_steps, "batches")
        running, seen_f = all_reduce_sum([running, float(seen)], ctx)
        train_loss = running / max(seen_f, 1.0)
        val_loss = validate()
        seconds = time.monotonic() - t0
        history.append({"epoch": epoch, "train_loss": train_loss, "val_loss": val_loss, "seconds": seconds})
        log.info("epoch %d: train loss %.5f, val loss %.5f (%.0fs, %.0f views/s)", epoch, train_loss,
                 val_loss, seconds, len(train_rows) / max(seconds, 1e-6))
        if val_loss < best_loss or best_state is None:
            best_loss, best_epoch = val_loss, epoch
            if ctx.is_main:
                best_state = copy.deepcopy({k: v.detach().cpu() for k, v in model.state_dict().items()})
            else:
                best_state = {}
        # Rank 0's clock decides, so every rank leaves after the same epoch.
        over = cfg.max_train_minutes is not None and time.monotonic() - started > cfg.max_train_minutes * 60
        if broadcast_floats([float(over)], ctx)[0]:
            log.warning("training time budget of %.1f minutes reached after epoch %d", cfg.max_train_minutes,
                        epoch)
            break
    assert best_state is not None
    if ctx.is_main:
        ckpt = {
            "config": cfg.to_dict(),
            "model": best_state,
            "dim": int(targets.shape[1]),
            "target_min": tmin,
            "target_max": tmax,
            "scaling": "per-dimension min-max over the training targets",
            "epoch": best_epoch,
            "val_loss": best_loss,
            "history": history,
            "n_train_views": len(train_rows),
            "n_val": len(val_rows),
            "world_size": ctx.world_size,
        }
        tmp = best_path.with_suffix(".tmp")
        torch.save(ckpt, tmp)
        os.replace(tmp, best_path)
        log.info("best checkpoint: epoch %d, val loss %.5f → %s", best_epoch, best_loss, best_path)
    barrier(ctx)  # the checkpoint exists before any rank returns its path
    return best_path
