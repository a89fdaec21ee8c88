"""usearch (HNSW, cosine) vs exact numpy: recall@10 and single-query QPS.

Usage: ``python scripts/bench_knn.py [--bundle PATH] [--n 100000] [--dim 300] [--queries 300]
[--dtypes f32,f16] [--text-queries]``.
Runs on a bundle's real image vectors (when given) and on synthetic clustered vectors. Single-threaded
per query, as the engine searches (one query per worker thread). Each HNSW line is one index scalar kind
(``--dtypes``). ``--text-queries``: the bundle's queries are random two-word text queries embedded as the
engine does (TF-IDF mean, centred when the bundle is) instead of perturbed image vectors. Also printed:
exact numpy with 16 queries per matrix product, the way the engine answers concurrent text queries.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from space.centering import Centering
from space.errors import UnknownWords
from space.query import parse_query
from space.textspace import TextSpace, unit
from space.vectorindex import build_index, search

BATCH = 16


def bench(name: str, data: np.ndarray, queries: np.ndarray, k: int, dtypes: list[str]) -> None:
    """Print build time, recall@k of the graph search (per index dtype) and QPS of graph vs exact search."""
    data = unit(data)
    queries = unit(queries)

    started = time.perf_counter()
    exact = []
    for q in unit(queries):
        sims = data @ q
        top = np.argpartition(-sims, k)[:k]
        exact.append(top[np.argsort(-sims[top])])
    numpy_s = time.perf_counter() - started

    started = time.perf_counter()
    for start in range(0, len(queries), BATCH):
        scores = queries[start:start + BATCH] @ data.T
        for sims in scores:
            top = np.argpartition(-sims, k)[:k]
            top[np.argsort(-sims[top])]
    batched_s = time.perf_counter() - started

    n = len(queries)
    print(f"{name}: n={len(data)} dim={data.shape[1]} queries={n}")
    rows: list[tuple[str, float, float]] = []
    graph_s = {}
    for dtype in dtypes:
        started = time.perf_counter()
        index = build_index(data, None, dtype=dtype)
        build_s = time.perf_counter() - started
        started = time.perf_counter()
        found = [search(index, q, k, exact=False)[0] for q in queries]
        graph_s[dtype] = time.perf_counter() - started
        pairs = zip(found, exact, strict=True)
        recall = np.mean([len(set(f.tolist()) & set(e.tolist())) / k for f, e in pairs])
        rows.append((f"usearch HNSW {dtype} (build {build_s:.2f}s)", float(recall), graph_s[dtype]))
    started = time.perf_counter()
    for q in queries:
        search(index, q, k, exact=True)
    rows.append((f"usearch exact {dtypes[-1]}", 1.0, time.perf_counter() - started))
    rows.append(("numpy exact, one query per product", 1.0, numpy_s))
    rows.append((f"numpy exact, {BATCH} queries per product", 1.0, batched_s))
    for label, r, secs in rows:
        print(f"  {label:<40} recall@{k}={r:.4f}  {n / secs:10.0f} QPS  ({1000 * secs / n:.3f} ms/query)")
    for dtype, secs in graph_s.items():
        print(f"  speed-up HNSW {dtype} vs numpy: {numpy_s / secs:.1f}x")


def text_queries(
    bundle_dir: Path, images: np.ndarray, n: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """The bundle's image vectors and ``n`` random two-word text queries, both as the engine compares them
    (centred when the bundle has ``centering.npz``)."""
    space = TextSpace.load(bundle_dir)
    centering = Centering.load(bundle_dir)
    words = [w for w in space.words if w.isalpha()]
    queries: list[np.ndarray] = []
    while len(queries) < n:
        text = f"{words[rng.integers(len(words))]} {words[rng.integers(len(words))]}"
        try:
            queries.append(space.embed_query(parse_query(text),
                                             None if centering is None else centering.text_mean)[0])
        except UnknownWords:  # a stop word pair
            continue
    return (images if centering is None else centering.images(images)), np.array(queries, dtype=np.float32)


def main() -> None:
    """Run both benchmarks."""
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--bundle", type=Path, help="a bundle directory (uses its images.npy)")
    p.add_argument("--n", type=int, default=100_000)
    p.add_argument("--dim", type=int, default=300)
    p.add_argument("--queries", type=int, default=300)
    p.add_argument("--k", type=int, default=10)
    p.add_argument("--dtypes", default="f32", help="comma-separated index scalar kinds, e.g. f32,f16")
    p.add_argument("--text-queries", action="store_true",
                   help="with --bundle: random two-word text queries, embedded as the engine does")
    a = p.parse_args()
    dtypes = [d.strip() for d in a.dtypes.split(",") if d.strip()]
    rng = np.random.default_rng(0)
    if a.bundle:
        images = np.load(a.bundle / "images.npy").astype(np.float32)
        if a.text_queries:
            images, queries = text_queries(a.bundle, images, a.queries, rng)
            bench(f"bundle {a.bundle.name} images, text queries", images, queries, a.k, dtypes)
        else:
            picks = images[rng.integers(0, len(images), a.queries)]
            queries = picks + 0.05 * rng.normal(size=picks.shape).astype(np.float32) * picks.std()
            bench(f"bundle {a.bundle.name} images", images, queries, a.k, dtypes)
    # Clustered synthetic data: real embeddings are far from uniform noise.
    centers = rng.normal(size=(1000, a.dim)).astype(np.float32)
    data = centers[rng.integers(0, 1000, a.n)] + 0.6 * rng.normal(size=(a.n, a.dim)).astype(np.float32)
    queries = centers[rng.integers(0, 1000, a.queries)] + 0.6 * rng.normal(size=(a.queries, a.dim)).astype(
        np.float32)
    bench("synthetic clustered", data, queries, a.k, dtypes)


if __name__ == "__main__":
    main()
