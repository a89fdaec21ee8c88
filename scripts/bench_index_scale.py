"""Index cost against size: usearch f32/f16/i8 (memory-mapped) against exact numpy search, side by side.

For each size (synthetic clustered unit vectors of dim 300; optionally a bundle's real image vectors) and
each dtype: build time, file size, open time (``view``), recall@10 against exact search, QPS at batch 1
and batch 64, and RSS; and the same for exact numpy search over the float32 matrix. Opening and querying
run in a fresh subprocess per index, so RSS and timings are not polluted by the build. Prints one table,
writes all numbers to ``--json`` (updated after every row, so a long run that is cut short keeps what it
measured) and the cost-against-size curves to ``--plot``.

``--graphs`` compares build settings (connectivity:expansion_add) in one run; the library's defaults
(``space.vectorindex``) are what the trainer and engine use. With ``--keep``, the vector set, its ground
truth and every built index stay in ``--work`` and a later run with the same seed reuses them, so a
search-parameter sweep at 1M costs no rebuild.

    python scripts/bench_index_scale.py --sizes 10000,100000,1000000 --json out.json --plot out.png
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import mmap
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from space.vectorindex import (
    CONNECTIVITY,
    EXPANSION_ADD,
    EXPANSION_SEARCH,
    build_index,
    expansion_search_for,
    load_index,
    save_index,
    search_batch,
)

log = logging.getLogger("bench_index_scale")

DIM = 300
CENTRES = 1000
K = 10
BATCH = 64


@dataclass(frozen=True)
class BenchConfig:
    """One benchmark run."""

    sizes: tuple[int, ...]
    dtypes: tuple[str, ...]
    big_dtypes: tuple[str, ...]  # the dtypes for sets of a million vectors or more
    queries: int
    expansions: tuple[int, ...]
    target_recall: float
    graphs: tuple[tuple[int, int], ...]  # (connectivity, expansion_add) pairs to build
    threads: int
    bundle: Path | None
    work: Path
    json_path: Path | None
    plot_path: Path | None
    seed: int
    time_budget_s: float
    keep: bool
    rerank: bool  # also measure i8 with an exact rerank of 4x candidates against the float rows
    exact: bool  # measure exact numpy search too (off: another run on the same seed did)
    served: bool  # show the run at the engine's expansion_search (off: the fastest reaching the target)


# ---------------------------------------------------------------- data


def clustered(n: int, dim: int, seed: int, chunk: int = 100_000) -> np.ndarray:
    """``n`` unit vectors from a Gaussian mixture shaped like real embeddings (float32, (n, dim)).

    ``CENTRES`` centres; variance decays over directions as 1/j (a few directions carry most of it, as in
    trained embedding spaces), and a fixed random rotation spreads that over all coordinates. The same
    seed always gives the same mixture; rows are drawn ``chunk`` at a time to bound float64 temporaries.
    """
    rng = np.random.default_rng(seed)
    scale = (1.0 / np.arange(1, dim + 1)).astype(np.float32) ** 0.5
    rotation = np.linalg.qr(rng.normal(size=(dim, dim)))[0].astype(np.float32)
    centres = rng.normal(size=(CENTRES, dim)).astype(np.float32) * scale
    out = np.empty((n, dim), dtype=np.float32)
    draw = np.random.default_rng(seed + 1)
    for start in range(0, n, chunk):
        m = min(chunk, n - start)
        noise = draw.normal(size=(m, dim)).astype(np.float32) * scale
        z = centres[draw.integers(0, CENTRES, m)] + 0.5 * noise
        z = z @ rotation
        out[start:start + m] = z / np.linalg.norm(z, axis=1, keepdims=True)
    return out


def unit_rows(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length (zero rows stay zero)."""
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return (x / np.where(norms > 0, norms, 1.0)).astype(np.float32)


def exact_topk(data: np.ndarray, queries: np.ndarray, k: int, block: int = 256) -> np.ndarray:
    """Exact top-``k`` row indices by dot product (unit rows: cosine), best first, in query blocks."""
    out = np.empty((len(queries), k), dtype=np.int64)
    for s in range(0, len(queries), block):
        sims = queries[s:s + block] @ data.T
        part = np.argpartition(-sims, k - 1, axis=1)[:, :k]
        order = np.argsort(-np.take_along_axis(sims, part, axis=1), axis=1)
        out[s:s + block] = np.take_along_axis(part, order, axis=1)
    return out


def recall_at(found: np.ndarray, truth: np.ndarray) -> float:
    """Mean fraction of each query's true top-k found in its returned top-k."""
    k = truth.shape[1]
    hits = [len(set(f[:k].tolist()) & set(t.tolist())) for f, t in zip(found, truth, strict=True)]
    return float(np.mean(hits)) / k


# ---------------------------------------------------------------- child processes (fresh RSS)


def rss_mb() -> dict[str, float]:
    """This process's resident memory (total, anonymous, file-backed) in MiB, from /proc."""
    fields = {}
    with open("/proc/self/status", encoding="ascii") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "RssAnon", "RssFile"):
                fields[key] = int(value.split()[0]) / 1024
    return {"rss": fields.get("VmRSS", 0.0), "anon": fields.get("RssAnon", 0.0),
            "file": fields.get("RssFile", 0.0)}


def timed_qps(run: Callable[[np.ndarray], Any], queries: np.ndarray, batch: int, budget_s: float) -> float:
    """Queries per second running ``run`` on ``batch`` queries at a time, for up to ``budget_s`` seconds."""
    done = 0
    started = time.perf_counter()
    for s in range(0, len(queries), batch):
        run(queries[s:s + batch])
        done += len(queries[s:s + batch])
        if time.perf_counter() - started > budget_s and done >= 2 * batch:
            break
    return done / (time.perf_counter() - started)


def _search(index: Any, threads: int, rows: np.ndarray | None, queries: np.ndarray) -> Any:
    return search_batch(index, queries, K, exact=False, threads=threads, rerank=rows)


def child_index(args: argparse.Namespace) -> dict[str, Any]:
    """Open one saved index memory-mapped, then measure recall and QPS at each expansion_search."""
    queries = np.load(args.qfile)
    truth = np.load(args.truth)
    before = rss_mb()
    t0 = time.perf_counter()
    index = load_index(Path(args.index), view=True)
    # Rerank against the float rows, memory-mapped like the index: only candidates' rows are read.
    rows = np.load(args.rerank_data, mmap_mode="r") if args.rerank_data else None
    if rows is not None:
        # Random row reads: without this, the kernel's read-around maps ~128 KiB per 1 KiB row touched.
        rows._mmap.madvise(mmap.MADV_RANDOM)
    open_s = time.perf_counter() - t0
    after_open = rss_mb()
    runs = []
    for es in (int(e) for e in args.expansions.split(",")):
        index.expansion_search = es  # type: ignore[misc]  # usearch's setter is untyped
        found, _ = _search(index, args.threads, rows, queries)
        # On a shared machine one thread can beat all of them: keep the better, as for exact search.
        by_threads = {t: timed_qps(partial(_search, index, t, rows), queries, BATCH, args.budget)
                      for t in sorted({1, args.threads})}
        qps1 = timed_qps(partial(_search, index, 1, rows), queries, 1, args.budget)
        runs.append({"expansion_search": es, "recall": recall_at(found, truth), "qps1": qps1,
                     "qps64": max(by_threads.values()), "qps64_by_threads": by_threads})
    after = rss_mb()
    return {
        "open_s": open_s,
        "rss_open_mb": after_open["rss"] - before["rss"],
        "rss_mb": after["rss"] - before["rss"],
        "rss_anon_mb": after["anon"] - before["anon"],
        "rss_file_mb": after["file"] - before["file"],
        "runs": runs,
    }


def child_exact(args: argparse.Namespace) -> dict[str, Any]:
    """Load the float32 matrix into memory, then measure exact numpy search QPS at batch 1 and 64."""
    queries = np.load(args.qfile)
    truth = np.load(args.truth)
    before = rss_mb()
    t0 = time.perf_counter()
    data = np.load(args.data)
    open_s = time.perf_counter() - t0
    after_open = rss_mb()
    found = exact_topk(data, queries[:BATCH], K)
    qps64 = timed_qps(lambda q: exact_topk(data, q, K), queries, BATCH, args.budget)
    qps1 = timed_qps(lambda q: exact_topk(data, q, K), queries, 1, args.budget)
    after = rss_mb()
    return {
        "open_s": open_s,
        "rss_open_mb": after_open["rss"] - before["rss"],
        "rss_mb": after["rss"] - before["rss"],
        "matrix_mb": data.nbytes / 2**20,
        "recall": recall_at(found, truth[:BATCH]),
        "qps1": qps1,
        "qps64": qps64,
    }


def run_child(kind: str, cfg: BenchConfig, paths: dict[str, Path], env: dict[str, str] | None = None,
              expansions: tuple[int, ...] = ()) -> dict[str, Any]:
    """Run this script as a fresh ``--child`` process (``env`` added) and parse the JSON it prints last."""
    sweep = ",".join(map(str, expansions or cfg.expansions))
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", kind, "--threads", str(cfg.threads),
           "--budget", str(cfg.time_budget_s), "--expansions", sweep]
    for key, value in paths.items():
        cmd += [f"--{key.replace('_', '-')}", str(value)]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, env={**os.environ, **(env or {})})
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


# ---------------------------------------------------------------- parent


def bench_set(name: str, data: np.ndarray, queries: np.ndarray, cfg: BenchConfig,
              results: dict[str, Any]) -> None:
    """Benchmark exact search and every dtype on one vector set; rows are appended to ``results``."""
    work = cfg.work / name
    work.mkdir(parents=True, exist_ok=True)
    if not (cfg.keep and (work / "set.json").is_file()):  # a kept synthetic set was saved by kept_set
        t0 = time.perf_counter()
        truth = exact_topk(data, queries, K)
        log.info("%s: %d vectors, ground truth for %d queries in %.1fs", name, len(data), len(queries),
                 time.perf_counter() - t0)
        np.save(work / "truth.npy", truth)
        np.save(work / "queries.npy", queries)
        np.save(work / "data.npy", data)
    row: dict[str, Any] = {"name": name, "n": len(data), "dim": int(data.shape[1]), "n_queries": len(queries)}
    # Exact search gets the better of one BLAS thread and all of them (on a contended machine one thread
    # is often faster), so the ratios against it are not flattered.
    files = {"data": work / "data.npy", "qfile": work / "queries.npy", "truth": work / "truth.npy"}
    if cfg.exact:
        runs = [run_child("exact", cfg, files, env={"OPENBLAS_NUM_THREADS": t, "OMP_NUM_THREADS": t})
                for t in ("1", str(cfg.threads or os.cpu_count() or 1))]
        row["exact"] = {**runs[0], "qps1": max(r["qps1"] for r in runs),
                        "qps64": max(r["qps64"] for r in runs), "by_blas_threads": runs}
    else:  # measured by another run on the same seed (see --merge)
        keys = ("open_s", "matrix_mb", "recall", "qps1", "qps64", "rss_mb")
        row["exact"] = dict.fromkeys(keys, float("nan"))
        row["exact"]["skipped"] = True
    log.info("%s exact: %s", name, json.dumps(row["exact"]))
    row["indexes"] = {}
    results["rows"].append(row)
    # The engine searches at expansion_search_for(n): always measured, and the row the table shows.
    served = expansion_search_for(len(data)) if cfg.served else None
    expansions = tuple(sorted({*cfg.expansions, *([served] if served else [])}))
    for dtype in cfg.big_dtypes if len(data) >= 1_000_000 else cfg.dtypes:
        for connectivity, expansion_add in cfg.graphs:
            label = dtype if (connectivity, expansion_add) == (CONNECTIVITY, EXPANSION_ADD) else (
                f"{dtype}/M{connectivity}e{expansion_add}")
            path = work / f"{dtype}-M{connectivity}-ea{expansion_add}.usearch"
            built = built_index(data, path, dtype, connectivity, expansion_add, cfg)
            plain = {"index": path, "qfile": work / "queries.npy", "truth": work / "truth.npy"}
            for kind, paths in ((label, plain), (f"{label}+rr", {**plain, "rerank_data": work / "data.npy"})):
                if kind.endswith("+rr") and not (cfg.rerank and dtype == "i8"):
                    continue
                measured = run_child("index", cfg, paths, expansions=expansions)
                chosen = choose(measured["runs"], cfg.target_recall, served)
                row["indexes"][kind] = {**built, "connectivity": connectivity, "expansion_add": expansion_add,
                                        "file_mb": path.stat().st_size / 2**20, **measured, "chosen": chosen}
                log.info("%s %s: build %.1fs, %s", name, kind, built["build_s"], json.dumps(chosen))
            if not cfg.keep:
                path.unlink()
            write_json(cfg, results)
    if not cfg.keep:
        shutil.rmtree(work, ignore_errors=True)


def built_index(data: np.ndarray, path: Path, dtype: str, connectivity: int, expansion_add: int,
                cfg: BenchConfig) -> dict[str, Any]:
    """Build and save one index to ``path`` (reused as is under ``--keep`` when saved before); its costs."""
    sidecar = path.with_suffix(".json")
    if cfg.keep and path.is_file() and sidecar.is_file():
        log.info("reusing %s", path)
        return {**json.loads(sidecar.read_text(encoding="utf-8")), "reused": True}
    t0 = time.perf_counter()
    index = build_index(data, None, dtype=dtype, threads=cfg.threads, connectivity=connectivity,
                        expansion_add=expansion_add, progress=len(data) > 50_000)
    build_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    save_index(index, path)
    costs = {"build_s": build_s, "save_s": time.perf_counter() - t0,
             "build_memory_mb": int(index.memory_usage) / 2**20}
    del index
    gc.collect()
    if cfg.keep:
        sidecar.write_text(json.dumps(costs), encoding="utf-8")
    return costs


def kept_set(cfg: BenchConfig, name: str, n: int) -> tuple[np.ndarray, np.ndarray]:
    """The synthetic set of ``n`` vectors and its queries; under ``--keep`` loaded (mapped) when kept before.

    A kept set is recognised by its recipe (``set.json``: size, queries, seed, dim); anything else is
    drawn again, so a reused set is always the one this run's arguments would draw.
    """
    work = cfg.work / name
    recipe = {"n": n, "queries": cfg.queries, "seed": cfg.seed, "dim": DIM, "centres": CENTRES}
    files = [work / f for f in ("set.json", "data.npy", "queries.npy", "truth.npy")]
    if cfg.keep and all(f.is_file() for f in files) and json.loads(files[0].read_text("utf-8")) == recipe:
        log.info("%s: reusing the kept vectors and ground truth in %s", name, work)
        return np.load(work / "data.npy", mmap_mode="r"), np.load(work / "queries.npy")
    for f in files:
        f.unlink(missing_ok=True)
    both = clustered(n + cfg.queries, DIM, cfg.seed)
    data, queries = both[:n], np.ascontiguousarray(both[n:])
    if cfg.keep:
        work.mkdir(parents=True, exist_ok=True)
        truth = exact_topk(data, queries, K)
        np.save(work / "data.npy", data)
        np.save(work / "queries.npy", queries)
        np.save(work / "truth.npy", truth)
        files[0].write_text(json.dumps(recipe), encoding="utf-8")
    return data, queries


def choose(runs: list[dict[str, Any]], target: float, served: int | None = None) -> dict[str, Any]:
    """The run at ``served`` (the engine's expansion_search) if given, else the fastest reaching ``target``.

    Fastest is by batch-1 QPS; when no run reaches ``target``, the one with the best recall.
    """
    if served is not None:
        return dict(next(r for r in runs if r["expansion_search"] == served))
    good = [r for r in runs if r["recall"] >= target]
    if good:
        return dict(max(good, key=lambda r: r["qps1"]))
    return dict(max(runs, key=lambda r: r["recall"]))


def merge(parts: list[dict[str, Any]]) -> dict[str, Any]:
    """Several runs' results as one: rows by set name (a later run's dtypes added to an earlier row)."""
    rows: dict[str, dict[str, Any]] = {}
    for part in parts:
        for row in part["rows"]:
            if row["name"] in rows:
                rows[row["name"]]["indexes"].update(row["indexes"])
                if rows[row["name"]]["exact"].get("skipped"):
                    rows[row["name"]]["exact"] = row["exact"]
            else:
                rows[row["name"]] = row
    return {"meta": {"merged": [p["meta"] for p in parts], "cpus": parts[0]["meta"]["cpus"]},
            "rows": sorted(rows.values(), key=lambda r: (not r["name"].startswith("synthetic"), r["n"]))}


def write_json(cfg: BenchConfig, results: dict[str, Any]) -> None:
    """Write all numbers so far (atomically) when ``--json`` was given."""
    if cfg.json_path is None:
        return
    tmp = cfg.json_path.with_name(cfg.json_path.name + ".tmp")
    tmp.write_text(json.dumps(results, indent=2), encoding="utf-8")
    os.replace(tmp, cfg.json_path)


def table(results: dict[str, Any]) -> str:
    """One text table: every set × (exact, each dtype), with ratios against exact search."""
    head = (f"{'set':>14} {'kind':>13} {'build s':>8} {'file MB':>8} {'open ms':>8} {'es':>4} {'R@10':>6} "
            f"{'QPS b1':>8} {'QPS b64':>8} {'x b1':>6} {'x b64':>6} {'RSS MB':>7} {'x RSS':>6}")
    lines = [head, "-" * len(head)]
    for row in results["rows"]:
        ex = row["exact"]
        lines.append(f"{row['name']:>14} {'exact':>13} {'-':>8} {ex['matrix_mb']:8.1f} "
                     f"{1000 * ex['open_s']:8.1f} {'-':>4} {ex['recall']:6.3f} {ex['qps1']:8.1f} "
                     f"{ex['qps64']:8.1f} {1:6.1f} {1:6.1f} {ex['rss_mb']:7.1f} {1:6.2f}")
        for dtype, ix in row["indexes"].items():
            c = ix["chosen"]
            lines.append(
                f"{row['name']:>14} {dtype:>13} {ix['build_s']:8.1f} {ix['file_mb']:8.1f} "
                f"{1000 * ix['open_s']:8.1f} "
                f"{c['expansion_search']:4d} {c['recall']:6.3f} {c['qps1']:8.1f} {c['qps64']:8.1f} "
                f"{c['qps1'] / ex['qps1']:6.1f} {c['qps64'] / ex['qps64']:6.1f} {ix['rss_mb']:7.1f} "
                f"{ix['rss_mb'] / max(ex['rss_mb'], 1e-9):6.2f}")
    return "\n".join(lines)


def plot(results: dict[str, Any], path: Path) -> None:
    """Cost against size on log-log axes: build time, QPS (batch 1 and 64), RSS; exact search dashed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = sorted((r for r in results["rows"] if r["name"].startswith("synthetic")), key=lambda r: r["n"])
    if not rows:
        return
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.5))
    sizes = [r["n"] for r in rows]
    dtypes = sorted({d for r in rows for d in r["indexes"]})
    for i, dtype in enumerate(dtypes):
        pts = [(r["n"], r["indexes"][dtype]) for r in rows if dtype in r["indexes"]]
        xs = [n for n, _ in pts]
        colour = f"C{i}"
        axes[0].plot(xs, [ix["build_s"] for _, ix in pts], "o-", color=colour, label=dtype)
        axes[1].plot(xs, [ix["chosen"]["qps1"] for _, ix in pts], "o-", color=colour, label=f"{dtype} b1")
        axes[1].plot(xs, [ix["chosen"]["qps64"] for _, ix in pts], "s:", color=colour, label=f"{dtype} b64")
        axes[2].plot(xs, [max(ix["rss_mb"], 0.1) for _, ix in pts], "o-", color=colour, label=dtype)
    axes[1].plot(sizes, [r["exact"]["qps1"] for r in rows], "k--", label="exact b1")
    axes[1].plot(sizes, [r["exact"]["qps64"] for r in rows], "k-.", label="exact b64")
    axes[2].plot(sizes, [r["exact"]["rss_mb"] for r in rows], "k--", label="exact (f32 matrix)")
    for ax, title, unit in zip(axes, ("build time", "queries / s (recall@10 ≥ target)", "RSS after queries"),
                               ("s", "QPS", "MiB"), strict=True):
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("vectors (dim 300)")
        ax.set_ylabel(unit)
        ax.set_title(title)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle(f"usearch (view) vs exact numpy, {results['meta']['cpus']} CPUs")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def run(cfg: BenchConfig) -> dict[str, Any]:
    """The whole benchmark; returns (and writes) all numbers."""
    results: dict[str, Any] = {
        "meta": {"cpus": os.cpu_count(), "dim": DIM, "k": K, "batch": BATCH, "queries": cfg.queries,
                 "dtypes": list(cfg.dtypes), "big_dtypes": list(cfg.big_dtypes),
                 "target_recall": cfg.target_recall, "expansions": list(cfg.expansions),
                 "graphs": [list(g) for g in cfg.graphs], "defaults": {
                     "connectivity": CONNECTIVITY, "expansion_add": EXPANSION_ADD,
                     "expansion_search": EXPANSION_SEARCH},
                 "threads": cfg.threads, "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())},
        "rows": [],
    }
    if cfg.bundle is not None:
        vectors = unit_rows(np.load(cfg.bundle / "images.npy"))
        held = min(cfg.queries, len(vectors) // 10)
        perm = np.random.default_rng(cfg.seed).permutation(len(vectors))
        bench_set("flickr8k", vectors[perm[held:]], vectors[perm[:held]], cfg, results)
        print(table(results), flush=True)
    for n in cfg.sizes:
        name = f"synthetic-{n // 1000}k" if n < 1_000_000 else f"synthetic-{n // 1_000_000}M"
        data, queries = kept_set(cfg, name, n)
        bench_set(name, data, queries, cfg, results)
        del data
        gc.collect()
        print(table(results), flush=True)
        if cfg.plot_path is not None:
            plot(results, cfg.plot_path)
    results["meta"]["finished"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    write_json(cfg, results)
    return results


def main() -> None:
    """Parse arguments; run the benchmark (or, with ``--child``, one measurement) and print the table."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", default="10000,100000,1000000", help="comma-separated synthetic sizes")
    p.add_argument("--dtypes", default="f32,f16,i8")
    p.add_argument("--big-dtypes", default=None, help="dtypes for sizes >= 1M (default: --dtypes)")
    p.add_argument("--queries", type=int, default=1000)
    p.add_argument("--expansions", default="64,128,256", help="expansion_search values to try")
    p.add_argument("--target-recall", type=float, default=0.95)
    p.add_argument("--graphs", default=f"{CONNECTIVITY}:{EXPANSION_ADD}",
                   help="comma-separated connectivity:expansion_add build settings to compare "
                        "(default: the library's, used by trainer and engine)")
    p.add_argument("--threads", type=int, default=0, help="build and batch-search threads (0: all)")
    p.add_argument("--bundle", type=Path, default=None, help="also bench this bundle's images.npy")
    p.add_argument("--work", type=Path, default=Path("/tmp/bench-index-scale"))
    p.add_argument("--json", type=Path, default=None)
    p.add_argument("--plot", type=Path, default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--budget", type=float, default=5.0, help="seconds per QPS measurement")
    p.add_argument("--keep", action="store_true", help="keep index files in --work")
    p.add_argument("--no-rerank", action="store_true", help="skip the i8+rerank measurement")
    p.add_argument("--no-exact", action="store_true",
                   help="skip exact numpy search (merge it from another run on the same seed)")
    p.add_argument("--fastest", action="store_true",
                   help="show the fastest expansion_search reaching --target-recall, not the engine's")
    p.add_argument("--merge", type=Path, nargs="+", default=None,
                   help="only merge these --json outputs: print one table, write --json/--plot")
    p.add_argument("--child", choices=("index", "exact"), default=None, help=argparse.SUPPRESS)
    p.add_argument("--index", help=argparse.SUPPRESS)
    p.add_argument("--data", help=argparse.SUPPRESS)
    p.add_argument("--truth", help=argparse.SUPPRESS)
    p.add_argument("--qfile", help=argparse.SUPPRESS)
    p.add_argument("--rerank-data", default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child is not None:
        measured = child_index(args) if args.child == "index" else child_exact(args)
        print(json.dumps(measured), flush=True)
        return
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    cfg = BenchConfig(
        sizes=tuple(int(s) for s in args.sizes.split(",") if s),
        dtypes=tuple(d for d in args.dtypes.split(",") if d),
        big_dtypes=tuple(d for d in (args.big_dtypes or args.dtypes).split(",") if d),
        queries=args.queries,
        expansions=tuple(int(e) for e in args.expansions.split(",")),
        target_recall=args.target_recall,
        graphs=tuple((int(m), int(e)) for m, e in (g.split(":") for g in args.graphs.split(",") if g)),
        threads=args.threads,
        bundle=args.bundle,
        work=args.work,
        json_path=args.json,
        plot_path=args.plot,
        seed=args.seed,
        time_budget_s=args.budget,
        keep=args.keep,
        rerank=not args.no_rerank,
        exact=not args.no_exact,
        served=not args.fastest,
    )
    if args.merge:
        results = merge([json.loads(p.read_text(encoding="utf-8")) for p in args.merge])
        write_json(cfg, results)
    else:
        cfg.work.mkdir(parents=True, exist_ok=True)
        results = run(cfg)
    print(table(results), flush=True)
    if cfg.plot_path is not None:
        plot(results, cfg.plot_path)


if __name__ == "__main__":
    main()
