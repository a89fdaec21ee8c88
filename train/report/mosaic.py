"""t-SNE of image vectors snapped to a grid and drawn as photo mosaics.

The layout is computed once (t-SNE → grid assignment) and drawn at every requested size, opening each
photo once and pasting its thumbnail into every canvas, so memory holds the canvases and one photo, never
the whole corpus. Corpora larger than the grid are sampled (seeded) to its capacity before t-SNE.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from space.errors import SpaceError
from space.images import open_image
from train.progress import ProgressCallback

log = logging.getLogger(__name__)

BACKGROUND = (24, 24, 24)
MISSING_TILE = (96, 96, 96)


@dataclass(frozen=True)
class Layout:
    """Where each (sampled) image sits: its t-SNE point and its grid cell."""

    indices: np.ndarray  # (n,) int: row in the caller's image list
    points: np.ndarray  # (n, 2) float: t-SNE coordinates
    cells: np.ndarray  # (n, 2) int: (column, row) on the grid
    grid: int  # the grid is grid × grid cells
    assignment: str  # how points were assigned to cells
    sampled_from: int  # how many images there were before sampling


def tsne_2d(
    x: np.ndarray,
    *,
    seed: int,
    perplexity: float = 30.0,
    n_iter: int = 500,
    progress: ProgressCallback | None = None,
    stage: str = "tsne",
) -> tuple[np.ndarray, str]:
    """A seeded 2-D t-SNE of the rows of ``x`` (cosine metric, openTSNE: a declared dependency of the
    trainer, so there is no second implementation to keep in step)."""
    n = len(x)
    if n < 4:
        # t-SNE is undefined on a handful of points: spread them on a line instead.
        return np.column_stack([np.arange(n, dtype=float), np.zeros(n)]), "line"
    perplexity = max(2.0, min(perplexity, (n - 1) / 3.0))
    x = np.asarray(x, dtype=np.float64)
    early = 250  # openTSNE's early-exaggeration phase, before the n_iter proper
    total = early + n_iter
    from openTSNE import TSNE as OpenTSNE

    # openTSNE restarts its iteration count in each phase: keep a running offset so progress only grows.
    state = {"offset": 0, "last": 0}

    def callback(iteration: int, error: float, embedding: Any) -> bool:
        if iteration < state["last"]:
            state["offset"] += state["last"]
        state["last"] = iteration
        if progress is not None:
            done = min(state["offset"] + iteration, total - 1)
            progress(stage, done, total, f"t-SNE of {n} points: iteration {done}, KL {error:.3f}")
        return False

    emb = OpenTSNE(
        perplexity=perplexity,
        n_iter=n_iter,
        early_exaggeration_iter=early,
        metric="cosine",
        random_state=seed,
        n_jobs=1,
        callbacks=callback,
        callbacks_every_iters=50,
    ).fit(x)
    method = "openTSNE"
    if progress is not None:
        progress(stage, total, total, f"t-SNE of {n} points done ({method})")
    return np.asarray(emb, dtype=float), method


def _normalise(points: np.ndarray, grid: int) -> np.ndarray:
    """Scale points into [0, grid) on both axes (aspect kept), centred."""
    lo, hi = points.min(axis=0), points.max(axis=0)
    span = float(max(hi - lo)) or 1.0
    scaled = (points - lo) / span * (grid - 1e-9)
    return scaled + (grid - (hi - lo) / span * grid) / 2.0


def _assign(p: np.ndarray, cols: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """Optimal assignment of points ``p`` to the cells (cols × rows), by squared distance to cell centres."""
    from scipy.optimize import linear_sum_assignment

    cx, cy = np.meshgrid(cols, rows, indexing="ij")
    cells = np.column_stack([cx.ravel(), cy.ravel()])
    cost = ((p[:, None, :] - (cells[None, :, :] + 0.5)) ** 2).sum(axis=-1)
    r, c = linear_sum_assignment(cost)
    out = np.zeros((len(p), 2), dtype=int)
    out[r] = cells[c]
    return out


def snap_to_grid(
    points: np.ndarray, grid: int, *, max_exact: int = 1024, strip_points: int = 1024
) -> tuple[np.ndarray, str]:
    """Assign each 2-D point its own cell of a ``grid``×``grid`` grid; return (cells, method).

    Up to ``max_exact`` points: the optimal assignment minimising total squared distance to the cell
    centres (``scipy.optimize.linear_sum_assignment``). Beyond that the exact solve is too slow (38 s for
    4096 points), so points are cut by x into vertical strips of about ``strip_points`` cells, each
    receiving points in proportion to its width, and each strip is solved exactly on its own.
    """
    n = len(points)
    if n > grid * grid:
        raise ValueError(f"{n} points do not fit a {grid}×{grid} grid")
    if n == 0:
        return np.zeros((0, 2), dtype=int), "empty"
    p = _normalise(points, grid)
    all_rows = np.arange(grid)
    if n <= max_exact:
        return _assign(p, np.arange(grid), all_rows), "linear_sum_assignment"
    width = max(1, min(grid, strip_points // grid))
    starts = list(range(0, grid, width))
    order = np.argsort(p[:, 0], kind="stable")
    # Cumulative rounding: strip k gets ~n·width/grid points, never more than its width·grid cells.
    bounds = [round(n * c / grid) for c in [*starts, grid]]
    cells = np.zeros((n, 2), dtype=int)
    for k, col0 in enumerate(starts):
        chunk = order[bounds[k] : bounds[k + 1]]
        if len(chunk) == 0:
            continue
        cols = np.arange(col0, min(grid, col0 + width))
        q = p[chunk].copy()
        lo, hi = q[:, 0].min(), q[:, 0].max()
        # Stretch the strip's points across its own columns; y keeps the global scale.
        q[:, 0] = col0 + (q[:, 0] - lo) / ((hi - lo) or 1.0) * (len(cols) - 1e-9)
        cells[chunk] = _assign(q, cols, all_rows)
    return cells, f"strips_of_{width}_columns"


def grid_side(n: int, max_grid: int) -> int:
    """The smallest square grid holding ``n`` tiles, capped at ``max_grid``."""
    return max(1, min(max_grid, math.ceil(math.sqrt(max(n, 1)))))


def compute_layout(
    vectors: np.ndarray,
    *,
    max_grid: int,
    seed: int,
    perplexity: float = 30.0,
    n_iter: int = 500,
    max_exact: int = 1024,
    strip_points: int = 1024,
    progress: ProgressCallback | None = None,
) -> tuple[Layout, str]:
    """Sample to the grid's capacity, run t-SNE and snap to the grid; return the layout and t-SNE method."""
    n_all = len(vectors)
    grid = grid_side(n_all, max_grid)
    capacity = grid * grid
    if n_all > capacity:
        rng = np.random.default_rng(seed)
        indices = np.sort(rng.choice(n_all, size=capacity, replace=False))
        log.info("sampling %d of %d images for the %d×%d mosaic", capacity, n_all, grid, grid)
    else:
        indices = np.arange(n_all)
    points, method = tsne_2d(vectors[indices], seed=seed, perplexity=perplexity, n_iter=n_iter,
                             progress=progress)
    cells, assignment = snap_to_grid(points, grid, max_exact=max_exact, strip_points=strip_points)
    return Layout(indices, points, cells, grid, assignment, n_all), method


def square_thumbnails(path: str | Path, sides: Sequence[int]) -> dict[int, Image.Image]:
    """The photo's central square, resized to each side in ``sides`` (decoded once)."""
    img = open_image(path, draft=max(sides))
    w, h = img.size
    s = min(w, h)
    square = img.crop(((w - s) // 2, (h - s) // 2, (w - s) // 2 + s, (h - s) // 2 + s))
    return {side: square.resize((side, side), Image.Resampling.LANCZOS) for side in sides}


def tile_geometry(size: int, grid: int) -> tuple[int, int]:
    """(tile side, margin) for a ``size``-pixel square canvas of ``grid`` tiles a side."""
    tile = size // grid
    if tile < 1:
        raise ValueError(f"a {size}px mosaic cannot hold {grid} tiles a side")
    return tile, (size - tile * grid) // 2


def draw_mosaics(
    layout: Layout,
    image_paths: Sequence[str | Path],
    sizes: Sequence[int],
    out_paths: Sequence[Path],
    *,
    progress: ProgressCallback | None = None,
    show_progress: bool = False,
) -> dict[str, Any]:
    """Paste each laid-out photo once per canvas and save the PNGs; return what was drawn."""
    from tqdm import tqdm

    geometry = {size: tile_geometry(size, layout.grid) for size in sizes}
    canvases = {size: Image.new("RGB", (size, size), BACKGROUND) for size in sizes}
    tiles = sorted({t for t, _ in geometry.values()})
    unreadable: list[int] = []
    total = len(layout.indices)
    for k, (index, (col, row)) in enumerate(
        tqdm(zip(layout.indices, layout.cells, strict=True), total=total, desc="mosaic tiles",
             disable=not show_progress)
    ):
        try:
            thumbs = square_thumbnails(image_paths[int(index)], tiles)
        except SpaceError as exc:
            log.warning("mosaic: skipping %s: %s", image_paths[int(index)], exc)
            unreadable.append(int(index))
            thumbs = {t: Image.new("RGB", (t, t), MISSING_TILE) for t in tiles}
        for size, canvas in canvases.items():
            tile, margin = geometry[size]
            canvas.paste(thumbs[tile], (margin + int(col) * tile, margin + int(row) * tile))
        if progress is not None and (k + 1 == total or (k + 1) % 100 == 0):
            progress("mosaic", k + 1, total, f"{k + 1}/{total} tiles drawn")
    for (size, canvas), path in zip(canvases.items(), out_paths, strict=True):
        canvas.save(path, format="PNG", optimize=False, compress_level=6)
        log.info("wrote %s (%dpx)", path, size)
    return {
        "sizes": {str(s): {"file": p.name, "tile": geometry[s][0], "margin": geometry[s][1]}
                  for s, p in zip(sizes, out_paths, strict=True)},
        "unreadable": unreadable,
    }
