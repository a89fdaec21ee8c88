"""The joint space with a trainable image side: pooling over the 7×7 grid, an MLP map, GoogLeNet's 5a/5b.

:mod:`.model` learns a linear map of frozen pooled features beside the word table. This module learns the
same word table and the same caption form (the TF-IDF-weighted mean of the words' vectors, so the engine
embeds queries exactly as before), but the image side is an :class:`ImageHead` fed by cached activations
(:mod:`train.image.activations`): the frozen top blocks' pooled features, their 7×7 grids, or the pool4
maps below inception 5a, which the head then runs through its own fine-tuned copy of 5b (and 5a).

What an image's vector is: the mean over its views of the head's output, the same mean the bundle
encoder's ``crops`` take. Training draws each view on its own (``views="random"``) or feeds the mean of
the pooled features (``views="mean"``, the default recipe's way, only for a frozen, linearly pooled
input). Losses: the symmetric in-batch InfoNCE of :mod:`.model`, plus optionally VSE++'s max-violation
hinge (each pair against its hardest in-batch negative) after a warm-up.
"""

from __future__ import annotations

import copy
import logging
import math
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from space.textspace import TextSpace
from train.corpus.posts import Post
from train.progress import ProgressCallback, throttled
from train.recipes.joint.model import Captions, _fill_unseen, recall_at, warmup_cosine

log = logging.getLogger(__name__)

Tune = Literal["none", "5b", "5a5b"]
Pooling = Literal["mean", "attention"]
Views = Literal["mean", "random"]


@dataclass(frozen=True)
class HeadConfig:
    """The trainable image side (field order is part of a stage key)."""

    tune: Tune = "none"  # which top inception blocks train ("none": the input is their frozen output)
    pooling: Pooling = "mean"  # over the 7×7 grid; "attention" starts as the mean and learns weights
    hidden: int = 0  # 0: a linear map; >0: a residual MLP beside it with this hidden width
    dim: int | None = None  # the joint space's width; None: the text space's (Word2Vec's)
    block_lr: float = 0.1  # the fine-tuned blocks' learning rate, relative to the head's
    # Also the pooled features of the levels below the grid (pool4 and inception 5a, 1,664 more inputs).
    levels: bool = False

    def input_kind(self) -> str:
        """What the head reads: "pool4" maps, the frozen top's "grid", or its "pooled" features."""
        if self.tune != "none":
            return "pool4"
        if self.pooling == "attention":
            if self.levels:
                raise ValueError("attention pooling over frozen grids cannot add the lower levels")
            return "grid"
        return "pooled"


@dataclass(frozen=True)
class FinetuneConfig:
    """How the joint space is trained with an :class:`ImageHead` (field order is part of a stage key)."""

    head: HeadConfig = HeadConfig()
    epochs: int = 10
    batch_size: int = 128
    lr: float = 2e-3  # AdamW peak, linear warm-up over the first tenth, cosine to zero
    weight_decay: float = 1e-4
    temperature: float = 0.05
    dropout: float = 0.2  # on the standardised pooled features
    views: Views = "mean"
    passes: int | None = None  # draws of each post per epoch; None: its most captions (Flickr8k 5)
    hard_weight: float = 0.0  # weight of VSE++'s max-violation hinge beside InfoNCE (0: off)
    hard_margin: float = 0.2
    hard_from: float = 0.3  # the share of training steps before the hinge joins
    word_dropout: float = 0.0  # each training caption word left out with this probability
    word_lr: float = 1.0  # the word table's learning rate, relative to the head's
    text_dropout: float = 0.0  # dropout on the training captions' vectors
    ema: float = 0.0  # >0: validate and keep an exponential moving average of the weights (decay per step)
    val_views: int = 2  # views of each validation image (the first ones: the centre and its mirror)
    seed: int = 0
    num_threads: int | None = None  # None: all cores

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict (stored in manifests)."""
        return asdict(self)


class AttentionPool(nn.Module):
    """A learned softmax over the 7×7 grid's positions: one score per position from a 1×1 convolution.

    The scores start at zero, so the pool starts as the global mean the frozen recipe uses.
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.score = nn.Conv2d(channels, 1, 1)
        nn.init.zeros_(self.score.weight)
        assert self.score.bias is not None
        nn.init.zeros_(self.score.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) → (B, C)."""
        w = torch.softmax(self.score(x).flatten(1), dim=1)  # (B, HW)
        return torch.einsum("bcn,bn->bc", x.flatten(2), w)


class MeanPool(nn.Module):
    """The global mean over the grid (GoogLeNet's own pool5)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) → (B, C)."""
        return x.mean(dim=(2, 3))


class ImageHead(nn.Module):
    """Cached activations → a vector of the joint space (before normalisation).

    ``frozen``/``blocks``: the top inception blocks (frozen ones run without gradients, tuned ones
    train); then the pool, the fixed standardisation of the pooled features (training means and
    deviations of the frozen network's), dropout and the map. With ``tune="none"`` and mean pooling the
    input is already pooled.
    """

    def __init__(self, cfg: HeadConfig, in_dim: int, out_dim: int, mu: np.ndarray, sd: np.ndarray,
                 frozen: Sequence[nn.Module] = (), blocks: Sequence[nn.Module] = (),
                 dropout: float = 0.0) -> None:
        super().__init__()
        self.cfg = cfg
        self.frozen = nn.Sequential(*frozen)
        for p in self.frozen.parameters():
            p.requires_grad_(False)
        self.blocks = nn.Sequential(*blocks)
        self.pool: nn.Module = AttentionPool(in_dim) if cfg.pooling == "attention" else MeanPool()
        self.mu: torch.Tensor
        self.sd: torch.Tensor
        self.register_buffer("mu", torch.from_numpy(np.asarray(mu, np.float32)))
        self.register_buffer("sd", torch.from_numpy(np.asarray(sd, np.float32)))
        self.drop = nn.Dropout(dropout)
        self.linear = nn.Linear(in_dim, out_dim)
        self.mlp: nn.Module | None = None
        if cfg.hidden > 0:
            second = nn.Linear(cfg.hidden, out_dim)
            nn.init.zeros_(second.weight)  # starts as the linear map alone
            nn.init.zeros_(second.bias)
            self.mlp = nn.Sequential(nn.Linear(in_dim, cfg.hidden), nn.GELU(), second)

    def pooled(self, x: torch.Tensor) -> torch.Tensor:
        """Cached input → standardised pooled features (B, in_dim)."""
        kind = self.cfg.input_kind()
        if kind == "pool4":
            low: list[torch.Tensor] = []
            stack = [*self.frozen, *self.blocks]
            for k, block in enumerate(stack):
                if self.cfg.levels:
                    low.append(x.mean(dim=(2, 3)))
                if k < len(self.frozen):
                    block.eval()
                    with torch.no_grad():
                        x = block(x)
                else:
                    x = block(x)
            x = torch.cat([*low, self.pool(x)], dim=1)
        elif kind == "grid":
            x = self.pool(x)
        return (x - self.mu) / self.sd

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Cached input → joint-space vector (B, out_dim)."""
        z = self.drop(self.pooled(x))
        out = self.linear(z)
        return out if self.mlp is None else out + self.mlp(z)

    def block_parameters(self) -> list[nn.Parameter]:
        """The fine-tuned inception blocks' parameters."""
        return list(self.blocks.parameters())

    def head_parameters(self) -> list[nn.Parameter]:
        """Every other trainable parameter (pool, map)."""
        ids = {id(p) for p in self.block_parameters()}
        return [p for p in self.parameters() if p.requires_grad and id(p) not in ids]


def build_head(cfg: HeadConfig, upper_5a: nn.Module, upper_5b: nn.Module, out_dim: int,
               mu: np.ndarray, sd: np.ndarray, dropout: float) -> ImageHead:
    """An :class:`ImageHead` whose tuned blocks start as copies of the network's (never shared with it)."""
    frozen: list[nn.Module] = []
    blocks: list[nn.Module] = []
    if cfg.tune == "5b":
        frozen, blocks = [copy.deepcopy(upper_5a)], [copy.deepcopy(upper_5b)]
    elif cfg.tune == "5a5b":
        blocks = [copy.deepcopy(upper_5a), copy.deepcopy(upper_5b)]
    return ImageHead(cfg, len(mu), out_dim, mu, sd, frozen, blocks, dropout)


class ViewSource:
    """The head's cached input of every image: an array (N, V, ...) (a memmap is fine), read by rows."""

    def __init__(self, data: np.ndarray) -> None:
        self.data = data

    @property
    def views(self) -> int:
        """Views cached per image."""
        return int(self.data.shape[1])

    def take(self, rows: np.ndarray, views: np.ndarray | None) -> torch.Tensor:
        """float32 input of ``rows``: view ``views[k]`` of row ``rows[k]``, or every view when None
        (then (len(rows) * V, ...), image-major)."""
        order = np.argsort(rows, kind="stable")  # memmaps read faster in order
        rows_sorted = rows[order]
        if views is None:
            block = np.asarray(self.data[rows_sorted], np.float32)
            out = np.empty_like(block)
            out[order] = block
            return torch.from_numpy(out.reshape(-1, *self.data.shape[2:]))
        picked = np.asarray(self.data[rows_sorted, views[order]], np.float32)
        out = np.empty_like(picked)
        out[order] = picked
        return torch.from_numpy(out)

    def mean_pooled(self, rows: np.ndarray) -> torch.Tensor:
        """The mean over views (for pooled input: the mean of the frozen features, as :mod:`.model`)."""
        return torch.from_numpy(np.asarray(self.data[rows], np.float32).mean(axis=1))


@dataclass
class FinetunedModel:
    """A trained head and word table: images are the view-mean of ``head`` outputs."""

    head: ImageHead
    words: np.ndarray  # (V, D)
    history: list[dict[str, float]]
    config: FinetuneConfig

    def encode(self, source: ViewSource, rows: Sequence[int] | np.ndarray, views: int | None = None,
               batch_size: int = 64) -> np.ndarray:
        """Vectors of ``rows``: the mean of the head's outputs over their first ``views`` views (all)."""
        rows = np.asarray(rows, np.int64)
        v = views or source.views
        per = max(1, batch_size // v)
        out = np.zeros((len(rows), self.head.linear.out_features), np.float32)
        self.head.eval()
        with torch.no_grad():
            for s in range(0, len(rows), per):
                r = rows[s : s + per]
                x = np.asarray(source.data[r, :v], np.float32).reshape(-1, *source.data.shape[2:])
                y = self.head(torch.from_numpy(x))
                out[s : s + len(r)] = y.reshape(len(r), v, -1).mean(dim=1).numpy()
        return out

    def save(self, path: Path) -> None:
        """The head's weights, the words, the history and the config (one torch file)."""
        torch.save({"head": self.head.state_dict(), "words": self.words, "history": self.history,
                    "config": self.config.to_dict()}, path)


def standardisation(pooled: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-dimension mean and deviation of frozen pooled features (N, V, F) over images and views."""
    flat = np.asarray(pooled, np.float64).reshape(-1, pooled.shape[-1])
    return flat.mean(axis=0).astype(np.float32), (flat.std(axis=0) + 1e-6).astype(np.float32)


def _caption_batch(caps: Captions, words: torch.Tensor, which: np.ndarray, ids_t: torch.Tensor,
                   w_t: torch.Tensor, drop: float, gen: torch.Generator) -> torch.Tensor:
    """TF-IDF-weighted means of ``which`` captions' word rows, words left out at rate ``drop`` in training
    (a caption that would lose every word keeps them all)."""
    lengths = caps.start[which + 1] - caps.start[which]
    flat = torch.from_numpy(np.concatenate([np.arange(caps.start[c], caps.start[c + 1]) for c in which]))
    seg = torch.from_numpy(np.repeat(np.arange(len(which)), lengths))
    w = w_t[flat]
    if drop > 0:
        keep = (torch.rand(len(w), generator=gen) >= drop).float()
        kept = torch.zeros(len(which)).index_add_(0, seg, keep * w)
        keep = torch.where(kept[seg] > 0, keep, torch.ones_like(keep))
        w = w * keep
    summed = torch.zeros(len(which), words.shape[1]).index_add_(0, seg, words[ids_t[flat]] * w[:, None])
    norm = torch.zeros(len(which)).index_add_(0, seg, w)
    return summed / norm[:, None]


def max_violation(sims: torch.Tensor, margin: float) -> torch.Tensor:
    """VSE++'s hinge on cosine similarities (B, B): each positive against its hardest negative, both ways."""
    pos = sims.diag()
    off = sims - torch.eye(len(sims)) * 1e4
    cost_i = (margin + off - pos[:, None]).clamp(min=0).max(dim=1).values
    cost_t = (margin + off - pos[None, :]).clamp(min=0).max(dim=0).values
    return (cost_i + cost_t).mean()


def train_finetune(
    cfg: FinetuneConfig,
    source: ViewSource,
    head: ImageHead,
    posts: Sequence[Post],
    space: TextSpace,
    usable: np.ndarray,
    progress: ProgressCallback | None = None,
) -> FinetunedModel:
    """Learn ``head`` and the word vectors on the "train" posts; keep the best epoch by validation R@10.

    ``source`` holds the head's input for every post (row ``i`` is ``posts[i]``); ``usable`` marks the rows
    whose image could be read.
    """
    torch.manual_seed(cfg.seed)
    torch.set_num_threads(cfg.num_threads or torch.get_num_threads())
    gen = torch.Generator().manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    if cfg.views == "mean" and cfg.head.input_kind() != "pooled":
        raise ValueError("views='mean' needs frozen, mean-pooled input; use views='random'")
    splits = np.array([p.split for p in posts])
    train_rows = np.flatnonzero((splits == "train") & usable)
    val_rows = np.flatnonzero((splits == "val") & usable)
    train_caps = Captions.of(posts, train_rows.tolist(), space)
    if len(train_caps) == 0:
        raise ValueError("no training caption has a known word: the joint space cannot be trained")
    val_caps = Captions.of(posts, val_rows.tolist(), space)

    dim = head.linear.out_features
    w2v = space.vectors - space.vectors.mean(axis=0)
    scale = float(np.linalg.norm(w2v, axis=1).mean()) or 1.0
    init = (w2v / scale).astype(np.float32)
    if dim > init.shape[1]:  # a wider space: the extra dimensions start small and random
        extra = rng.normal(0, 0.01, (len(init), dim - init.shape[1])).astype(np.float32)
        init = np.concatenate([init, extra], axis=1)
    elif dim < init.shape[1]:
        raise ValueError(f"the joint space ({dim}) cannot be narrower than the text space ({init.shape[1]})")
    words = nn.Parameter(torch.from_numpy(init))
    groups: list[dict[str, Any]] = [{"params": head.head_parameters(), "lr": cfg.lr},
                                    {"params": [words], "lr": cfg.lr * cfg.word_lr}]
    if head.block_parameters():
        groups.append({"params": head.block_parameters(), "lr": cfg.lr * cfg.head.block_lr})
    opt = torch.optim.AdamW(groups, lr=cfg.lr, weight_decay=cfg.weight_decay)

    by_post: dict[int, list[int]] = {}
    for c, r in enumerate(train_caps.owner.tolist()):
        by_post.setdefault(r, []).append(c)
    posts_with = np.array(sorted(by_post), np.int64)
    passes = cfg.passes or min(16, max(len(v) for v in by_post.values()))
    cycles = {r: list(rng.permutation(v)) for r, v in by_post.items()}

    def next_caption(r: int) -> int:
        if not cycles[r]:
            cycles[r] = list(rng.permutation(by_post[r]))
        return int(cycles[r].pop())

    steps_per_epoch = passes * math.ceil(len(posts_with) / cfg.batch_size)
    total = cfg.epochs * steps_per_epoch
    warmup = max(1, total // 10)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: warmup_cosine(s, warmup, total))
    ids_t = torch.from_numpy(train_caps.ids)
    w_t = torch.from_numpy(train_caps.weights)
    report = throttled(progress)
    ce = nn.functional.cross_entropy

    def words_np() -> np.ndarray:
        return words.detach().numpy().astype(np.float32).copy()

    def validate() -> float | None:
        if len(val_caps) == 0:
            return None
        model = FinetunedModel(head, words_np(), [], cfg)
        imgs = model.encode(source, val_rows, views=min(cfg.val_views, source.views))
        return recall_at(imgs, val_caps.embed(model.words), np.searchsorted(val_rows, val_caps.owner))

    # The averaged weights live beside the trained ones; swapping twice restores both.
    tracked = [(n, p) for n, p in head.named_parameters() if p.requires_grad] + [("~words", words)]
    ema = {n: p.detach().clone() for n, p in tracked} if cfg.ema > 0 else None

    def swap_ema() -> None:
        if ema is None:
            return
        with torch.no_grad():
            for n, p in tracked:
                held = p.detach().clone()
                p.copy_(ema[n])
                ema[n].copy_(held)

    best: tuple[dict[str, Any], np.ndarray] | None = None
    best_r10 = -1.0
    history: list[dict[str, float]] = []
    step = 0
    started = time.monotonic()
    for epoch in range(1, cfg.epochs + 1):
        head.train()
        running, seen = 0.0, 0
        bar = tqdm(total=steps_per_epoch, desc=f"joint {epoch}/{cfg.epochs}", unit="batch", mininterval=2.0)
        for _ in range(passes):
            order = rng.permutation(len(posts_with))
            for s in range(0, len(order), cfg.batch_size):
                batch = posts_with[order[s : s + cfg.batch_size]]
                caps = np.array([next_caption(int(r)) for r in batch], np.int64)
                if cfg.views == "mean":
                    x = source.mean_pooled(batch)
                else:
                    x = source.take(batch, rng.integers(0, source.views, len(batch)))
                img = nn.functional.normalize(head(x), dim=1)
                txt = _caption_batch(train_caps, words, caps, ids_t, w_t, cfg.word_dropout, gen)
                txt = nn.functional.normalize(nn.functional.dropout(txt, cfg.text_dropout), dim=1)
                cos = img @ txt.T
                labels = torch.arange(len(batch))
                loss = (ce(cos / cfg.temperature, labels) + ce(cos.T / cfg.temperature, labels)) / 2
                if cfg.hard_weight > 0 and step >= cfg.hard_from * total:
                    loss = loss + cfg.hard_weight * max_violation(cos, cfg.hard_margin)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
                step += 1
                if ema is not None:
                    with torch.no_grad():
                        for n, p in tracked:
                            ema[n].mul_(cfg.ema).add_(p.detach(), alpha=1 - cfg.ema)
                running += float(loss.detach()) * len(batch)
                seen += len(batch)
                bar.update(1)
                if report:
                    report("joint", step, total, "batches")
        bar.close()
        swap_ema()
        r10 = validate()
        entry = {"epoch": epoch, "loss": running / max(seen, 1),
                 "seconds": round(time.monotonic() - started, 1)}
        if r10 is not None:
            entry["val_r10"] = round(r10, 2)
        history.append(entry)
        log.info("joint epoch %d: loss %.4f%s (%.0f s)", epoch, entry["loss"],
                 "" if r10 is None else f", validation image search R@10 {r10:.1f}", entry["seconds"])
        if r10 is None or r10 >= best_r10:
            best = (copy.deepcopy(head.state_dict()), words_np())
            best_r10 = r10 if r10 is not None else best_r10
        swap_ema()
    assert best is not None
    head.load_state_dict(best[0])
    head.eval()
    return FinetunedModel(head, _fill_unseen(best[1], space, train_caps), history, cfg)


class FinetunedEncoder(nn.Module):
    """The bundle encoder of a trained head: network inputs (B, 3, 224, 224) → joint-space vectors.

    The frozen network up to pool4, then whatever the head did not get from its cache: the frozen 5a/5b
    and, for pooled input, their mean (and the lower levels' means), so one view gives exactly the head's
    output on that view's cached activations; the bundle encoder's ``crops`` then average the views.
    """

    def __init__(self, backbone: nn.Module, head: ImageHead) -> None:
        super().__init__()
        from train.image.activations import Lower, Upper

        self.lower = Lower(backbone)
        self.upper = Upper(backbone)
        self.head = head

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Network inputs → vectors."""
        x = self.lower(images)
        kind = self.head.cfg.input_kind()
        if kind == "pool4":
            out: torch.Tensor = self.head(x)
            return out
        y5a = self.upper.block_5a(x)
        grid = self.upper.block_5b(y5a)
        if kind == "grid":
            out = self.head(grid)
            return out
        pooled = grid.mean(dim=(2, 3))
        if self.head.cfg.levels:
            pooled = torch.cat([x.mean(dim=(2, 3)), y5a.mean(dim=(2, 3)), pooled], dim=1)
        out = self.head(pooled)
        return out


def export_finetuned(backbone: str, weights: Path | None, model: FinetunedModel, out_path: Path,
                     check_images: Sequence[Path]) -> dict[str, Any]:
    """Write the bundle encoder of ``model`` (:class:`FinetunedEncoder`), parity-checked against torch."""
    from train.image.export import export_verified
    from train.image.googlenet import build_backbone

    encoder = FinetunedEncoder(build_backbone(backbone, weights), model.head).eval()
    return export_verified(encoder, out_path, check_images)
