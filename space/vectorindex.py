"""Cosine usearch indexes over the bundle's image and word vectors (key = row), shared by trainer and engine.

Scores returned here are cosine similarities (usearch's ``cos`` metric gives ``1 - cos`` as a distance).
:func:`nearest` is the one way the engine ranks rows: exactly (a numpy matrix product) up to
:data:`EXACT_ROWS` rows, through the index above; either way a query ranks the same for every k.

Vectors are stored as ``f32``, ``f16``, ``bf16`` or ``i8`` (the scalar kind is in the file's header, so a
reader needs no side channel). Large inputs are added in chunks behind a progress bar. Saved indexes are
opened memory-mapped by default (``view``): opening costs no copy, pages are read on first touch and shared by
every process that maps the same bundle, and the file is only ever read. Bundles are immutable once
published, so a mapped file never changes under a reader.
"""

from __future__ import annotations

import contextlib
import json
import logging
import mmap
import os
import re
import uuid
import weakref
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

# usearch loads numkong with RTLD_GLOBAL; if onnxruntime's extension is loaded after it, the process
# segfaults (usearch 2.26 + numkong 7.8 + onnxruntime 1.32). Loading onnxruntime first is harmless.
with contextlib.suppress(ImportError):
    import onnxruntime  # noqa: F401

from tqdm import tqdm
from usearch.index import BatchMatches, Index, Matches

from space import bundle
from space.centering import Centering
from space.errors import BundleInvalid
from space.hashtags import HASHTAGS_FILE, POOL_INDEX, Hashtagger
from space.search import SEARCH_INDEX, load_search_vectors
from space.textspace import unit

log = logging.getLogger(__name__)

# Up to this many rows, queries are ranked exactly (brute force): one matrix product answers a batch of
# queries for less than a graph walk each (0.13 ms a query at 8,052 x 256 in batches of 16,
# scripts/bench_knn.py) and never misses a neighbour.
EXACT_ROWS = 20_000
# An index ranking is read in tiers; each searches this many times the candidates of the one before. A
# page n deep then costs graph searches for at most ~4n candidates in all: on 50,000 x 256 f16 vectors,
# 1.8 ms at n = 100 and 17 ms at n = 1,100 (26 ms with tiers growing 4x; one search for n: 0.9 / 4.5 ms).
TIER_GROWTH = 2
# Scalar kinds an index may store its vectors as.
DTYPES = ("f32", "f16", "bf16", "i8")
# Graph settings used by the trainer, the engine and scripts/bench_index_scale.py alike (README, Scale).
CONNECTIVITY = 16  # neighbours a node keeps (usearch's M; the base layer keeps twice as many)
# Candidates considered when linking a new node (ef_construction). At 1M x 300 clustered f16 vectors, 64
# needed a search breadth of 256 for recall@10 0.964; 128 builds a graph that reaches 0.964 at 64.
EXPANSION_ADD = 128
# Candidates a graph search keeps (ef): a search-time knob, not stored in the file. 64 was measured to
# recall@10 0.964 at 1M; recall at a fixed ef falls as an index grows, so indexes above LARGE (not yet
# measured) keep 128 (0.986 at 1M).
EXPANSION_SEARCH = 64
EXPANSION_SEARCH_LARGE = 128
LARGE = 1_000_000
# Text queries are not like the rows they rank (a caption's words against image + caption vectors): a
# graph walk from them misses more neighbours than one from a photo, and more as the index grows. On the
# 325,253-post synthetic bundle (docs/benchmarks.md, Engine at scale) the graph above searched at 64
# recalled 0.69 of the exact top 10 (not near-ties: the missed rows' stand-ins scored a median 0.02 below
# the exact 10th; the f16 vectors searched exhaustively recall 0.998), and the same rows at 8,088 behave
# like Flickr8k's own photos (0.95 at 64 both). So the indexes text queries walk (search.usearch, the
# per-language ones, images.usearch in a bundle without captions) are searched wider by size
# (text_expansion_search_for). A denser graph (connectivity 32, expansion_add 256) bought no more recall
# per millisecond than the wider search on 65,263 rows (0.974 at 128 against 0.972 at 256 here, both
# 1.4 ms) for twice the build time, so every index keeps one graph.
# (index size up to, expansion_search) for text queries. Measured recall@10 against exact, 300 two-word
# queries (docs/benchmarks.md, Engine at scale): 65,263 rows 0.972 at 256; 114,118 0.965 at 256 and 0.986
# at 512; 145,872 0.948 at 256 and 0.985 at 512; 325,253 0.956 at 512, 0.974 at 768, 0.986 at 1,024.
# Above 400,000 not measured: the widest measured.
TEXT_WIDTHS = ((20_000, EXPANSION_SEARCH), (120_000, 256), (250_000, 512), (400_000, 768))
# Vectors added per call when building: bounds the float32 copy and paces the progress bar.
CHUNK = 50_000
# One index per language over what text queries compare with (key = the bundle's row), so a
# language-filtered query walks a graph of that language's posts only: no copy of its rows per query,
# no filtered walk that could come back short. A language holding every row shares the main index.
LANGUAGE_INDEX = "search-{lang}.usearch"
LANGUAGE_CODE = re.compile(r"[A-Za-z0-9_-]{1,16}")


def language_index_name(lang: str) -> str | None:
    """The file of ``lang``'s index, or None for a code that cannot name a file (then searched exactly)."""
    return LANGUAGE_INDEX.format(lang=lang) if LANGUAGE_CODE.fullmatch(lang) else None


class LazyRows:
    """An (N, D) matrix of served unit rows computed on demand, e.g. from memory-mapped bundle files.

    Above :data:`EXACT_ROWS` a query never reads the whole matrix: the index answers and only its
    candidates' rows are read (an ``i8`` rescore, a photo's own vector). Holding the unit rows in memory
    would cost every engine process a private copy of the vectors; this reads the few rows asked for
    from the shared pages. ``rows[keys]`` takes an int or an integer array of any shape, like an array.
    """

    def __init__(self, count: int, dim: int, fetch: Callable[[np.ndarray], np.ndarray]) -> None:
        self.shape = (int(count), int(dim))
        self.dtype = np.dtype(np.float32)
        self.ndim = 2
        self._fetch = fetch  # (k,) int64 keys → (k, D) float32 unit rows

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, keys: Any) -> np.ndarray:
        index = np.asarray(keys)
        if index.dtype == bool or not np.issubdtype(index.dtype, np.integer):
            raise TypeError("LazyRows takes integer keys")
        flat = index.reshape(-1).astype(np.int64)
        flat = np.where(flat < 0, flat + len(self), flat)
        if len(flat) and (flat.min() < 0 or flat.max() >= len(self)):
            raise IndexError("row out of range")
        rows = np.asarray(self._fetch(flat), dtype=np.float32)
        return rows.reshape(*index.shape, self.shape[1])

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        """Every row (a full copy: only for exact ranking of small sets)."""
        rows = self[np.arange(len(self))]
        return rows if dtype is None else rows.astype(dtype)


# Threads adding to one graph link its nodes in whatever order they run, so a graph built in parallel
# differs from run to run (and with it the rare answer the graph misses). Below this size one core builds
# it in seconds, the same graph every time: the same bundle from the same corpus.
SERIAL_BUILD_ROWS = 50_000


def build_index(
    vectors: np.ndarray,
    path: Path | None,
    dtype: str = "f32",
    threads: int = 0,
    *,
    connectivity: int = CONNECTIVITY,
    expansion_add: int = EXPANSION_ADD,
    expansion_search: int | None = None,
    chunk: int = CHUNK,
    progress: bool | None = None,
    keys: np.ndarray | None = None,
) -> Index:
    """A cosine index over ``vectors`` (key = row, or ``keys[row]``) stored as ``dtype``, built on
    ``threads`` cores (0 = all; one below :data:`SERIAL_BUILD_ROWS` rows).

    Rows are added ``chunk`` at a time behind a tqdm bar (shown when ``progress``; None: only for inputs
    larger than one chunk). ``path``, when given, is written atomically (temporary name, then rename).
    ``expansion_search`` None: :func:`expansion_search_for` ``len(vectors)``.
    """
    if dtype not in DTYPES:
        raise ValueError(f"index dtype must be one of {DTYPES}, got {dtype!r}")
    if vectors.ndim != 2:
        raise ValueError(f"expected a 2-d array of vectors, got shape {vectors.shape}")
    n, dim = (int(s) for s in vectors.shape)
    index = Index(
        ndim=dim, metric="cos", dtype=dtype, connectivity=connectivity,
        expansion_add=expansion_add, expansion_search=expansion_search or expansion_search_for(n),
    )
    if threads == 0 and n < SERIAL_BUILD_ROWS:
        threads = 1
    if n:
        show = n > chunk if progress is None else progress
        with tqdm(total=n, desc=f"index {dtype}", unit="vec", disable=not show, mininterval=2.0) as bar:
            for start in range(0, n, chunk):
                part = np.ascontiguousarray(vectors[start:start + chunk], dtype=np.float32)
                labels = (np.arange(start, start + len(part), dtype=np.uint64) if keys is None
                          else np.asarray(keys[start:start + len(part)], dtype=np.uint64))
                index.add(labels, part, threads=threads)
                bar.update(len(part))
    if path is not None:
        save_index(index, path)
    return index


def save_index(index: Index, path: Path) -> None:
    """Write ``index`` to ``path`` atomically, so a reader never maps a half-written file."""
    tmp = path.with_name(f"{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        index.save(str(tmp))
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def build_bundle_indexes(bundle_dir: Path, dtype: str = "f32") -> dict[str, Any]:
    """Write the bundle's indexes; their info.

    ``images.usearch`` from ``images.npy``, ``words.usearch`` from ``words.npy``; in a bundle with caption
    vectors ``search.usearch`` (``space.search``); one ``search-<lang>.usearch`` per language of
    ``images.json`` that holds some but not all rows (over what text queries compare with, key = row);
    and with a hashtag model ``hashtags.usearch`` over its voting posts' image vectors (key = the
    post's position in the pool). In a bundle with ``centering.npz`` the image index holds the centred
    image vectors, the ones text queries and photos are compared with (``space.centering``).
    """
    info = {}
    centering = Centering.load(bundle_dir)
    raw = np.load(bundle_dir / bundle.IMAGE_VECTORS, mmap_mode="r")
    images = raw if centering is None else centering.images(raw)
    for vectors, out in ((images, bundle.IMAGE_INDEX), (np.load(bundle_dir / "words.npy", mmap_mode="r"),
                                                        bundle.WORD_INDEX)):
        build_index(vectors, bundle_dir / out, dtype=dtype)
        info[out] = index_info(bundle_dir / out)
        log.info("indexed %d vectors into %s (%s)", len(vectors), out, dtype)
    info.update(build_text_indexes(bundle_dir, dtype))
    if (bundle_dir / HASHTAGS_FILE).is_file():
        tagger = Hashtagger.load(bundle_dir)
        assert tagger is not None
        build_index(unit(np.asarray(images[tagger.pool], np.float32)), bundle_dir / POOL_INDEX, dtype=dtype)
        info[POOL_INDEX] = index_info(bundle_dir / POOL_INDEX)
    return info


def build_text_indexes(bundle_dir: Path, dtype: str = "f32") -> dict[str, Any]:
    """Write the indexes text queries walk: ``search.usearch`` (a bundle with caption vectors) and one
    ``search-<lang>.usearch`` per language holding some but not all rows; their info."""
    info = {}
    centering = Centering.load(bundle_dir)
    raw = np.load(bundle_dir / bundle.IMAGE_VECTORS, mmap_mode="r")
    search = load_search_vectors(bundle_dir, raw)
    if search is not None:
        build_index(search, bundle_dir / SEARCH_INDEX, dtype=dtype)
        info[SEARCH_INDEX] = index_info(bundle_dir / SEARCH_INDEX)
    images = raw if centering is None else centering.images(raw)
    text_rows = unit(np.asarray(images, np.float32)) if search is None else search
    for lang, rows in _language_rows(bundle_dir, len(raw)).items():
        name = language_index_name(lang)
        if name is None or len(rows) in (0, len(raw)):
            continue
        build_index(text_rows[rows], bundle_dir / name, dtype=dtype, keys=rows)
        info[name] = index_info(bundle_dir / name)
    return info


def _language_rows(bundle_dir: Path, n: int) -> dict[str, np.ndarray]:
    """Each language's rows in ``images.json`` (none when it cannot be read or does not match)."""
    try:
        items = json.loads((bundle_dir / bundle.IMAGE_META).read_text(encoding="utf-8"))["items"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        log.warning("no language indexes: %s is not readable (%s)", bundle.IMAGE_META, exc)
        return {}
    if len(items) != n:
        return {}
    rows: dict[str, list[int]] = {}
    for i, item in enumerate(items):
        if isinstance(item, dict) and item.get("lang"):
            rows.setdefault(str(item["lang"]), []).append(i)
    return {lang: np.array(r, dtype=np.int64) for lang, r in sorted(rows.items())}


def index_info(path: Path) -> dict[str, Any]:
    """What a saved index holds, read from its header: ``{"dtype", "ndim", "count", "bytes"}``."""
    meta = _metadata(path)
    return {
        "dtype": _dtype_name(meta["kind_scalar"]),
        "ndim": int(meta["dimensions"]),
        "count": int(meta["count_present"]),
        "bytes": path.stat().st_size,
    }


def expansion_search_for(count: int) -> int:
    """The ``expansion_search`` an index of ``count`` vectors is searched with unless told otherwise."""
    return EXPANSION_SEARCH_LARGE if count > LARGE else EXPANSION_SEARCH


def text_expansion_search_for(count: int) -> int:
    """The ``expansion_search`` an index that text queries walk is searched with (see TEXT_WIDTHS)."""
    return next((width for up_to, width in TEXT_WIDTHS if count <= up_to), TEXT_WIDTHS[-1][1])


def load_index(path: Path, view: bool = True, expansion_search: int | None = None) -> Index:
    """Open a saved index, memory-mapped unless ``view`` is False; raises ``BundleInvalid`` on a bad file.

    ``expansion_search`` (None: :func:`expansion_search_for` the index's size) is not stored in the file.
    """
    meta = _metadata(path)
    if expansion_search is None:
        expansion_search = expansion_search_for(int(meta["count_present"]))
    try:
        index = Index.restore(str(path), view=view, expansion_search=expansion_search)
    except (ValueError, RuntimeError) as exc:
        raise BundleInvalid(f"{path.name} is not a readable usearch index: {exc}") from exc
    if index is None or len(index) != int(meta["count_present"]):
        raise BundleInvalid(f"{path.name} is not a readable usearch index")
    return index


def map_rows(path: Path) -> np.ndarray:
    """The rows of a ``.npy`` file memory-mapped read-only for random row reads (a rerank's candidates)."""
    rows = np.load(path, mmap_mode="r")
    mapped = getattr(rows, "_mmap", None)
    if isinstance(mapped, mmap.mmap):
        # Without this the kernel's read-around maps ~128 KiB for each 1 KiB row a query touches.
        mapped.madvise(mmap.MADV_RANDOM)
    return rows


def _metadata(path: Path) -> dict[str, Any]:
    """The index header; ``BundleInvalid`` when the file is missing, empty or not an index."""
    if not path.is_file():
        raise BundleInvalid(f"{path.name}: no such index file")
    try:
        meta = Index.metadata(str(path))
    except (ValueError, RuntimeError) as exc:
        raise BundleInvalid(f"{path.name} is not a readable usearch index: {exc}") from exc
    if not meta:
        raise BundleInvalid(f"{path.name} is not a readable usearch index")
    return dict(meta)


def _dtype_name(kind: Any) -> str:
    """usearch's ScalarKind (e.g. ``ScalarKind.F16``) as the short name used here (``f16``)."""
    return str(getattr(kind, "name", kind)).lower()


_QUANTISED: weakref.WeakKeyDictionary[Index, bool] = weakref.WeakKeyDictionary()


def is_quantised(index: Index) -> bool:
    """True for an ``i8`` index, whose raw ranking needs an exact rerank to reach float recall.

    Remembered per index: the engine asks on every query, and reading ``dtype`` costs ~8 µs.
    """
    known = _QUANTISED.get(index)
    if known is None:
        known = _QUANTISED[index] = _dtype_name(index.dtype) == "i8"
    return known


def search(
    index: Index, query: np.ndarray, k: int, exact: bool | None = None, rerank: Rows | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` nearest keys to one query vector and their cosine similarities, best first.

    ``rerank``: the float rows (key = row), see :func:`search_batch`.
    """
    if rerank is not None:
        keys2, sims2 = search_batch(index, query, k, exact=exact, threads=1, rerank=rerank)
        found = keys2[0] >= 0
        return keys2[0][found], sims2[0][found]
    n = len(index)
    k = min(k, n)
    if k <= 0:
        return np.empty(0, dtype=np.int64), np.empty(0, dtype=np.float32)
    use_exact = exact_for(n) if exact is None else exact
    matches = index.search(np.ascontiguousarray(query, dtype=np.float32), k, threads=1, exact=use_exact)
    assert isinstance(matches, Matches | BatchMatches)
    keys = np.asarray(matches.keys, dtype=np.int64).reshape(-1)
    sims = (1.0 - np.asarray(matches.distances, dtype=np.float32)).reshape(-1)
    return keys, sims


def search_batch(
    index: Index,
    queries: np.ndarray,
    k: int,
    exact: bool | None = None,
    threads: int = 0,
    rerank: Rows | None = None,
    oversample: int = 4,
) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` nearest keys to each of (B, D) ``queries`` and their cosine similarities: two (B, k) arrays.

    Rows with fewer than ``k`` hits (tiny indexes) are padded with key -1 and similarity -inf. With
    ``rerank`` (the float rows the index was built from, key = row; a memory-mapped ``.npy`` is fine, only
    the candidates' rows are read), ``oversample * k`` candidates are fetched and rescored exactly: an
    ``i8`` index then ranks like a float one.
    """
    queries = np.ascontiguousarray(np.atleast_2d(queries), dtype=np.float32)
    n, b = len(index), len(queries)
    k = min(k, n)
    if k <= 0 or b == 0:
        return np.empty((b, 0), dtype=np.int64), np.empty((b, 0), dtype=np.float32)
    if rerank is not None:
        keys, _ = search_batch(index, queries, min(n, k * max(1, oversample)), exact, threads)
        return _rescore(keys, queries, rerank, k)
    use_exact = exact_for(n) if exact is None else exact
    matches = index.search(queries, k, threads=threads, exact=use_exact)
    assert isinstance(matches, Matches | BatchMatches)
    # A single query's matches hold only what the walk reached, which may be fewer than k.
    found = np.array(matches.keys, dtype=np.int64).reshape(b, -1)[:, :k]
    width = found.shape[1]
    keys = np.full((b, k), -1, dtype=np.int64)
    sims = np.full((b, k), -np.inf, dtype=np.float32)
    keys[:, :width] = found
    sims[:, :width] = (1.0 - np.array(matches.distances, dtype=np.float32)).reshape(b, -1)[:, :k]
    if isinstance(matches, BatchMatches):
        counts = np.asarray(matches.counts).reshape(-1)
    else:
        counts = np.array([len(matches)])
    missing = np.arange(k)[None, :] >= counts[:, None]
    keys[missing] = -1
    sims[missing] = -np.inf
    return keys, sims


def _rescore(
    candidates: np.ndarray, queries: np.ndarray, rows: Rows, k: int
) -> tuple[np.ndarray, np.ndarray]:
    """The best ``k`` of each query's (B, C) candidate keys by exact cosine against ``rows``."""
    gathered = np.asarray(rows[np.clip(candidates, 0, None)], dtype=np.float32)  # (B, C, D)
    norms = np.linalg.norm(gathered, axis=2) * np.linalg.norm(queries, axis=1)[:, None]
    sims = np.einsum("bcd,bd->bc", gathered, queries) / np.where(norms > 0, norms, 1.0)
    sims[candidates < 0] = -np.inf
    order = np.argsort(-sims, axis=1, kind="stable")[:, :k]
    keys = np.take_along_axis(candidates, order, axis=1)
    return keys, np.take_along_axis(sims, order, axis=1).astype(np.float32)


_NO_KEYS = np.empty(0, dtype=np.int64)
_NO_SIMS = np.empty(0, dtype=np.float32)
Ranked = tuple[np.ndarray, np.ndarray]
Rows = np.ndarray | LazyRows  # unit rows in memory, or read on demand (key = row either way)


def exact_for(rows: int) -> bool:
    """Whether queries over ``rows`` vectors are ranked exactly (else through their index)."""
    return rows <= EXACT_ROWS


def nearest(
    index: Index | None, unit_rows: Rows, queries: np.ndarray, ks: Sequence[int]
) -> list[Ranked]:
    """The ``ks[i]`` rows nearest (cosine) to each of (B, D) unit ``queries``: keys (= rows) and scores.

    Exact, one matrix product for all queries, over at most :data:`EXACT_ROWS` rows or without an
    ``index``; else through ``index`` (built from ``unit_rows``, key = row; an ``i8`` one is rescored
    against them). Either way the first n of a query's answer for any k >= n are its answer for n, so
    pages of one query never disagree.
    """
    if not len(queries):
        return []
    if index is None or exact_for(len(unit_rows)):
        scores = queries @ np.asarray(unit_rows).T
        return [_top(sims, k) for sims, k in zip(scores, ks, strict=True)]
    return [_index_ranking(index, unit_rows, q, k) for q, k in zip(queries, ks, strict=True)]


def _top(sims: np.ndarray, n: int) -> Ranked:
    """The ``n`` best rows of one score vector and their scores, best first, equal scores in row order
    (so the answer for n is the first n of every deeper one)."""
    m = len(sims)
    n = min(n, m)
    if n <= 0:
        return _NO_KEYS, _NO_SIMS
    if n == m:
        top = np.argsort(-sims, kind="stable")
        return top, sims[top]
    top = np.argpartition(sims, m - n)[m - n:]  # unnegated: one pass over the scores fewer
    cut = sims[top[0]]
    if np.count_nonzero(sims >= cut) > n:  # rows tied at the cut: the first of them make it
        top = np.concatenate((np.flatnonzero(sims > cut), np.flatnonzero(sims == cut)))[:n]
    top = top[np.lexsort((top, -sims[top]))]
    return top, sims[top]


def _index_ranking(index: Index, rows: Rows, query: np.ndarray, n: int) -> Ranked:
    """The first ``n`` of ``query``'s ranking through ``index``, which does not depend on ``n``.

    A graph search walks a beam of ``max(expansion_search, k)`` candidates, so its best k change with k
    beyond the beam. The ranking is therefore read in tiers: the first is a search for exactly the beam,
    each next one a search :data:`TIER_GROWTH` times as wide, contributing the hits no earlier tier
    holds, best first (equal scores in key order). A hit only a wider search found may score above the
    last ones of the tier before it.
    """
    n = min(n, len(index))
    if n <= 0:
        return _NO_KEYS, _NO_SIMS
    rerank = rows if is_quantised(index) else None
    width = int(index.expansion_search)
    taken, scores = _NO_KEYS, [_NO_SIMS]
    while len(taken) < n:
        keys, sims = search_batch(index, query, width, exact=False, threads=1, rerank=rerank, oversample=1)
        fresh = (keys[0] >= 0) & ~np.isin(keys[0], taken)
        keys, sims = keys[0][fresh], sims[0][fresh]
        order = np.lexsort((keys, -sims))
        taken = np.concatenate((taken, keys[order]))
        scores.append(sims[order])
        if width >= len(index):
            break
        width *= TIER_GROWTH
    if len(taken) < n:
        # The widest search missed rows the graph does not reach from its entry point: they follow,
        # ranked exactly, so an answer as deep as the index holds every row once.
        rest = np.setdiff1d(np.asarray(index.keys).astype(np.int64), taken)  # keys are rows of ``rows``
        flat = np.asarray(query, np.float32).reshape(-1)
        sims = (np.asarray(rows[rest], np.float32) @ flat).astype(np.float32)
        order = np.lexsort((rest, -sims))
        taken = np.concatenate((taken, rest[order]))
        scores.append(sims[order])
    return taken[:n], np.concatenate(scores)[:n]
