"""The regressor trains on real Flickr8k images and real Word2Vec caption vectors (quick mode)."""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from space.tokenize import tokenize
from train.recipes.seed.config import ImageConfig
from train.recipes.seed.data import TrainingFailed
from train.recipes.seed.regressor import load_checkpoint, scale_targets
from train.recipes.seed.training import train_regressor

# Enough posts that the ridge start generalises (on 96 it overfits and a random start catches up).
N_TRAIN, N_VAL = 256, 64


def caption_targets(flickr8k: Path, names: list[str], dim: int = 32) -> np.ndarray:
    """TF-IDF-weighted Word2Vec caption vectors for ``names`` (gensim, trained on their captions)."""
    from gensim.models import Word2Vec

    caps: dict[str, list[str]] = defaultdict(list)
    for line in (flickr8k / "Flickr8k.token.txt").read_text(encoding="utf-8").splitlines():
        name, _, text = line.partition("\t")
        caps[name.split("#")[0]].append(text)
    docs = [tokenize(" ".join(caps[n])) for n in names]
    w2v = Word2Vec([tokenize(c) for n in names for c in caps[n]], vector_size=dim, min_count=2, epochs=20,
                   workers=1, seed=1)
    df = Counter(w for d in docs for w in set(d))
    out = []
    for d in docs:
        known = Counter(w for w in d if w in w2v.wv)
        weights = np.array([c * math.log2(len(docs) / df[w]) for w, c in known.items()], dtype=np.float32)
        vecs = np.stack([w2v.wv[w] for w in known])
        out.append((weights[:, None] * vecs).sum(0) / max(float(weights.sum()), 1e-6))
    return np.stack(out).astype(np.float32)


@pytest.fixture(scope="module")
def subset(flickr8k_dir: Path) -> tuple[list[Path], np.ndarray, list[str]]:
    train = (flickr8k_dir / "Flickr_8k.trainImages.txt").read_text().split()[:N_TRAIN]
    val = (flickr8k_dir / "Flickr_8k.devImages.txt").read_text().split()[:N_VAL]
    names = train + val
    return ([flickr8k_dir / "images" / n for n in names], caption_targets(flickr8k_dir, names),
            ["train"] * len(train) + ["val"] * len(val))


def test_quick_training_lowers_validation_loss(subset, weights_dir: Path, tmp_path: Path) -> None:
    images, targets, splits = subset
    # The seed-faithful recipe (random new layer, sigmoid cross-entropy) on quick-mode data.
    cfg = ImageConfig.quick_preset(epochs=3, train_views=1, init="gaussian", loss="bce")
    calls: list[tuple[str, int, int | None, str]] = []
    ckpt_path = train_regressor(cfg, images, targets, splits, weights_dir, tmp_path,
                                progress=lambda *a: calls.append(a))
    model, ckpt = load_checkpoint(ckpt_path)
    history = ckpt["history"]
    assert ckpt["config"] == cfg.to_dict()
    assert history[0]["epoch"] == 0 and len(history) == 4
    # The new layer starts at sigmoid(0) = 0.5 everywhere: training must beat that clearly.
    assert ckpt["val_loss"] < history[0]["val_loss"] - 0.005, history
    assert {c[0] for c in calls} >= {"cnn-features", "cnn-train"}
    assert calls[-1][:2] == ("cnn-train", 3 * 3) or any(c[0] == "cnn-train" and c[1] == c[2] for c in calls)
    # The checkpoint maps images into the word space, within the training targets' range.
    tmin, tmax = np.asarray(ckpt["target_min"]), np.asarray(ckpt["target_max"])
    from space.images import load_for_network

    with torch.no_grad():
        out = model(torch.from_numpy(load_for_network(images[-1])[None])).numpy()
    assert out.shape == (1, targets.shape[1])
    assert np.all(out >= tmin - 1e-5) and np.all(out <= tmax + 1e-5)
    assert len(list(tmp_path.glob("trunk-*.f16"))) == 2

    # The quick preset (ridge-initialised layer, centred cosine loss) ends better than the same run from a
    # random layer, and both runs reuse the trunk cache (still two cache files).
    ridge = ImageConfig.quick_preset(epochs=1, train_views=1)
    assert ridge.init == "ridge" and ridge.loss == "cosine"
    rand = replace(ridge, init="gaussian")
    h_ridge = torch.load(train_regressor(ridge, images, targets, splits, weights_dir, tmp_path / "r",
                                         cache_dir=tmp_path), weights_only=False)["history"]
    h_rand = torch.load(train_regressor(rand, images, targets, splits, weights_dir, tmp_path / "g",
                                        cache_dir=tmp_path), weights_only=False)["history"]
    assert len(list(tmp_path.glob("trunk-*.f16"))) == 2
    assert min(h["val_loss"] for h in h_ridge) < min(h["val_loss"] for h in h_rand), (h_ridge, h_rand)


def test_scale_targets_is_per_dimension() -> None:
    t = np.array([[0.0, 10.0], [2.0, 30.0], [1.0, 20.0]], dtype=np.float32)
    s = scale_targets(t, t.min(0), t.max(0))
    np.testing.assert_allclose(s, np.array([[0, 0], [1, 1], [0.5, 0.5]]))


def test_quick_preset_differs_and_round_trips() -> None:
    q = ImageConfig.quick_preset()
    assert q.quick and not ImageConfig().quick
    assert ImageConfig(**q.to_dict()) == q
    assert ImageConfig().lr == 0.001 and ImageConfig().batch_size == 120 and ImageConfig().loss == "bce"
    assert ImageConfig().init == "ridge"  # the seed recipe from a ridge-started layer; "gaussian" collapses


def test_view_targets_are_what_the_views_train_on(subset, weights_dir: Path, tmp_path: Path) -> None:
    keep = list(range(96)) + list(range(N_TRAIN, N_TRAIN + 32))  # a bit-exactness check needs few posts
    images = [subset[0][i] for i in keep]
    targets = subset[1][keep]
    splits = [subset[2][i] for i in keep]
    cfg = ImageConfig.quick_preset(epochs=1, train_views=2, loss="contrastive", lr=0.001)
    same = np.repeat(targets[:, None, :], 2, axis=1)
    with pytest.raises(TrainingFailed, match="view_targets"):
        train_regressor(cfg, images, targets, splits, weights_dir, tmp_path / "bad", view_targets=same[:, :1])

    def weights(name: str, view_targets: np.ndarray | None) -> torch.Tensor:
        ckpt = train_regressor(cfg, images, targets, splits, weights_dir, tmp_path / name, cache_dir=tmp_path,
                               view_targets=view_targets)
        return torch.load(ckpt, weights_only=False)["model"]["proj.weight"]

    plain = weights("plain", None)
    # Per-view targets equal to the post's target: the same training, to the bit.
    assert torch.equal(plain, weights("same", same))
    # Another post's target on the second view: a different model.
    other = same.copy()
    other[:, 1] = np.roll(targets, 1, axis=0)
    assert not torch.allclose(plain, weights("other", other))
