"""The joint recipe: one space learned for images and words together, from frozen GoogLeNet features.

Each image is its pooled GoogLeNet features (the mean over its crops of the global means of inception
pool4, 5a and 5b, 2,688 values: :mod:`train.image.levels`), mapped by a linear layer;
each caption is the TF-IDF-weighted mean of its words' vectors, as before — but the word vectors are
learned too, starting from Word2Vec's. Both sides are trained together with a symmetric in-batch
InfoNCE loss on (image, one of its reference captions) pairs, so a caption ranks its own image first
and an image its own caption. The text side stays a weighted mean of word vectors, so the engine embeds
queries and ranks words without torch, exactly as it did with raw Word2Vec vectors.

On Flickr8k's 1K test (frozen features, centre + mirror) this lifts image search R@10 from 39 (ridge
regression onto fixed Word2Vec caption vectors) to 55, and annotation R@10 from 31 to 61: fixed
Word2Vec vectors of a 40,000-caption corpus, not the CNN, were the limit. Related words stay Word2Vec
neighbours (``words.npy``); the learned vectors are published beside them (``joint_words.npy``).
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from space.textspace import TextSpace, unit
from space.tokenize import tokenize
from train.corpus.posts import Post
from train.progress import ProgressCallback, throttled

log = logging.getLogger(__name__)

JOINT_FILE = "joint.npz"
# Draws of each training post per epoch, one reference caption each: as many as the post with the most
# captions has (Flickr8k five; the multilingual demo's ~15 in three languages), so an epoch sees every
# caption and each language gets the draws it would get alone. Capped to bound an epoch's cost.
MAX_PASSES = 16


@dataclass(frozen=True)
class JointConfig:
    """How the joint space is trained (field order is part of the stage key)."""

    epochs: int = 10
    batch_size: int = 128
    lr: float = 2e-3  # AdamW peak, after a linear warm-up over the first tenth, cosine decay to zero
    weight_decay: float = 1e-4
    # 0.07 gains about a point of image-search R@10 with the levels features but costs 3 points of the
    # whole-corpus word search (a word against each post's photo and caption), so 0.05 stays (docs/
    # benchmarks.md, "Joint recipe ablation").
    temperature: float = 0.05
    # The wider, multi-level features (train.image.levels) overfit sooner: twice the dropout measured best
    # with them; 0.2 was the setting for 5b's features alone.
    dropout: float = 0.4  # on the standardised image features
    seed: int = 0
    num_threads: int | None = None  # None: all cores

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict (stored in manifests)."""
        return asdict(self)


@dataclass(frozen=True)
class JointModel:
    """The learned space: image features → vector (``features @ weight + bias``) and one vector per word."""

    weight: np.ndarray  # (F, D)
    bias: np.ndarray  # (D,)
    words: np.ndarray  # (V, D), rows aligned with the text space's vocabulary
    history: list[dict[str, float]]

    def images(self, features: np.ndarray) -> np.ndarray:
        """Vectors of pooled image features (N, F)."""
        return (np.asarray(features, np.float32) @ self.weight + self.bias).astype(np.float32)

    def save(self, path: Path) -> None:
        """Write the arrays (and the history as JSON text) to ``path`` (.npz)."""
        import json

        np.savez(path, weight=self.weight, bias=self.bias, words=self.words,
                 history=np.array(json.dumps(self.history)))

    @classmethod
    def load(cls, path: Path) -> JointModel:
        """Read a model written by :meth:`save`."""
        import json

        with np.load(path) as data:
            return cls(np.asarray(data["weight"]), np.asarray(data["bias"]), np.asarray(data["words"]),
                       json.loads(str(data["history"])))


@dataclass(frozen=True)
class Captions:
    """Every reference caption of some posts as word rows and TF-IDF weights (a ragged batch)."""

    owner: np.ndarray  # (C,) post index of each caption
    start: np.ndarray  # (C + 1,) offsets into ids/weights
    ids: np.ndarray  # word rows
    weights: np.ndarray  # count × idf of each (caption, word)

    @classmethod
    def of(cls, posts: Sequence[Post], rows: Sequence[int], space: TextSpace) -> Captions:
        """The captions of ``posts[rows]``; captions without a known word are left out."""
        owner: list[int] = []
        start = [0]
        ids: list[int] = []
        weights: list[float] = []
        for r in rows:
            post = posts[r]
            for text in post.reference_captions:
                counts: dict[int, int] = {}
                for tok in tokenize(text, language=post.language_of(text)):
                    i = space.index.get(tok)
                    if i is not None:
                        counts[i] = counts.get(i, 0) + 1
                w = [c * float(space.idf[i]) for i, c in counts.items()]
                if not counts or sum(w) <= 0:
                    continue
                owner.append(r)
                ids.extend(counts)
                weights.extend(w)
                start.append(len(ids))
        return cls(np.array(owner, np.int64), np.array(start, np.int64), np.array(ids, np.int64),
                   np.array(weights, np.float32))

    def __len__(self) -> int:
        return len(self.owner)

    def embed(self, words: np.ndarray, which: np.ndarray | None = None) -> np.ndarray:
        """Weighted means of ``words`` rows for the captions ``which`` (all by default)."""
        which = np.arange(len(self)) if which is None else which
        out = np.zeros((len(which), words.shape[1]), np.float32)
        for k, c in enumerate(which.tolist()):
            s, e = self.start[c], self.start[c + 1]
            w = self.weights[s:e]
            out[k] = w @ words[self.ids[s:e]] / w.sum()
        return out


def warmup_cosine(step: int, warmup: int, total: int) -> float:
    """The learning-rate factor at ``step``: a linear warm-up over ``warmup`` steps, then cosine to 0."""
    if step < warmup:
        return (step + 1) / warmup
    return 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warmup) / max(1, total - warmup))))


def recall_at(image_vecs: np.ndarray, caption_vecs: np.ndarray, owner: np.ndarray, k: int = 10) -> float:
    """Image-search R@k in percent: how often a caption's own image is among its k nearest."""
    sims = unit(caption_vecs) @ unit(image_vecs).T
    correct = sims[np.arange(len(owner)), owner]
    return float(100 * np.mean((sims > correct[:, None]).sum(axis=1) < k))


def joint_device(device: str = "auto") -> str:
    """``cuda`` when asked for or (``auto``) when torch sees a GPU, else ``cpu``."""
    import torch

    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda: torch sees no CUDA device")
    return "cuda" if device != "cpu" and torch.cuda.is_available() else "cpu"


def _standardised(feats: np.ndarray, rows: np.ndarray,
                  chunk: int = 16384) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(feats - mu) / sd`` with the moments of ``rows``, written a chunk at a time into one array; and
    ``mu``, ``sd``.

    At the original's scale the features are gigabytes (313,000 photos × 2,688 levels: 3.4 GB); the
    whole-array expression held two more full copies at once. Elementwise it is the same computation, so
    the same bits.
    """
    train = feats[rows]
    mu = train.mean(axis=0)
    sd = train.std(axis=0) + 1e-6
    del train
    out = np.empty(feats.shape, np.float32)
    for s in range(0, len(feats), chunk):
        np.subtract(feats[s:s + chunk], mu, out=out[s:s + chunk])
        out[s:s + chunk] /= sd
    return out, mu, sd


def train_joint(
    cfg: JointConfig,
    features: np.ndarray,
    posts: Sequence[Post],
    space: TextSpace,
    usable: np.ndarray,
    progress: ProgressCallback | None = None,
    *,
    device: str = "auto",
    checkpoint: Path | None = None,
) -> JointModel:
    """Learn the image map and the word vectors on the "train" posts; keep the best epoch on "val".

    ``features`` (N, F) are the posts' pooled image features; ``usable`` (N,) bool marks the rows whose
    image could be read. Without a validation split the last epoch is kept. The word table is updated
    row by row (:class:`~train.recipes.joint.rowadam.RowAdamW`: only the words of each batch, the same
    steps as dense AdamW). With ``checkpoint``, the state after each epoch is saved there and a run
    finding one resumes after its epoch, as if never stopped.
    """
    import torch
    from torch import nn
    from tqdm import tqdm

    from train.recipes.joint.rowadam import RowAdamW

    dev = torch.device(joint_device(device))
    torch.manual_seed(cfg.seed)
    torch.set_num_threads(cfg.num_threads or torch.get_num_threads())
    rng = np.random.default_rng(cfg.seed)
    splits = np.array([p.split for p in posts])
    train_rows = np.flatnonzero((splits == "train") & usable)
    val_rows = np.flatnonzero((splits == "val") & usable)
    train_caps = Captions.of(posts, train_rows.tolist(), space)
    if len(train_caps) == 0:
        raise ValueError("no training caption has a known word: the joint space cannot be trained")
    val_caps = Captions.of(posts, val_rows.tolist(), space)

    feats = np.asarray(features, np.float32)
    standard, mu, sd = _standardised(feats, train_rows)
    x_all = torch.from_numpy(standard).to(dev)
    w2v = space.vectors - space.vectors.mean(axis=0)
    scale = float(np.linalg.norm(w2v, axis=1).mean()) or 1.0
    table = torch.from_numpy((w2v / scale).astype(np.float32)).to(dev)
    proj = nn.Linear(feats.shape[1], space.dim).to(dev)
    opt = torch.optim.AdamW(proj.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)

    # One epoch draws each training post once per caption of the post with the most, each time
    # with its next reference caption in a shuffled cycle, and never puts one post twice in a batch (no
    # false negatives). A post with more captions (translations) sees each of them over the epochs.
    by_post: dict[int, list[int]] = {}
    for c, r in enumerate(train_caps.owner.tolist()):
        by_post.setdefault(r, []).append(c)
    posts_with = np.array(sorted(by_post), np.int64)
    passes = min(MAX_PASSES, max(len(v) for v in by_post.values()))
    cycles = {r: [int(c) for c in rng.permutation(v)] for r, v in by_post.items()}

    def next_caption(r: int) -> int:
        if not cycles[r]:
            cycles[r] = [int(c) for c in rng.permutation(by_post[r])]
        return cycles[r].pop()

    steps_per_epoch = passes * math.ceil(len(posts_with) / cfg.batch_size)
    total = cfg.epochs * steps_per_epoch
    warmup = max(1, total // 10)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: warmup_cosine(s, warmup, total))
    # Step t (1-based) runs at the rate LambdaLR gives the map's optimiser: lr · factor(t − 1).
    words_opt = RowAdamW(table, [0.0] + [cfg.lr * warmup_cosine(t - 1, warmup, total)
                                         for t in range(1, total + 1)], weight_decay=cfg.weight_decay)
    ids_t = torch.from_numpy(train_caps.ids).to(dev)
    w_t = torch.from_numpy(train_caps.weights).to(dev)
    labels_cache: dict[int, torch.Tensor] = {}
    report = throttled(progress)

    def caption_batch(caps: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """The batch's caption vectors and the word rows they read (a leaf: its gradient steps them)."""
        lengths = train_caps.start[caps + 1] - train_caps.start[caps]
        flat = torch.from_numpy(np.concatenate([np.arange(train_caps.start[c], train_caps.start[c + 1])
                                                for c in caps])).to(dev)
        seg = torch.from_numpy(np.repeat(np.arange(len(caps)), lengths)).to(dev)
        uniq, inv = torch.unique(ids_t[flat], return_inverse=True)
        rows = words_opt.prepare(uniq).requires_grad_()
        w = w_t[flat]
        summed = torch.zeros(len(caps), space.dim, device=dev).index_add_(0, seg, rows[inv] * w[:, None])
        norm = torch.zeros(len(caps), device=dev).index_add_(0, seg, w)
        return summed / norm[:, None], rows

    def snapshot() -> JointModel:
        words_opt.flush()
        weight = proj.weight.detach().cpu().numpy()
        w = weight.T / sd[:, None]
        b = proj.bias.detach().cpu().numpy() - (mu / sd) @ weight.T
        return JointModel(w.astype(np.float32), b.astype(np.float32),
                          table.cpu().numpy().astype(np.float32).copy(), [])

    def validate(model: JointModel) -> float | None:
        if len(val_caps) == 0:
            return None
        return recall_at(model.images(feats[val_rows]), val_caps.embed(model.words),
                         np.searchsorted(val_rows, val_caps.owner))

    best: JointModel | None = None
    best_r10 = -1.0
    history: list[dict[str, float]] = []
    step = 0
    first = 1
    started = time.monotonic()
    if checkpoint is not None and checkpoint.is_file():
        state = torch.load(checkpoint, map_location="cpu", weights_only=False)
        proj.load_state_dict(state["proj"])
        opt.load_state_dict(state["opt"])
        sched.load_state_dict(state["sched"])
        table.copy_(state["table"].to(dev))
        words_opt.load_state_dict(state["words_opt"])
        rng.bit_generator.state = state["rng"]
        torch.set_rng_state(state["torch_rng"])
        if dev.type == "cuda" and state.get("cuda_rng") is not None:
            torch.cuda.set_rng_state(state["cuda_rng"], dev)
        cycles = state["cycles"]
        best, best_r10, history, step = state["best"], state["best_r10"], state["history"], state["step"]
        first = state["epoch"] + 1
        log.info("joint: resuming after epoch %d of %d from %s", state["epoch"], cfg.epochs, checkpoint)
    for epoch in range(first, cfg.epochs + 1):
        proj.train()
        running, seen = 0.0, 0
        bar = tqdm(total=steps_per_epoch, desc=f"joint {epoch}/{cfg.epochs}", unit="batch", mininterval=1.0)
        for _ in range(passes):
            order = rng.permutation(len(posts_with))
            for s in range(0, len(order), cfg.batch_size):
                batch_posts = posts_with[order[s : s + cfg.batch_size]]
                caps = np.array([next_caption(int(r)) for r in batch_posts], np.int64)
                x = nn.functional.dropout(x_all[torch.from_numpy(batch_posts).to(dev)], cfg.dropout)
                img = nn.functional.normalize(proj(x), dim=1)
                txt, rows = caption_batch(caps)
                txt = nn.functional.normalize(txt, dim=1)
                sims = img @ txt.T / cfg.temperature
                n = len(caps)
                labels = labels_cache.setdefault(n, torch.arange(n, device=dev))
                ce = nn.functional.cross_entropy
                loss = (ce(sims, labels) + ce(sims.T, labels)) / 2
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                assert rows.grad is not None
                words_opt.step(rows.grad)
                sched.step()
                step += 1
                running += float(loss.detach()) * n
                seen += n
                bar.update(1)
                if report:
                    report("joint", step, total, "batches")
        bar.close()
        proj.eval()
        model = snapshot()
        r10 = validate(model)
        entry = {"epoch": epoch, "loss": running / max(seen, 1),
                 "seconds": round(time.monotonic() - started, 1)}
        if r10 is not None:
            entry["val_r10"] = round(r10, 2)
        history.append(entry)
        log.info("joint epoch %d: loss %.4f%s", epoch, entry["loss"],
                 "" if r10 is None else f", validation image search R@10 {r10:.1f}")
        if r10 is None or r10 >= best_r10:
            best, best_r10 = model, (r10 if r10 is not None else best_r10)
        if checkpoint is not None and epoch < cfg.epochs:
            _save_checkpoint(checkpoint, {
                "epoch": epoch, "proj": proj.state_dict(), "opt": opt.state_dict(),
                "sched": sched.state_dict(), "table": table.cpu(), "words_opt": words_opt.state_dict(),
                "rng": rng.bit_generator.state, "torch_rng": torch.get_rng_state(),
                "cuda_rng": torch.cuda.get_rng_state(dev) if dev.type == "cuda" else None,
                "cycles": cycles, "best": best, "best_r10": best_r10, "history": history, "step": step})
    assert best is not None
    final = JointModel(best.weight, best.bias, _fill_unseen(best.words, space, train_caps), history)
    return final


def _save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """Write ``state`` to ``path`` atomically (a kill while saving keeps the previous epoch's)."""
    import torch

    tmp = path.with_name(path.name + ".partial")
    torch.save(state, tmp)
    os.replace(tmp, path)


def _fill_unseen(words: np.ndarray, space: TextSpace, caps: Captions) -> np.ndarray:
    """Words no training caption used keep Word2Vec's place, mapped into the learned space.

    Their learned rows never moved from the starting point; a ridge map from Word2Vec vectors to the
    learned vectors of the words training did use carries them along with their neighbours.
    """
    seen = np.zeros(len(space.words), bool)
    seen[np.unique(caps.ids)] = True
    if seen.all() or seen.sum() < 2:
        return words
    x = space.vectors[seen].astype(np.float64)
    xm = x.mean(axis=0)
    ym = words[seen].mean(axis=0)
    xc = x - xm
    gram = xc.T @ xc
    lam = float(np.trace(gram)) / gram.shape[0]
    m = np.linalg.solve(gram + lam * np.eye(gram.shape[0]), xc.T @ (words[seen] - ym))
    out = words.copy()
    out[~seen] = ((space.vectors[~seen] - xm) @ m + ym).astype(np.float32)
    return out
