"""Retrieval-time centring (space.centering, train.evaluate) and the contrastive loss option."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from space.centering import Centering
from space.errors import UnknownWords
from space.query import parse_query
from space.textspace import TextSpace, unit
from train.evaluate import mean_vectors, retrieval_metrics
from train.image.googlenet import FEATURE_DIM
from train.recipes.seed.config import ImageConfig
from train.recipes.seed.losses import loss_function
from train.recipes.seed.regressor import Regressor


def offset_case(seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Images and captions sharing one huge common vector, plus small specific parts that match.

    Image norms vary with their specific part, so after normalising, raw cosine ranks images mostly by
    how little they pull off the shared offset (the same images win for every caption); the image side
    also carries its own fixed bias, which tilts caption ranking toward captions along it.
    """
    rng = np.random.default_rng(seed)
    n, d = 200, 32
    offset = np.zeros(d)
    offset[0] = 50.0
    bias = np.zeros(d)
    bias[1] = 10.0
    specific = rng.normal(size=(n, d))
    specific[:, 0] = 0
    images = offset + bias + rng.uniform(0.2, 6.0, size=(n, 1)) * specific
    captions = offset + specific + 0.3 * rng.normal(size=(n, d))
    train_images = offset + bias + 0.1 * rng.normal(size=(500, d))
    train_captions = offset + 0.1 * rng.normal(size=(500, d))
    return images.astype(np.float32), captions.astype(np.float32), train_images, train_captions


def test_centring_fixes_a_shared_offset_that_ruins_raw_cosine() -> None:
    images, captions, train_images, train_captions = offset_case()
    owner = list(range(len(images)))
    raw = retrieval_metrics(images, captions, owner)
    c = mean_vectors(train_images, train_captions)
    cen = retrieval_metrics(c.images(images), c.texts(captions), owner)
    # Measured: raw 23.5 / 85.0 (image search / annotation R@1), centred 100 / 100.
    assert raw["image_search"]["r1"] < 40.0 and raw["annotation"]["r1"] < 90.0
    assert cen["image_search"]["r1"] > 95.0 and cen["annotation"]["r1"] > 95.0


def test_centring_keeps_empty_queries_empty_and_round_trips(tmp_path) -> None:
    c = Centering(np.ones(4, np.float32), np.full(4, 2.0, np.float32))
    texts = np.array([[0, 0, 0, 0], [3, 3, 3, 3]], np.float32)
    assert c.texts(texts).tolist() == [[0, 0, 0, 0], [1, 1, 1, 1]]
    assert Centering.load(tmp_path) is None
    c.save(tmp_path)
    back = Centering.load(tmp_path)
    assert back is not None and back.image_mean.tolist() == [1] * 4 and back.text_mean.tolist() == [2] * 4
    # Zero rows (unreadable images) stay out of the means.
    m = mean_vectors(np.array([[0, 0], [2, 4]], np.float32), np.array([[1, 1], [3, 3]], np.float32))
    assert m.image_mean.tolist() == [2, 4] and m.text_mean.tolist() == [2, 2]


def test_centred_query_embedding() -> None:
    words = ["dog", "cat", "sea"]
    vecs = np.array([[10, 1, 0], [10, -1, 0], [10, 0, 1]], np.float32)
    space = TextSpace(words, vecs, np.ones(3, np.float32), np.ones(3, np.int64))
    c = Centering(np.zeros(3, np.float32), np.array([10, 0, 0], np.float32))
    vec, unknown = c.embed_query(space, parse_query("dog zebra"))
    assert unknown == ["zebra"]
    np.testing.assert_allclose(vec, [0, 1, 0], atol=1e-6)
    vec, _ = c.embed_query(space, parse_query("dog -cat"))
    np.testing.assert_allclose(vec, [0, 1, 0], atol=1e-6)
    # Raw, "dog" and "cat" are nearly the same direction; centred, they are opposite.
    assert float(unit(vecs[0]) @ unit(vecs[1])) > 0.95
    with pytest.raises(UnknownWords):
        c.embed_query(space, parse_query("zebra"))


def test_centred_small_real_bundle(small_bundle, tmp_path) -> None:
    """A real bundle scored centred (means from its own training split): well-formed, raw kept beside."""
    import json
    import shutil

    from train.evaluate import embed_captions, evaluate_bundle

    copy = tmp_path / "b"
    shutil.copytree(small_bundle, copy)
    (copy / "centering.npz").unlink(missing_ok=True)
    raw = evaluate_bundle(copy)
    assert "uncentred" not in raw and "centred" not in raw
    items = json.loads((copy / "images.json").read_text())["items"]
    vectors = np.load(copy / "images.npy")
    train = [it for it in items if it.get("split") == "train"]
    train_caps, _ = embed_captions(TextSpace.load(copy), [it["caption"] for it in train])
    mean_vectors(vectors[[int(it["key"]) for it in train]], train_caps).save(copy)
    cen = evaluate_bundle(copy)
    assert cen["centred"] is True and cen["uncentred"]["image_search"] == raw["image_search"]
    for side in ("image_search", "annotation"):
        r = cen[side]
        assert 0 <= r["r1"] <= r["r5"] <= r["r10"] <= 100
    assert cen["image_search"]["r10"] > 1.2 * 1000 / cen["n_images"]
    assert cen["image_search"] != raw["image_search"]  # centring changes the ranking


def test_contrastive_loss_lowers_on_a_tiny_batch() -> None:
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    targets = rng.normal(size=(16, 8)).astype(np.float32) + 5.0
    cfg = ImageConfig(loss="contrastive", temperature=0.1, dropout=0.0)
    # The backbone is not used here (only the new layer learns), so a placeholder keeps the test fast.
    model = Regressor(torch.nn.Module(), 8, targets.min(0), targets.max(0), cfg.dropout)
    center = torch.from_numpy(targets.mean(0))
    loss_fn = loss_function(cfg, model, center)
    pooled = torch.randn(16, FEATURE_DIM)  # distinct pooled features; only the new layer learns here
    raw = torch.from_numpy(targets)
    opt = torch.optim.SGD(model.proj.parameters(), lr=0.05, momentum=0.9)
    losses = []
    for _ in range(40):
        loss = loss_fn(model.proj(pooled), raw, raw)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert losses[0] > 2.0  # log(16) ≈ 2.8 for a model no better than chance
    assert losses[-1] < 0.5 * losses[0]
    # Two identical targets in a batch are not each other's negatives: the loss stays finite.
    dup = raw.clone()
    dup[1] = dup[0]
    assert torch.isfinite(loss_fn(model.proj(pooled), dup, dup))
