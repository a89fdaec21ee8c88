"""Train the joint map on real Flickr8k captions with a checkpoint (test_joint_resume.py kills it)."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import numpy as np

from space.textspace import TextSpace
from train.config import TextConfig
from train.corpus.posts import Post
from train.recipes.joint.model import JointConfig, JointModel, train_joint
from train.text.word2vec import build_text_space

N_POSTS, N_TRAIN = 300, 240
CONFIG = JointConfig(epochs=6, batch_size=16, num_threads=1)


def inputs(flickr8k: Path) -> tuple[list[Post], TextSpace, np.ndarray]:
    """The first photos' five real captions (240 train, 60 val), a quick Word2Vec, seeded features."""
    caps: dict[str, list[str]] = {}
    for line in (flickr8k / "Flickr8k.token.txt").read_text(encoding="utf-8").splitlines():
        name, _, text = line.partition("\t")
        caps.setdefault(name.split("#")[0], []).append(text.strip())
    names = sorted(caps)[:N_POSTS]
    posts = [Post(id=n, image=flickr8k / "images" / n, caption=caps[n][0], lang="en",
                  split="train" if i < N_TRAIN else "val", captions=tuple(caps[n]))
             for i, n in enumerate(names)]
    space = build_text_space(posts, TextConfig.quick()).space
    features = np.random.default_rng(0).normal(size=(N_POSTS, 64)).astype(np.float32)
    return posts, space, features


def train(flickr8k: Path, checkpoint: Path) -> JointModel:
    """The joint map of :func:`inputs`, checkpointed at ``checkpoint``."""
    posts, space, features = inputs(flickr8k)
    return train_joint(CONFIG, features, posts, space, np.ones(len(posts), bool), checkpoint=checkpoint)


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    train(Path(sys.argv[1]), Path(sys.argv[2])).save(Path(sys.argv[3]))
