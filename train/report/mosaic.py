"""t-SNE of image vectors snapped to a grid and drawn as photo mosaics and as a tile pyramid.

One t-SNE of every photo (:func:`tsne_2d`; above ``max_fit`` points a seeded sample is fitted and the
others are placed into that embedding by openTSNE's ``transform``) gives two drawings:

- the mosaics (PNG at a few fixed sizes, the bot's picture): a seeded sample of at most the mosaic grid's
  capacity, snapped to that grid, each photo opened once and pasted into every canvas;
- the tile pyramid (the web page's zoomable map, :func:`draw_pyramid`): every photo on a grid of its own,
  ``cell`` pixels a photo at the deepest level, cut into ``tile``-pixel JPEG tiles, each level above a
  2× reduction of the one below down to one tile. Tiles are streamed a row at a time, so memory holds a
  row of tiles per level, never the whole picture; they are packed into one file with an offsets table
  (``report/map/``), which the engine maps and serves a slice at a time.
"""

from __future__ import annotations

import io
import json
import logging
import math
import os
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
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


# Above this many points t-SNE uses every core (below, one thread keeps a small run reproducible).
TSNE_PARALLEL_FROM = 20_000


def tsne_2d(
    x: np.ndarray,
    *,
    seed: int,
    perplexity: float = 30.0,
    n_iter: int = 500,
    progress: ProgressCallback | None = None,
    stage: str = "tsne",
    max_fit: int | None = None,
) -> tuple[np.ndarray, str]:
    """A seeded 2-D t-SNE of the rows of ``x`` (cosine metric, openTSNE: a declared dependency of the
    trainer, so there is no second implementation to keep in step).

    Above ``max_fit`` rows a seeded sample of ``max_fit`` rows is fitted and the others are placed into
    its embedding (``TSNEEmbedding.transform``: each new point optimised against the fixed fitted ones),
    which costs far less than fitting them all.
    """
    n = len(x)
    if n < 4:
        # t-SNE is undefined on a handful of points: spread them on a line instead.
        return np.column_stack([np.arange(n, dtype=float), np.zeros(n)]), "line"
    if max_fit is not None and n > max_fit >= 4:
        return _tsne_fit_transform(x, seed=seed, perplexity=perplexity, n_iter=n_iter, progress=progress,
                                   stage=stage, max_fit=max_fit)
    emb, method = _open_tsne_fit(np.asarray(x, dtype=np.float64), seed=seed, perplexity=perplexity,
                                 n_iter=n_iter, progress=progress, stage=stage)
    return np.asarray(emb, dtype=float), method


def _tsne_fit_transform(
    x: np.ndarray, *, seed: int, perplexity: float, n_iter: int, progress: ProgressCallback | None,
    stage: str, max_fit: int,
) -> tuple[np.ndarray, str]:
    """t-SNE of a seeded sample of ``max_fit`` rows, the other rows placed into it (openTSNE transform)."""
    n = len(x)
    fit = np.sort(np.random.default_rng(seed).choice(n, size=max_fit, replace=False))
    rest = np.setdiff1d(np.arange(n), fit)
    fitted, _ = _open_tsne_fit(np.asarray(x[fit], np.float64), seed=seed, perplexity=perplexity,
                               n_iter=n_iter, progress=progress, stage=stage)
    out = np.zeros((n, 2))
    out[fit] = np.asarray(fitted)
    chunk = 50_000  # bounds the neighbour search's memory; each chunk is placed against the fitted points
    for start in range(0, len(rest), chunk):
        part = rest[start:start + chunk]
        out[part] = np.asarray(fitted.transform(np.asarray(x[part], np.float64)))
        if progress is not None:
            progress(stage + "-transform", start + len(part), len(rest),
                     f"placed {start + len(part)} of {len(rest)} points into the t-SNE of {max_fit}")
    return out, f"openTSNE fit of {max_fit} + transform of {len(rest)}"


def _open_tsne_fit(x: np.ndarray, *, seed: int, perplexity: float, n_iter: int,
                   progress: ProgressCallback | None, stage: str) -> tuple[Any, str]:
    """openTSNE's fitted embedding (kept as an object: it can place new points)."""
    from openTSNE import TSNE as OpenTSNE

    n = len(x)
    early = 250
    total = early + n_iter
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
        perplexity=max(2.0, min(perplexity, (n - 1) / 3.0)), n_iter=n_iter, early_exaggeration_iter=early,
        metric="cosine", random_state=seed, n_jobs=-1 if n >= TSNE_PARALLEL_FROM else 1,
        callbacks=callback, callbacks_every_iters=50,
    ).fit(x)
    if progress is not None:
        progress(stage, total, total, f"t-SNE of {n} points done (openTSNE)")
    return emb, "openTSNE"


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


@dataclass(frozen=True)
class Layouts:
    """One t-SNE of every photo, snapped twice: the mosaics' (sampled) grid and the full grid."""

    mosaic: Layout  # at most the mosaic grid's capacity, sampled when the corpus is larger
    full: Layout  # every photo on a grid of its own (the same object when nothing was sampled)
    method: str  # how the t-SNE was computed


def compute_layouts(
    vectors: np.ndarray,
    *,
    max_grid: int,
    seed: int,
    perplexity: float = 30.0,
    n_iter: int = 500,
    max_exact: int = 1024,
    strip_points: int = 1024,
    max_fit: int | None = None,
    progress: ProgressCallback | None = None,
) -> Layouts:
    """t-SNE of every image (``max_fit``: see :func:`tsne_2d`), snapped to the full grid and, for a corpus
    above the mosaic grid's capacity, a seeded sample of it snapped to the mosaic grid."""
    n_all = len(vectors)
    points, method = tsne_2d(vectors, seed=seed, perplexity=perplexity, n_iter=n_iter, progress=progress,
                             max_fit=max_fit)
    grid = grid_side(n_all, n_all)
    cells, assignment = snap_to_grid(points, grid, max_exact=max_exact, strip_points=strip_points)
    full = Layout(np.arange(n_all), points, cells, grid, assignment, n_all)
    mosaic_grid = grid_side(n_all, max_grid)
    capacity = mosaic_grid * mosaic_grid
    if n_all <= capacity:
        return Layouts(full, full, method)
    rng = np.random.default_rng(seed)
    indices = np.sort(rng.choice(n_all, size=capacity, replace=False))
    log.info("sampling %d of %d images for the %d×%d mosaic", capacity, n_all, mosaic_grid, mosaic_grid)
    sample_cells, sample_assignment = snap_to_grid(points[indices], mosaic_grid, max_exact=max_exact,
                                                   strip_points=strip_points)
    mosaic = Layout(indices, points[indices], sample_cells, mosaic_grid, sample_assignment, n_all)
    return Layouts(mosaic, full, method)


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


# ---------------------------------------------------------------- the tile pyramid

PYRAMID_DIR = "map"
PYRAMID_JSON = f"{PYRAMID_DIR}/pyramid.json"
PYRAMID_TILES = f"{PYRAMID_DIR}/tiles.bin"
PYRAMID_INDEX = f"{PYRAMID_DIR}/tiles.npy"
PYRAMID_CELLS = f"{PYRAMID_DIR}/cells.npy"


@dataclass(frozen=True)
class PyramidConfig:
    """How the zoomable map is drawn."""

    cell: int = 64  # pixels a photo at the deepest level
    tile: int = 256  # pixels a tile side (a multiple of ``cell``)
    quality: int = 80  # JPEG quality of the tiles
    workers: int = 0  # photo decoding threads (0: one per core)
    # Decode a photo whose path several posts share once (False: every time, as for distinct photos).
    reuse_repeated: bool = True


@dataclass(frozen=True)
class PyramidLevel:
    """One zoom level: ``cols`` × ``rows`` tiles over a ``size``-pixel square picture."""

    z: int
    cols: int
    rows: int
    size: int
    base: int  # the number of the level's first tile in the pack (row-major within a level)


def pyramid_levels(grid: int, cell: int, tile: int) -> list[PyramidLevel]:
    """The levels of a ``grid``-cell square at ``cell`` pixels a cell, overview (z = 0, one tile) first."""
    if tile % cell:
        raise ValueError(f"the tile side {tile} is not a multiple of the cell side {cell}")
    sizes = [grid * cell]
    cols = [max(1, math.ceil(sizes[0] / tile))]
    while cols[-1] > 1:
        sizes.append(math.ceil(sizes[-1] / 2))
        cols.append(math.ceil(cols[-1] / 2))
    levels, base = [], 0
    for z, (size, n) in enumerate(zip(reversed(sizes), reversed(cols), strict=True)):
        levels.append(PyramidLevel(z, n, n, size, base))
        base += n * n
    return levels


class _Pack:
    """Tiles appended to one file in the order they are made; ``(start, end)`` of each tile by number."""

    def __init__(self, path: Path, count: int, quality: int) -> None:
        self.file = path.open("wb")
        self.spans = np.zeros((count, 2), dtype=np.int64)
        self.written = np.zeros(count, dtype=bool)
        self.at = 0
        self.quality = quality

    def put(self, number: int, image: Image.Image) -> None:
        out = io.BytesIO()
        image.save(out, format="JPEG", quality=self.quality, optimize=False)
        data = out.getvalue()
        self.file.write(data)
        self.spans[number] = (self.at, self.at + len(data))
        self.written[number] = True
        self.at += len(data)

    def close(self) -> None:
        self.file.close()


class _Levels:
    """Rows of tiles pushed up the pyramid: two rows of a level make one row of the level above."""

    def __init__(self, levels: list[PyramidLevel], tile: int, pack: _Pack) -> None:
        self.levels = levels
        self.tile = tile
        self.pack = pack
        self.pending: dict[int, tuple[int, list[Image.Image]]] = {}

    def push(self, z: int, y: int, row: list[Image.Image]) -> None:
        level = self.levels[z]
        for x, image in enumerate(row):
            self.pack.put(level.base + y * level.cols + x, image)
        if z == 0:
            return
        if y % 2 == 0 and y + 1 < level.rows:
            self.pending[z] = (y, row)
            return
        upper, lower = (self.pending.pop(z)[1], row) if y % 2 else (row, None)
        self.push(z - 1, y // 2, self._reduce(self.levels[z - 1].cols, upper, lower))

    def _reduce(self, cols: int, upper: list[Image.Image],
                lower: list[Image.Image] | None) -> list[Image.Image]:
        half = self.tile // 2
        out = []
        for x in range(cols):
            canvas = Image.new("RGB", (self.tile, self.tile), BACKGROUND)
            for dy, row in ((0, upper), (1, lower)):
                for dx in (0, 1):
                    child = 2 * x + dx
                    if row is not None and child < len(row):
                        canvas.paste(row[child].reduce(2), (dx * half, dy * half))
            out.append(canvas)
        return out


def draw_pyramid(
    layout: Layout,
    image_paths: Sequence[str | Path],
    report_dir: Path,
    cfg: PyramidConfig | None = None,
    *,
    progress: ProgressCallback | None = None,
    show_progress: bool = False,
) -> dict[str, Any]:
    """Draw every laid-out photo once, at the deepest level, and the levels above it; write the pack.

    Writes ``map/tiles.bin`` (JPEG tiles), ``map/tiles.npy`` ((T, 2) start and end of each tile, numbered
    level by level, row-major), ``map/cells.npy`` ((grid, grid) int32: the image row in each cell, -1 for
    none) and ``map/pyramid.json`` (the geometry); returns the summary.
    """
    from tqdm import tqdm

    cfg = cfg or PyramidConfig()
    grid, cell, tile = layout.grid, cfg.cell, cfg.tile
    levels = pyramid_levels(grid, cell, tile)
    deepest = levels[-1]
    out = report_dir / PYRAMID_DIR
    out.mkdir(parents=True, exist_ok=True)
    cells = np.full((grid, grid), -1, dtype=np.int32)
    cells[layout.cells[:, 1], layout.cells[:, 0]] = layout.indices
    np.save(report_dir / PYRAMID_CELLS, cells)
    per_tile = tile // cell
    total = levels[-1].base + deepest.cols * deepest.rows
    pack = _Pack(report_dir / PYRAMID_TILES, total, cfg.quality)
    pyramid = _Levels(levels, tile, pack)
    thumbs = _Thumbnails(image_paths, cell, layout.indices if cfg.reuse_repeated else np.zeros(0, np.int64))
    unreadable: list[int] = []
    drawn = 0
    workers = cfg.workers or os.cpu_count() or 1
    try:
        with ThreadPoolExecutor(max_workers=workers) as pool, tqdm(
                total=len(layout.indices), desc="map tiles", unit="photo", disable=not show_progress,
                mininterval=2.0) as bar:
            for y in range(deepest.rows):
                row = [Image.new("RGB", (tile, tile), BACKGROUND) for _ in range(deepest.cols)]
                band = cells[y * per_tile:(y + 1) * per_tile]
                rs, cs = np.nonzero(band >= 0)
                placed = [(int(r), int(c), int(band[r, c])) for r, c in zip(rs, cs, strict=True)]
                for (r, c, index), thumb in zip(placed, pool.map(thumbs.get, [p[2] for p in placed]),
                                                strict=True):
                    if thumb is None:
                        unreadable.append(index)
                        thumb = Image.new("RGB", (cell, cell), MISSING_TILE)
                    row[c // per_tile].paste(thumb, ((c % per_tile) * cell, r * cell))
                pyramid.push(deepest.z, y, row)
                drawn += len(placed)
                bar.update(len(placed))
                if progress is not None:
                    progress("map", drawn, len(layout.indices),
                             f"{drawn}/{len(layout.indices)} photos on the map")
    finally:
        pack.close()
    if not pack.written.all():
        raise RuntimeError(f"the map pyramid left {int((~pack.written).sum())} tiles unwritten")
    np.save(report_dir / PYRAMID_INDEX, pack.spans)
    summary = {
        "grid": grid, "cell": cell, "tile": tile, "format": "jpeg", "images": len(layout.indices),
        "levels": [{"z": lv.z, "cols": lv.cols, "rows": lv.rows, "size": lv.size, "base": lv.base}
                   for lv in levels],
        "tiles": total, "bytes": pack.at, "unreadable": sorted(unreadable),
        "files": {"tiles": PYRAMID_TILES, "index": PYRAMID_INDEX, "cells": PYRAMID_CELLS},
    }
    (report_dir / PYRAMID_JSON).write_text(json.dumps(summary, indent=1), encoding="utf-8")
    log.info("map pyramid: %d photos, %d levels, %d tiles, %.1f MB", len(layout.indices), len(levels), total,
             pack.at / 1e6)
    return summary


class _Thumbnails:
    """A photo's ``side``-pixel square thumbnail by image row; photos whose path repeats are decoded once."""

    def __init__(self, image_paths: Sequence[str | Path], side: int, rows: np.ndarray) -> None:
        self.paths = image_paths
        self.side = side
        counts = Counter(str(image_paths[int(i)]) for i in rows)
        self.repeated = {path for path, n in counts.items() if n > 1}
        self.cache: dict[str, Image.Image | None] = {}
        self.load: Callable[[str | Path], Image.Image] = lambda path: square_thumbnails(path, [side])[side]

    def get(self, row: int) -> Image.Image | None:
        path = self.paths[row]
        key = str(path)
        if key in self.repeated and key in self.cache:
            return self.cache[key]
        try:
            thumb: Image.Image | None = self.load(path)
        except SpaceError as exc:
            log.warning("map: skipping %s: %s", path, exc)
            thumb = None
        if key in self.repeated:
            self.cache[key] = thumb
        return thumb
