"""usearch cosine indexes: exact agreement with numpy on small data, high recall on larger, bundle files."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from space import bundle
from space.centering import Centering
from space.errors import BundleInvalid
from space.textspace import unit
from space.vectorindex import build_bundle_indexes, build_index, load_index, search


def _exact(data: np.ndarray, q: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    sims = unit(data) @ unit(q)
    top = np.argsort(-sims)[:k]
    return top, sims[top]


def test_small_index_is_exact_and_roundtrips(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    data = rng.normal(size=(500, 32)).astype(np.float32)
    path = tmp_path / "x.usearch"
    build_index(data, path)
    for view in (False, True):
        index = load_index(path, view=view)
        assert len(index) == 500
        for q in rng.normal(size=(20, 32)).astype(np.float32):
            keys, sims = search(index, q, 10)
            want_keys, want_sims = _exact(data, q, 10)
            assert keys.tolist() == want_keys.tolist()
            np.testing.assert_allclose(sims, want_sims, atol=1e-4)


def test_graph_search_recall() -> None:
    rng = np.random.default_rng(1)
    centers = rng.normal(size=(50, 48))
    data = (centers[rng.integers(0, 50, 8000)] + 0.5 * rng.normal(size=(8000, 48))).astype(np.float32)
    index = build_index(data, None)
    queries = data[rng.integers(0, 8000, 50)] + 0.1 * rng.normal(size=(50, 48)).astype(np.float32)
    recall = []
    for q in queries:
        keys, sims = search(index, q, 10, exact=False)
        want, _ = _exact(data, q, 10)
        recall.append(len(set(keys.tolist()) & set(want.tolist())) / 10)
        assert np.all(np.diff(sims) <= 1e-6)
    assert float(np.mean(recall)) >= 0.9


def test_edge_cases(tmp_path: Path) -> None:
    index = build_index(np.eye(3, dtype=np.float32), None)
    keys, sims = search(index, np.array([0, 1, 0], dtype=np.float32), 10)
    assert keys.tolist()[0] == 1 and len(keys) == 3 and sims[0] == pytest.approx(1.0)
    empty = build_index(np.zeros((0, 3), dtype=np.float32), None)
    assert search(empty, np.ones(3, dtype=np.float32), 5)[0].size == 0
    with pytest.raises(ValueError):
        build_index(np.zeros(3, dtype=np.float32), None)
    (tmp_path / "junk.usearch").write_bytes(b"not an index")
    with pytest.raises(BundleInvalid, match=r"junk\.usearch"):
        load_index(tmp_path / "junk.usearch")


def test_build_bundle_indexes(tmp_path: Path, small_bundle: Path) -> None:
    work = tmp_path / "b"
    shutil.copytree(small_bundle, work)
    build_bundle_indexes(work)
    images = np.load(work / bundle.IMAGE_VECTORS)
    centering = Centering.load(work)
    if centering is not None:  # a centred bundle's image index holds the centred vectors
        images = centering.images(images)
    words = np.load(work / "words.npy")
    image_index = load_index(work / bundle.IMAGE_INDEX)
    word_index = load_index(work / bundle.WORD_INDEX)
    assert (len(image_index), len(word_index)) == (len(images), len(words))
    keys, sims = search(image_index, images[17], 1)
    assert keys[0] == 17 and sims[0] == pytest.approx(1.0, abs=1e-4)
    keys, _ = search(word_index, words[5], 3)
    assert keys[0] == 5
