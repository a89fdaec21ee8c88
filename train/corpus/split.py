"""Train/val/test assignment: the corpus's own split where every post has one, else 80/5/15 by id hash.

Where only some posts carry a split, the others go to train.
Hashing the id (not a random state) keeps a post in the same split across runs, corpus growth and
filter changes; images of one multi-image post share their post's hash so they never straddle splits.
"""

from __future__ import annotations

import hashlib
import logging
from collections import Counter
from collections.abc import Sequence
from dataclasses import replace

from train.config import SplitConfig
from train.corpus.posts import Post

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")


def hash_fraction(key: str, salt: str) -> float:
    """A stable number in [0, 1) from ``key``."""
    digest = hashlib.sha256(f"{salt}:{key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def split_of(post: Post, cfg: SplitConfig) -> str:
    """The hash split of one post."""
    key = str(post.source.get("shortcode") or post.id) if post.source else post.id
    x = hash_fraction(key, cfg.salt)
    if x < cfg.train:
        return "train"
    if x < cfg.train + cfg.val:
        return "val"
    return "test"


def assign_splits(posts: Sequence[Post], cfg: SplitConfig) -> tuple[list[Post], str]:
    """Posts with ``split`` set, and how ("corpus" or "hash")."""
    given = sum(p.split in SPLITS for p in posts)
    if cfg.use_corpus_split and posts and given == len(posts):
        method, out = "corpus", list(posts)
    elif cfg.use_corpus_split and given:
        # A standard split with a few unlisted items (Flickr8k's 91): the unlisted ones train, so the
        # published val/test sets stay exactly the standard ones.
        method = "corpus+train"
        out = [p if p.split in SPLITS else replace(p, split="train") for p in posts]
    else:
        method, out = "hash", [replace(p, split=split_of(p, cfg)) for p in posts]
    counts = Counter(p.split for p in out)
    log.info("split (%s): %s", method, ", ".join(f"{s} {counts.get(s, 0)}" for s in SPLITS))
    return out, method
