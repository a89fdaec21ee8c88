"""Blocked evaluation: the same ranks as the whole similarity matrix, in the memory of one block; a test
split over 5,000 images also scored on seeded 1K and 5K samples."""

from __future__ import annotations

import tracemalloc
from pathlib import Path

import numpy as np
import pytest

from space.textspace import unit
from train.evaluate import format_table, retrieval_metrics, retrieval_ranks, score_test_split


def full_matrix_ranks(image_vecs: np.ndarray, caption_vecs: np.ndarray,
                      owner: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The reference: the whole captions × images matrix at once (the evaluation as it was)."""
    sims = unit(np.asarray(caption_vecs, np.float32)) @ unit(np.asarray(image_vecs, np.float32)).T
    correct = sims[np.arange(len(owner)), owner]
    search = (sims >= correct[:, None]).sum(axis=1)
    ann = np.empty(len(image_vecs), dtype=np.int64)
    for i in range(len(image_vecs)):
        mine = np.flatnonzero(owner == i)
        if len(mine) == 0:
            ann[i] = sims.shape[0]
            continue
        best = sims[mine, i].max()
        ann[i] = 1 + int((sims[:, i] >= best).sum()) - int((sims[mine, i] >= best).sum())
    return search, ann


@pytest.mark.parametrize("block_bytes", [4 * 300, 4 * 300 * 7, 1 << 20])
def test_blocked_ranks_equal_the_full_matrix(block_bytes: int) -> None:
    rng = np.random.default_rng(3)
    images = rng.standard_normal((300, 24)).astype(np.float32)
    owner = rng.integers(0, 290, size=900)  # unordered, some images without a caption
    captions = images[owner] + rng.standard_normal((900, 24)).astype(np.float32)
    captions[::50] = 0  # empty queries: tie with every image
    captions[1::7] = np.round(captions[1::7])  # coarse vectors: exact ties between images
    images[5] = images[6]  # two identical images
    blocked = retrieval_ranks(images, captions, owner, block_bytes)
    reference = full_matrix_ranks(images, captions, owner)
    assert np.array_equal(blocked[0], reference[0]) and np.array_equal(blocked[1], reference[1])


def test_memory_is_one_block() -> None:
    rng = np.random.default_rng(0)
    images = rng.standard_normal((2_000, 16)).astype(np.float32)
    owner = np.repeat(np.arange(2_000), 2)
    captions = images[owner] + rng.standard_normal((4_000, 16)).astype(np.float32)
    tracemalloc.start()
    try:
        retrieval_metrics(images, captions, owner, block_bytes=1 << 20)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    # The whole matrix and its boolean copy would be 40 MB.
    assert peak < 6 << 20, f"peak {peak / 2**20:.1f} MB"


def test_a_test_split_over_5000_images_is_also_scored_on_seeded_samples() -> None:
    rng = np.random.default_rng(1)
    images = rng.standard_normal((6_000, 16)).astype(np.float32)
    owner = np.arange(6_000)
    captions = images + 1.5 * rng.standard_normal((6_000, 16)).astype(np.float32)
    metrics = score_test_split(images, captions, owner)
    protocols = metrics["protocols"]
    assert metrics["n_images"] == 6_000 and protocols["seed"] == 0 and "5,000" in protocols["about"]
    assert protocols["1k"]["n_images"] == 1_000 and protocols["1k"]["folds"] == 5
    assert protocols["5k"]["n_images"] == 5_000 and protocols["5k"]["n_queries"] == 5_000
    # Smaller candidate sets rank higher: 1K above 5K above the whole split.
    r10 = [m["image_search"]["r10"] for m in (protocols["1k"], protocols["5k"], metrics)]
    assert r10[0] > r10[1] > r10[2]
    picked = np.sort(np.random.default_rng(0).permutation(6_000)[:5_000])
    assert protocols["5k"] == retrieval_metrics(images[picked], captions[picked], np.arange(5_000))
    assert score_test_split(images, captions, owner) == metrics
    assert "protocols" not in score_test_split(images[:5_000], captions[:5_000], owner[:5_000])
    table = format_table({"b": metrics})  # `train eval` says which figures are which
    assert "b, 1K (mean of 5 samples)" in table and "b, 5K sample" in table and "b, whole test split" in table
    assert protocols["about"] in table


def test_a_real_bundle_scores_as_with_the_full_matrix(small_bundle: Path) -> None:
    import json

    from space import bundle
    from space.textspace import TextSpace
    from train.evaluate import embed_captions, evaluation_set

    manifest = json.loads((small_bundle / bundle.MANIFEST).read_text(encoding="utf-8"))
    items = json.loads((small_bundle / bundle.IMAGE_META).read_text(encoding="utf-8"))["items"]
    vectors = np.load(small_bundle / bundle.IMAGE_VECTORS)
    image_vecs, captions, owner, _ = evaluation_set(small_bundle, manifest, items, vectors)
    caption_vecs, _ = embed_captions(TextSpace.load(small_bundle), captions)
    owner_a = np.asarray(owner)
    blocked = retrieval_ranks(image_vecs, caption_vecs, owner_a, block_bytes=4 * len(image_vecs) * 64)
    reference = full_matrix_ranks(image_vecs, caption_vecs, owner_a)
    assert np.array_equal(blocked[0], reference[0]) and np.array_equal(blocked[1], reference[1])
