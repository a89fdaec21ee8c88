"""``nearest``: exact up to EXACT_ROWS, the index above, and a query's ranking the same for every k."""

from __future__ import annotations

import numpy as np
import pytest

from space import vectorindex
from space.vectorindex import build_index, is_quantised, nearest
from tests.space.test_vectorindex_dtypes import clustered

DEPTHS = (1, 5, 10, 37, 64, 65, 100, 256, 257, 500, 1100)


def _agrees_for_every_depth(index: object, rows: np.ndarray, queries: np.ndarray) -> None:
    """Every shallower answer is the start of the deepest one, in one batch and one query at a time."""
    deepest = nearest(index, rows, queries, [max(DEPTHS)] * len(queries))  # type: ignore[arg-type]
    for depth in DEPTHS:
        batch = nearest(index, rows, queries, [depth] * len(queries))  # type: ignore[arg-type]
        for q, (keys, sims), (all_keys, all_sims) in zip(queries, batch, deepest, strict=True):
            assert keys.tolist() == all_keys[:depth].tolist()
            np.testing.assert_array_equal(sims, all_sims[:depth])
            alone = nearest(index, rows, q[None], [depth])[0]  # type: ignore[arg-type]
            assert alone[0].tolist() == keys.tolist()


def test_exact_ranking_breaks_ties_by_row() -> None:
    rows = clustered(400, 24, seed=11)
    rows[100:400:3] = rows[7]  # 100 rows tied with row 7: the cut of most depths falls among them
    queries = np.stack([rows[7], rows[8], clustered(1, 24, seed=12)[0]])
    _agrees_for_every_depth(build_index(rows, None), rows, queries)
    keys, sims = nearest(None, rows, rows[7][None], [len(rows)])[0]
    order = np.argsort(-(rows @ rows[7]), kind="stable")  # the full sort: equal scores in row order
    assert keys.tolist() == order.tolist() and np.all(np.diff(sims) <= 0)


@pytest.mark.parametrize("dtype", ["f16", "i8"])
def test_index_ranking_does_not_depend_on_k(dtype: str, monkeypatch: pytest.MonkeyPatch) -> None:
    rows = clustered(3000, 32, seed=13)
    index = build_index(rows, None, dtype=dtype, expansion_search=64)
    monkeypatch.setattr(vectorindex, "EXACT_ROWS", 1000)
    searched = []
    real = vectorindex.search_batch

    def spy(*args: object, **kwargs: object) -> object:
        searched.append(args[2])
        return real(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(vectorindex, "search_batch", spy)
    queries = clustered(6, 32, seed=14)
    _agrees_for_every_depth(index, rows, queries)
    tiers = {64 * vectorindex.TIER_GROWTH ** t for t in range(4)}
    assert tiers <= set(searched)  # the beam, then ever wider tiers
    searched.clear()
    keys, sims = nearest(index, rows, queries[:1], [10])[0]
    assert set(searched) == {64} and len(keys) == 10 and np.all(np.diff(sims) <= 0)
    deep, _ = nearest(index, rows, queries[:1], [3000])[0]
    # Every row the widest walk reached, once (a graph may leave a few rows unreachable).
    assert len(set(deep.tolist())) == len(deep) >= 0.99 * len(rows)


def test_large_i8_index_is_reranked_to_float_recall(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(vectorindex, "EXACT_ROWS", 1000)
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(40, 64)).astype(np.float32)
    noise = 0.15 * rng.normal(size=(6000, 64)).astype(np.float32)
    raw = centres[rng.integers(0, 40, 6000)] + noise
    rows = raw / np.linalg.norm(raw, axis=1, keepdims=True)
    index = build_index(rows, None, dtype="i8")
    assert is_quantised(index) and not is_quantised(build_index(rows[:10], None, dtype="f16"))
    hits = 0
    for q, (keys, sims) in zip(rows[:100], nearest(index, rows, rows[:100], [10] * 100), strict=True):
        truth = set(np.argsort(-(rows @ q))[:10].tolist())
        hits += len(truth & set(keys.tolist()))
        np.testing.assert_allclose(sims, rows[keys] @ q, atol=1e-5)  # exact float scores
        assert np.all(np.diff(sims) <= 0)  # best first
    assert hits / 1000 >= 0.95


def test_exact_without_an_index_at_any_size(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(vectorindex, "EXACT_ROWS", 10)
    rows = clustered(200, 16, seed=15)
    keys, _ = nearest(None, rows, rows[3:5], [4, 2])[1]
    assert keys.tolist() == np.argsort(-(rows @ rows[4]), kind="stable")[:2].tolist()
    assert nearest(None, rows, np.empty((0, 16), dtype=np.float32), []) == []
    assert [len(k) for k, _ in nearest(None, rows[:0], rows[:2], [5, 0])] == [0, 0]


@pytest.mark.parametrize("dtype", ["f16", "i8"])
def test_rows_read_on_demand_rank_like_rows_in_memory(dtype: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """``LazyRows`` (how the engine holds a large bundle's vectors) ranks exactly as the array does, through
    the index (an i8 one rescores candidates from it) and exactly, and reads only the rows asked for."""
    from space.vectorindex import LazyRows

    rows = clustered(3000, 32, seed=17)
    read: list[int] = []

    def fetch(keys: np.ndarray) -> np.ndarray:
        read.append(len(keys))
        return rows[keys]

    lazy = LazyRows(len(rows), rows.shape[1], fetch)
    assert lazy[5].shape == (32,) and lazy[np.array([[1, 2], [3, 4]])].shape == (2, 2, 32)
    np.testing.assert_array_equal(lazy[np.array([-1])], rows[[-1]])
    with pytest.raises(IndexError):
        lazy[np.array([3000])]
    index = build_index(rows, None, dtype=dtype, expansion_search=64)
    monkeypatch.setattr(vectorindex, "EXACT_ROWS", 1000)
    queries = clustered(8, 32, seed=18)
    read.clear()
    ks = [50] * len(queries)
    lazy_answers, array_answers = nearest(index, lazy, queries, ks), nearest(index, rows, queries, ks)
    for (k1, s1), (k2, s2) in zip(lazy_answers, array_answers, strict=True):
        assert k1.tolist() == k2.tolist()
        np.testing.assert_array_equal(s1, s2)
    assert sum(read) <= 8 * 4 * 64 and (sum(read) > 0) == (dtype == "i8")  # candidates only, and only for i8
    monkeypatch.setattr(vectorindex, "EXACT_ROWS", 20_000)
    lazy_answers, array_answers = nearest(None, lazy, queries, ks), nearest(None, rows, queries, ks)
    for (k1, _), (k2, _) in zip(lazy_answers, array_answers, strict=True):
        assert k1.tolist() == k2.tolist()
