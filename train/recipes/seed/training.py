"""The image stage: fine-tune the regressor (:mod:`.regressor`) to map images onto their caption vectors.

Seed-faithful recipe (the original system, :class:`train.recipes.seed.config.ImageConfig`'s defaults): conv1 …
inception_4d frozen, inception_4e/5a/5b and the new layer trained with sigmoid cross-entropy against
caption vectors min-max scaled to [0, 1] per dimension; SGD lr 0.001, momentum 0.9, weight decay 2e-4,
batch 120; random 224 crops of the 256-resized image with mirroring; validation loss each epoch, best
checkpoint kept. The frozen trunk runs once per cached view (:mod:`.trunk_cache`), so epochs only run the
trained top; the losses are in :mod:`.losses`.

Under ``torchrun`` the head trains data-parallel (DistributedDataParallel: gloo on CPU, NCCL on GPUs): rank 0
builds the trunk cache while the others wait, every rank draws the same permutation and dropout masks, and
each takes a strided share of every global batch, weighted so the averaged gradient is the one-process
gradient (the contrastive loss, which couples a batch's rows, gathers the logits instead); rank 0 alone
validates and writes the checkpoint. Two CPU ranks match one process to ~3e-7 (tests/train/test_ddp.py).

Other options: ``loss="cosine"`` or ``"contrastive"``, ``schedule="cosine"``, ``init="gaussian"`` (the new
layer from N(0, 0.01) instead of the closed-form ridge fit). The quick preset uses the ridge start and the
cosine loss: with a few hundred images and a few epochs, the seed recipe barely leaves its start.
"""

from __future__ import annotations

import copy
import logging
import math
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from train.image.distributed import (
    DistContext,
    all_reduce_sum,
    barrier,
    batch_share,
    broadcast_floats,
    device_for,
    gather_order,
    process_group,
)
from train.image.googlenet import FEATURE_DIM
from train.progress import ProgressCallback, throttled
from train.recipes.seed.config import ImageConfig
from train.recipes.seed.data import (
    Rows,
    checked_targets,
    split_indices,
    training_rows,
    trunk_caches,
    validation_rows,
)
from train.recipes.seed.losses import PER_ROW_LOSSES, LossFn, loss_function
from train.recipes.seed.regressor import Regressor, build_regressor, ridge_init

log = logging.getLogger(__name__)

CHECKPOINT_NAME = "image_best.pt"
# channels_last convolutions train the head about 1.4× faster on CPU (oneDNN's preferred layout).
MEMORY_FORMAT = torch.channels_last


@dataclass
class _Best:
    """The best validation loss so far, its epoch and (rank 0's) weights, and every epoch's figures."""

    loss: float
    epoch: int = 0
    state: dict[str, Any] | None = None
    history: list[dict[str, float]] = field(default_factory=list)


def train_regressor(
    cfg: ImageConfig,
    images: Sequence[Path],
    targets: np.ndarray,
    splits: Sequence[str],
    weights_dir: Path | None,
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
        progress = progress if ctx.is_main else None
        targets = checked_targets(cfg, images, targets, splits, view_targets)
        torch.set_num_threads(cfg.num_threads or ctx.cpu_threads())
        torch.manual_seed(cfg.seed)
        device = device_for(ctx)
        work_dir = Path(work_dir)
        work_dir.mkdir(parents=True, exist_ok=True)
        train_idx, val_idx = split_indices(cfg, splits)
        tmin, tmax = targets[train_idx].min(axis=0), targets[train_idx].max(axis=0)
        model = build_regressor(cfg, weights_dir, targets.shape[1], tmin, tmax)
        train_cache, val_cache = trunk_caches(ctx, cfg, model, images, train_idx, val_idx, weights_dir,
                                              cache_dir or work_dir, progress)
        train = training_rows(cfg, train_cache, targets, view_targets, train_idx, tmin, tmax)
        val = validation_rows(val_cache, targets, val_idx, tmin, tmax)
        loop = _Loop(ctx, cfg, model, device, train, val, center=targets[train_idx].mean(axis=0))
        best = loop.fit(progress)
        best_path = work_dir / CHECKPOINT_NAME
        if ctx.is_main:
            _save_checkpoint(best_path, cfg, best, tmin, tmax, len(train.rows), len(val.rows), ctx.world_size)
        barrier(ctx)  # the checkpoint exists before any rank returns its path
        return best_path


# -- the new layer's start -----------------------------------------------------------------------------
def _initialise(cfg: ImageConfig, ctx: DistContext, model: Regressor, train: Rows,
                device: torch.device) -> None:
    """Start the new layer as ``cfg.init`` says (the gaussian start is the one it was built with)."""
    if cfg.init == "ridge":
        # Rank 0 fits; DDP's construction broadcasts rank 0's weights to the others.
        if ctx.is_main:
            ridge_init(model, train.feats, train.rows, train.scaled, cfg.ridge_alpha, device)
    elif cfg.init != "gaussian":
        raise ValueError(f"unknown init {cfg.init!r} (expected 'gaussian' or 'ridge')")


# -- one step under torchrun ----------------------------------------------------------------------------
class _HeadStep(nn.Module):
    """The trained part as one module (what DDP wraps): trunk activations → logits, given dropout mask."""

    def __init__(self, model: Regressor) -> None:
        super().__init__()
        self.model = model

    def forward(self, feats: torch.Tensor, keep: torch.Tensor | None) -> torch.Tensor:
        """Logits of ``feats``; ``keep`` (already scaled by 1/(1 − p)) stands in for the dropout layer."""
        pooled = self.model.backbone.head(feats)  # type: ignore[operator]
        return self.model.proj(pooled if keep is None else pooled * keep)


def _data_parallel(module: nn.Module, ctx: DistContext, device: torch.device) -> nn.Module:
    """``module`` wrapped in DistributedDataParallel under torchrun, else as it is."""
    if not ctx.enabled:
        return module
    from torch.nn.parallel import DistributedDataParallel

    ids = [device] if device.type == "cuda" else None
    wrapped = DistributedDataParallel(module, device_ids=ids)
    log.info("rank %d/%d: data-parallel training, %d threads", ctx.rank, ctx.world_size,
             torch.get_num_threads())
    return wrapped


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


# -- the loop --------------------------------------------------------------------------------------------
def _optimiser(cfg: ImageConfig, model: Regressor,
               total_steps: int) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler | None]:
    """SGD over the head and the new layer (everything else frozen), and the learning-rate schedule."""
    for p in model.parameters():
        p.requires_grad_(False)
    head = model.backbone.head_modules()  # type: ignore[operator]
    trainable = [p for m in [*head, model.proj] for p in m.parameters()]
    for p in trainable:
        p.requires_grad_(True)
    opt = torch.optim.SGD(trainable, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    sched = (torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=total_steps) if cfg.schedule == "cosine"
             else None)
    return opt, sched


class _Loop:
    """Epochs over the cached training views, validated after each; keeps the best weights."""

    def __init__(self, ctx: DistContext, cfg: ImageConfig, model: Regressor, device: torch.device,
                 train: Rows, val: Rows, center: np.ndarray) -> None:
        self.ctx, self.cfg, self.device, self.train, self.val = ctx, cfg, device, train, val
        self.model = model.to(device, memory_format=MEMORY_FORMAT)  # type: ignore[call-overload]
        self.steps_per_epoch = math.ceil(len(train.rows) / cfg.batch_size)
        self.total_steps = self.steps_per_epoch * cfg.epochs
        self.opt, self.sched = _optimiser(cfg, self.model, self.total_steps)
        self.loss: LossFn = loss_function(cfg, self.model, torch.from_numpy(center).to(device))
        self.per_row = cfg.loss in PER_ROW_LOSSES
        _initialise(cfg, ctx, self.model, train, device)
        self.step_module = _data_parallel(_HeadStep(self.model), ctx, device)
        self.scaler = torch.amp.GradScaler(device.type, enabled=device.type == "cuda")
        self.step = 0

    def fit(self, progress: ProgressCallback | None) -> _Best:
        """Train ``cfg.epochs`` epochs (or until the time budget); return the best validated weights."""
        cfg = self.cfg
        report = throttled(progress)
        best = _Best(loss=self.validate())
        best.history.append({"epoch": 0, "val_loss": best.loss})
        log.info("initial validation loss %.5f", best.loss)
        rng = np.random.default_rng(cfg.seed)  # the same permutation on every rank
        started = time.monotonic()
        for epoch in range(1, cfg.epochs + 1):
            t0 = time.monotonic()
            train_loss = self.epoch(epoch, rng.permutation(len(self.train.rows)), report)
            val_loss = self.validate()
            seconds = time.monotonic() - t0
            best.history.append({"epoch": epoch, "train_loss": train_loss, "val_loss": val_loss,
                                 "seconds": seconds})
            log.info("epoch %d: train loss %.5f, val loss %.5f (%.0fs, %.0f views/s)", epoch, train_loss,
                     val_loss, seconds, len(self.train.rows) / max(seconds, 1e-6))
            if val_loss < best.loss or best.state is None:
                best.loss, best.epoch, best.state = val_loss, epoch, self._weights()
            if self._out_of_time(started):
                log.warning("training time budget of %.1f minutes reached after epoch %d",
                            cfg.max_train_minutes, epoch)
                break
        assert best.state is not None
        return best

    def _out_of_time(self, started: float) -> bool:
        """Whether ``cfg.max_train_minutes`` have passed since ``started``, on rank 0's clock, so every rank
        leaves after the same epoch."""
        budget = self.cfg.max_train_minutes
        over = budget is not None and time.monotonic() - started > budget * 60
        return bool(broadcast_floats([float(over)], self.ctx)[0])

    def _weights(self) -> dict[str, Any]:
        """A CPU copy of the weights on rank 0 (the only rank that writes them); empty elsewhere."""
        if not self.ctx.is_main:
            return {}
        return copy.deepcopy({k: v.detach().cpu() for k, v in self.model.state_dict().items()})

    def epoch(self, epoch: int, order: np.ndarray, report: ProgressCallback | None) -> float:
        """One pass over the training views in ``order``; the mean training loss over every rank."""
        cfg = self.cfg
        # Train mode matters only for dropout, which each step replaces by its own mask (BVLC has no
        # BatchNorm).
        self.model.train()
        bar = tqdm(range(self.steps_per_epoch), desc=f"cnn-train {epoch}/{cfg.epochs}", unit="batch",
                   mininterval=1.0, disable=not self.ctx.is_main)
        running, seen, views, t0 = 0.0, 0, 0, time.monotonic()
        for b in bar:
            sel = np.sort(order[b * cfg.batch_size : (b + 1) * cfg.batch_size])
            loss, counted = self._step(sel)
            running += loss * counted
            seen += counted
            views += len(sel)
            rate = views / max(time.monotonic() - t0, 1e-6)
            bar.set_postfix(loss=f"{running / max(seen, 1):.5f}", img_s=f"{rate:.0f}", refresh=False)
            if report:
                report("cnn-train", self.step, self.total_steps, "batches")
        running, seen_f = all_reduce_sum([running, float(seen)], self.ctx)
        return running / max(seen_f, 1.0)

    def _step(self, sel: np.ndarray) -> tuple[float, int]:
        """One optimiser step on global batch ``sel`` (this rank's share of it); its loss and row count."""
        ctx, device, train = self.ctx, self.device, self.train
        n = len(sel)
        keep = _keep_mask(self.cfg.dropout, self.cfg.seed, self.step, n, device)
        pos, weight = batch_share(n, ctx)
        if len(pos) == 0:
            # More ranks than rows: a zero-weight stand-in row, since every rank must run backward.
            pos, weight = np.zeros(1, dtype=np.int64), 0.0
        mine = sel[pos]
        x = torch.from_numpy(np.asarray(train.feats[train.rows[mine]], dtype=np.float32)).to(device)
        x = x.contiguous(memory_format=MEMORY_FORMAT)
        with torch.autocast(device.type, enabled=device.type == "cuda"):
            mask = None if keep is None else keep[torch.from_numpy(pos).to(device)]
            logits = self.step_module(x, mask).float()
        if self.per_row:
            loss = self.loss(logits, torch.from_numpy(train.scaled[mine]).to(device),
                             torch.from_numpy(train.raw[mine]).to(device))
            scaled_loss, counted = loss * weight, (len(mine) if weight > 0 else 0)
        else:
            # Every rank computes the whole batch's loss; all_gather's backward sums the world's identical
            # gradients onto each share and DDP's average divides that sum back out.
            loss = self.loss(_gather_rows(logits, n, ctx), torch.from_numpy(train.scaled[sel]).to(device),
                             torch.from_numpy(train.raw[sel]).to(device))
            scaled_loss, counted = loss, (n if ctx.is_main else 0)
        self.opt.zero_grad(set_to_none=True)
        self.scaler.scale(scaled_loss).backward()
        self.scaler.step(self.opt)
        self.scaler.update()
        if self.sched is not None:
            self.sched.step()
        self.step += 1
        return float(loss.detach()), counted

    def validate(self) -> float:
        """Rank 0's mean loss over the validation views, on every rank."""
        value = self._validation_loss() if self.ctx.is_main else 0.0
        return broadcast_floats([value], self.ctx)[0]

    def _validation_loss(self) -> float:
        model, val, device, batch = self.model, self.val, self.device, self.cfg.batch_size
        model.eval()
        total, n = 0.0, 0
        with torch.no_grad(), torch.autocast(device.type, enabled=device.type == "cuda"):
            for s in range(0, len(val.rows), batch):
                r = val.rows[s : s + batch]
                x = torch.from_numpy(np.asarray(val.feats[r], dtype=np.float32)).to(device)
                logits = model.logits_from_trunk(x).float()
                value = self.loss(logits, torch.from_numpy(val.scaled[s : s + batch]).to(device),
                                  torch.from_numpy(val.raw[s : s + batch]).to(device))
                total += float(value) * len(r)
                n += len(r)
        return total / max(n, 1)


# -- the checkpoint --------------------------------------------------------------------------------------
def _save_checkpoint(path: Path, cfg: ImageConfig, best: _Best, tmin: np.ndarray, tmax: np.ndarray,
                     n_train_views: int, n_val: int, world_size: int) -> None:
    """Write the best weights with what rebuilds and explains them (``regressor.load_checkpoint``)."""
    ckpt = {
        "config": cfg.to_dict(),
        "model": best.state,
        "dim": len(tmin),
        # Tensors, not numpy arrays: checkpoints load with torch.load(weights_only=True) (no pickled code).
        "target_min": torch.from_numpy(np.asarray(tmin, dtype=np.float32)),
        "target_max": torch.from_numpy(np.asarray(tmax, dtype=np.float32)),
        "scaling": "per-dimension min-max over the training targets",
        "epoch": best.epoch,
        "val_loss": best.loss,
        "history": best.history,
        "n_train_views": n_train_views,
        "n_val": n_val,
        "world_size": world_size,
    }
    tmp = path.with_suffix(".tmp")
    torch.save(ckpt, tmp)
    os.replace(tmp, path)
    log.info("best checkpoint: epoch %d, val loss %.5f → %s", best.epoch, best.loss, path)
