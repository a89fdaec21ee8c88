"""The photo map at the original's size: t-SNE of every photo, the grid, and the tile pyramid's cost.

    python scripts/bench_map_scale.py BUNDLE OUT_DIR [--fit 100000] [--full-budget 1800] [--json out.json]

On the bundle's image vectors (unit rows, as the report lays them out), with the report's own code
(``train.report.mosaic``):

- t-SNE as the report runs it above ``--fit`` photos: openTSNE (FFT gradients, approximate neighbours, every
  core) on a seeded sample of ``--fit``, the others placed into it with openTSNE's ``transform``;
- with ``--full-budget S``: openTSNE on every photo, stopped after S seconds of optimisation if it has not
  finished; the time of its neighbour search and affinities, its iterations per second and the time the
  750 iterations would take at that rate (an extrapolation, said so in the output);
- the trustworthiness (k = 10, 2,000 photos) of each layout and of the grid;
- the snap to a grid of its own (strips of exact assignment) and the tile pyramid with every photo
  decoded (``PyramidConfig.reuse_repeated`` off: a synthetic bundle repeats its source's photos, a real
  corpus does not), its tiles and bytes.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np

from space.textspace import unit
from train.report import _trust
from train.report.mosaic import (
    Layout,
    PyramidConfig,
    draw_pyramid,
    grid_side,
    snap_to_grid,
    tsne_2d,
)

log = logging.getLogger("bench_map_scale")


def full_tsne(x: np.ndarray, budget_s: float, seed: int) -> dict[str, Any]:
    """openTSNE on every row, stopped after ``budget_s`` seconds of optimisation; timings."""
    from openTSNE import TSNE

    state: dict[str, Any] = {"first": None, "iterations": 0, "offset": 0, "last": 0}
    began = time.perf_counter()

    def callback(iteration: int, error: float, embedding: Any) -> bool:
        now = time.perf_counter()
        if state["first"] is None:
            state["first"] = now
            state["first_iteration"] = iteration
        if iteration < state["last"]:
            state["offset"] += state["last"]
        state["last"] = iteration
        state["iterations"] = state["offset"] + iteration
        state["now"] = now
        log.info("full t-SNE: iteration %d, KL %.3f, %.0f s", state["iterations"], error, now - began)
        return bool(now - state["first"] > budget_s)

    TSNE(perplexity=30, n_iter=500, early_exaggeration_iter=250, metric="cosine", random_state=seed,
         n_jobs=-1, callbacks=callback, callbacks_every_iters=10).fit(x)
    total = time.perf_counter() - began
    first, now = state["first"], state.get("now", time.perf_counter())
    done = state["iterations"]
    # Before the first callback: neighbours, affinities, PCA initialisation and the first 10 iterations.
    setup = first - began if first is not None else total
    measured = first is not None and now > first
    rate = (done - state.get("first_iteration", 0)) / (now - first) if measured else 0.0
    out = {"points": len(x), "seconds_run": round(total, 1), "iterations_run": done,
           "setup_and_first_10_iterations_s": round(setup, 1), "iterations_per_s": round(rate, 3)}
    if done < 750 and rate > 0:
        out["extrapolated_total_s"] = round(setup + (750 - 10) / rate, 0)
        out["note"] = "stopped at the budget: the total is extrapolated from the measured rate"
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("bundle", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--fit", type=int, default=100_000)
    parser.add_argument("--full-budget", type=float, default=0.0, help="seconds for the full t-SNE (0: skip)")
    parser.add_argument("--no-pyramid", action="store_true")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    x = unit(np.asarray(np.load(args.bundle / "images.npy", mmap_mode="r"), np.float32))
    items = json.loads((args.bundle / "images.json").read_text(encoding="utf-8"))["items"]
    paths = [str(it["path"]) for it in items]
    report: dict[str, Any] = {"bundle": str(args.bundle), "photos": len(x), "dim": int(x.shape[1]),
                              "cores": os.cpu_count(), "load_before": os.getloadavg()}
    began = time.perf_counter()
    points, method = tsne_2d(x, seed=args.seed, max_fit=args.fit)
    report["tsne"] = {"method": method, "seconds": round(time.perf_counter() - began, 1),
                      "trustworthiness": _trust(x, points, 2000, args.seed)}
    log.info("t-SNE: %s", report["tsne"])
    began = time.perf_counter()
    grid = grid_side(len(x), len(x))
    cells, assignment = snap_to_grid(points, grid)
    report["grid"] = {"side": grid, "assignment": assignment,
                      "seconds": round(time.perf_counter() - began, 1),
                      "trustworthiness": _trust(x, cells.astype(float), 2000, args.seed)}
    log.info("grid: %s", report["grid"])
    if not args.no_pyramid:
        out = args.out
        shutil.rmtree(out, ignore_errors=True)
        began = time.perf_counter()
        layout = Layout(np.arange(len(x)), points, cells, grid, assignment, len(x))
        summary = draw_pyramid(layout, paths, out, PyramidConfig(reuse_repeated=False), show_progress=True)
        report["pyramid"] = {"seconds": round(time.perf_counter() - began, 1), "tiles": summary["tiles"],
                             "megabytes": round(summary["bytes"] / 1e6, 1), "levels": len(summary["levels"]),
                             "unreadable": len(summary["unreadable"])}
        log.info("pyramid: %s", report["pyramid"])
    if args.full_budget > 0:
        report["full_tsne"] = full_tsne(x, args.full_budget, args.seed)
        log.info("full t-SNE: %s", report["full_tsne"])
    report["load_after"] = os.getloadavg()
    print(json.dumps(report, indent=1))
    if args.json:
        args.json.write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
