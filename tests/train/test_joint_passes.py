"""How many draws an epoch of the joint space makes: one per caption of the post with the most."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from space.textspace import TextSpace
from train.corpus.posts import Post
from train.recipes.joint.model import MAX_PASSES, JointConfig, train_joint

WORDS = ["dog", "cat", "ball", "grass", "beach", "water", "snow", "child", "bike", "street"]


def corpus(n_posts: int, n_captions: int) -> tuple[list[Post], TextSpace, np.ndarray]:
    rng = np.random.default_rng(0)
    posts = []
    for i in range(n_posts):
        caps = tuple(" ".join(rng.choice(WORDS, 3)) for _ in range(n_captions))
        posts.append(Post(id=str(i), image=Path(f"{i}.jpg"), caption=caps[0], lang="en", split="train",
                          captions=caps))
    space = TextSpace(WORDS, rng.normal(size=(len(WORDS), 8)).astype(np.float32), np.ones(len(WORDS)),
                      np.ones(len(WORDS), np.int64))
    return posts, space, rng.normal(size=(n_posts, 16)).astype(np.float32)


@pytest.mark.parametrize(("n_captions", "passes"), [(1, 1), (5, 5), (15, 15), (40, MAX_PASSES)])
def test_an_epoch_draws_each_post_once_per_caption(n_captions: int, passes: int) -> None:
    posts, space, feats = corpus(40, n_captions)
    totals: list[int] = []
    cfg = JointConfig(epochs=2, batch_size=16, num_threads=1)
    model = train_joint(cfg, feats, posts, space, np.ones(len(posts), bool),
                        progress=lambda stage, done, total, unit: totals.append(int(total or 0)))
    # 40 posts in batches of 16: three batches per pass.
    assert totals[-1] == cfg.epochs * passes * 3
    assert model.words.shape == (len(WORDS), 8)
    assert len(model.history) == cfg.epochs
