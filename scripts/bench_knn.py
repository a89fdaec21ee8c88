"""usearch (HNSW, cosine) vs exact numpy: recall@10 and single-query QPS.

Usage: ``python scripts/bench_knn.py [--bundle PATH] [--n 100000] [--dim 300] [--queries 300]``.
Runs on a bundle's real image vectors (when given) and on synthetic clustered vectors. Single-threaded
per query, as the engine searches (one query per worker thread).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from space.textspace import unit
from space.vectorindex import build_index, search


def bench(name: str, data: np.ndarray, queries: np.ndarray, k: int) -> None:
    """Print build time, recall@k of the graph search and QPS of graph vs exact search."""
    data = unit(data)
    started = time.perf_counter()
    index = build_index(data, None)
    build_s = time.perf_counter() - started

    started = time.perf_counter()
    exact = []
    for q in unit(queries):
        sims = data @ q
        top = np.argpartition(-sims, k)[:k]
        exact.append(top[np.argsort(-sims[top])])
    numpy_s = time.perf_counter() - started

    started = time.perf_counter()
    found = [search(index, q, k, exact=False)[0] for q in queries]
    graph_s = time.perf_counter() - started

    started = time.perf_counter()
    for q in queries:
        search(index, q, k, exact=True)
    brute_s = time.perf_counter() - started

    recall = np.mean([len(set(f.tolist()) & set(e.tolist())) / k for f, e in zip(found, exact, strict=True)])
    n = len(queries)
    print(f"{name}: n={len(data)} dim={data.shape[1]} queries={n} build={build_s:.2f}s")
    for label, r, secs in (("usearch HNSW ", recall, graph_s), ("usearch exact", 1.0, brute_s),
                           ("numpy exact  ", 1.0, numpy_s)):
        print(f"  {label}  recall@{k}={r:.4f}  {n / secs:10.0f} QPS  ({1000 * secs / n:.3f} ms/query)")
    print(f"  speed-up HNSW vs numpy: {numpy_s / graph_s:.1f}x")


def main() -> None:
    """Run both benchmarks."""
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--bundle", type=Path, help="a bundle directory (uses its images.npy)")
    p.add_argument("--n", type=int, default=100_000)
    p.add_argument("--dim", type=int, default=300)
    p.add_argument("--queries", type=int, default=300)
    p.add_argument("--k", type=int, default=10)
    a = p.parse_args()
    rng = np.random.default_rng(0)
    if a.bundle:
        images = np.load(a.bundle / "images.npy").astype(np.float32)
        picks = images[rng.integers(0, len(images), a.queries)]
        queries = picks + 0.05 * rng.normal(size=picks.shape).astype(np.float32) * picks.std()
        bench(f"bundle {a.bundle.name} images", images, queries, a.k)
    # Clustered synthetic data: real embeddings are far from uniform noise.
    centers = rng.normal(size=(1000, a.dim)).astype(np.float32)
    data = centers[rng.integers(0, 1000, a.n)] + 0.6 * rng.normal(size=(a.n, a.dim)).astype(np.float32)
    queries = centers[rng.integers(0, 1000, a.queries)] + 0.6 * rng.normal(size=(a.queries, a.dim)).astype(
        np.float32)
    bench("synthetic clustered", data, queries, a.k)


if __name__ == "__main__":
    main()
