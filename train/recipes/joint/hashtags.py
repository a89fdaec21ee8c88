"""The hashtag model of a bundle (``space.hashtags.Hashtagger``): its word head and neighbour votes.

Candidates are the vocabulary's content words in the most training posts' captions (``max_words`` of
them, each in at least ``min_posts`` posts). The head is one logistic regression per candidate on the
posts' image vectors, trained with binary cross-entropy on "the word is in one of the post's captions";
the neighbour votes need only which candidates each training post's captions hold.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from space.hashtags import Hashtagger
from space.textspace import TextSpace
from space.tokenize import tokenize
from train.corpus.posts import Post
from train.progress import ProgressCallback, throttled

log = logging.getLogger(__name__)

LANGUAGE_SHARE = 0.2


@dataclass(frozen=True)
class HashtagConfig:
    """How the word head is trained."""

    max_words: int = 2000
    min_posts: int = 5
    epochs: int = 20
    lr: float = 1e-3
    weight_decay: float = 1e-2
    dropout: float = 0.2
    batch_size: int = 128
    seed: int = 0

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict (stored in manifests)."""
        return asdict(self)


def post_words(post: Post, space: TextSpace) -> set[int]:
    """Vocabulary rows of the words in any of the post's reference captions."""
    out: set[int] = set()
    for text in post.reference_captions:
        tokens = tokenize(text, language=post.language_of(text))
        out.update(i for t in tokens if (i := space.index.get(t)) is not None)
    return out


def word_languages(posts: Sequence[Post], pool: np.ndarray, space: TextSpace, column: dict[int, int],
                   languages: list[str]) -> np.ndarray:
    """(L, H) bool: the languages each candidate belongs to.

    A word belongs to the languages of the captions people wrote it in — each post's own caption, in its
    language (reference captions may hold translations) — where it is at least ``LANGUAGE_SHARE`` as
    frequent (in posts of that language) as in the language that uses it most. One stray use is not
    enough: an English word left untranslated in a few Catalan captions ("water") stays English, the
    Catalan "home" (man) that a few English captions also hold stays Catalan, and words every language
    writes (names, "dos" in es and ca) belong to each.
    """
    counts = np.zeros((len(languages), len(column)), np.float64)
    n_posts = np.zeros(len(languages), np.float64)
    for p in pool.tolist():
        post = posts[p]
        if post.lang in languages:
            li = languages.index(post.lang)
            n_posts[li] += 1
            own = {space.index.get(t) for t in tokenize(post.caption, language=post.lang)}
            counts[li, [column[w] for w in own if w in column]] += 1
    rate = counts / np.maximum(n_posts, 1)[:, None]
    return (rate > 0) & (rate >= LANGUAGE_SHARE * rate.max(axis=0, keepdims=True))


def train_hashtags(cfg: HashtagConfig, vectors: np.ndarray, posts: Sequence[Post],
                   space: TextSpace, device: str = "auto",
                   progress: ProgressCallback | None = None) -> Hashtagger:
    """Fit the head on the "train" posts (``vectors`` row i is ``posts[i]``'s image vector).

    The labels stay sparse (each post's candidate columns, as the neighbour votes keep them); a batch's
    dense rows are built when it is drawn, so memory is the batch's, not posts × candidates (3.8 GB at
    325,000 posts). On a GPU when there is one (``device``). ``progress`` counts batches over all epochs.
    """
    import torch
    from torch import nn

    from train.recipes.joint.model import joint_device

    dev = torch.device(joint_device(device))
    torch.manual_seed(cfg.seed)
    pool = np.array([i for i, p in enumerate(posts) if p.split == "train"] or range(len(posts)), np.int64)
    words = [np.fromiter(post_words(posts[i], space), np.int64) for i in pool.tolist()]
    df = np.bincount(np.concatenate(words) if words else np.zeros(0, np.int64), minlength=len(space.words))
    ranked = sorted((int(w) for w in np.flatnonzero(df >= cfg.min_posts)), key=lambda w: (-df[w], w))
    rows = np.array(ranked[: cfg.max_words], np.int64)
    if len(rows) == 0:
        raise ValueError(f"no word is in {cfg.min_posts} training posts: no hashtag candidates")
    column = {int(r): h for h, r in enumerate(rows.tolist())}
    indptr = [0]
    indices: list[int] = []
    for ws in words:
        indices.extend(sorted(column[w] for w in ws.tolist() if w in column))
        indptr.append(len(indices))
    starts = np.array(indptr, np.int64)
    cols_all = np.array(indices, np.int64)

    def labels(batch: np.ndarray) -> torch.Tensor:
        """The batch's dense label rows (1 where the candidate is in one of the post's captions)."""
        lengths = starts[batch + 1] - starts[batch]
        cols = np.concatenate([cols_all[starts[p]:starts[p + 1]] for p in batch.tolist()] or [cols_all[:0]])
        y = torch.zeros(len(batch), len(rows), device=dev)
        at = torch.from_numpy(np.repeat(np.arange(len(batch)), lengths)).to(dev)
        y[at, torch.from_numpy(cols).to(dev)] = 1.0
        return y

    x = torch.from_numpy(np.asarray(vectors, np.float32)[pool]).to(dev)
    head = nn.Linear(x.shape[1], len(rows)).to(dev)
    opt = torch.optim.AdamW(head.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    gen = torch.Generator().manual_seed(cfg.seed)
    per_epoch = -(-len(x) // cfg.batch_size)
    report = throttled(progress)
    done = 0
    for _ in range(cfg.epochs):
        perm = torch.randperm(len(x), generator=gen)
        for s in range(0, len(x), cfg.batch_size):
            b = perm[s : s + cfg.batch_size]
            logits = head(nn.functional.dropout(x[b.to(dev)], cfg.dropout))
            loss = nn.functional.binary_cross_entropy_with_logits(logits, labels(b.numpy()))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            done += 1
            if report is not None:
                report("hashtags", done, per_epoch * cfg.epochs, "batches")
    languages = sorted({p.lang for p in posts if p.lang})
    in_language = word_languages(posts, pool, space, column, languages) if len(languages) > 1 else None
    log.info("hashtags: %d candidate words, head trained on %d posts", len(rows), len(pool))
    return Hashtagger(rows, head.weight.detach().cpu().numpy().astype(np.float32),
                      head.bias.detach().cpu().numpy().astype(np.float32), pool, starts, cols_all,
                      tuple(languages) if in_language is not None else (), in_language)
