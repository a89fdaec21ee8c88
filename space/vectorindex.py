"""Cosine usearch indexes over the bundle's image and word vectors (key = row), shared by trainer and engine.

Scores returned here are cosine similarities (usearch's ``cos`` metric gives ``1 - cos`` as a distance).
Small indexes are searched exactly: brute force over a few thousand rows costs less than a graph walk and
can never miss a neighbour.
"""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path

import numpy as np

# usearch loads numkong with RTLD_GLOBAL; if onnxruntime's extension is loaded after it, the process
# segfaults (usearch 2.26 + numkong 7.8 + onnxruntime 1.32). Loading onnxruntime first is harmless.
with contextlib.suppress(ImportError):
    import onnxruntime  # noqa: F401

from usearch.index import BatchMatches, Index, Matches

from space import bundle

log = logging.getLogger(__name__)

# Below this many vectors, search exactly (brute force).
EXACT_BELOW = 5000


def build_index(vectors: np.ndarray, path: Path | None, dtype: str = "f32", threads: int = 0) -> Index:
    """A cosine index over ``vectors``, key = row, built on ``threads`` cores (0 = all); saved to ``path``."""
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    if vectors.ndim != 2:
        raise ValueError(f"expected a 2-d array of vectors, got shape {vectors.shape}")
    index = Index(ndim=int(vectors.shape[1]), metric="cos", dtype=dtype)
    if len(vectors):
        index.add(np.arange(len(vectors), dtype=np.uint64), vectors, threads=threads)
    if path is not None:
        index.save(str(path))
    return index


def build_bundle_indexes(bundle_dir: Path) -> None:
    """Write ``images.usearch`` from ``images.npy`` and ``words.usearch`` from ``words.npy``."""
    for npy, out in ((bundle.IMAGE_VECTORS, bundle.IMAGE_INDEX), ("words.npy", bundle.WORD_INDEX)):
        vectors = np.load(bundle_dir / npy)
        build_index(vectors, bundle_dir / out)
        log.info("indexed %d vectors of %s into %s", len(vectors), npy, out)


def load_index(path: Path, view: bool = False) -> Index:
    """Open a saved index (memory-mapped when ``view``)."""
    index = Index.restore(str(path), view=view)
    if index is None:
        raise ValueError(f"{path} is not a usearch index")
    return index


def search(
    index: Index, query: np.ndarray, k: int, exact: bool | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` nearest keys to one query vector and their cosine similarities, best first."""
    n = len(index)
    k = min(k, n)
    if k <= 0:
        return np.empty(0, dtype=np.int64), np.empty(0, dtype=np.float32)
    use_exact = n <= EXACT_BELOW if exact is None else exact
    matches = index.search(np.ascontiguousarray(query, dtype=np.float32), k, threads=1, exact=use_exact)
    assert isinstance(matches, Matches | BatchMatches)
    keys = np.asarray(matches.keys, dtype=np.int64).reshape(-1)
    sims = (1.0 - np.asarray(matches.distances, dtype=np.float32)).reshape(-1)
    return keys, sims
