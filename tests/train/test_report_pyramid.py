"""The map's tile pyramid: every photo once at the deepest level, each level a 2× reduction of the next."""

from __future__ import annotations

import io
import itertools
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from train.report.mosaic import (
    BACKGROUND,
    PYRAMID_CELLS,
    PYRAMID_INDEX,
    PYRAMID_JSON,
    PYRAMID_TILES,
    Layout,
    PyramidConfig,
    draw_pyramid,
    pyramid_levels,
)

CELL, TILE = 16, 64


def _photos(tmp_path: Path, n: int) -> tuple[list[Path], np.ndarray]:
    """``n`` photos of one flat colour each, far apart (what a tile shows of each can be told apart)."""
    rng = np.random.default_rng(0)
    colours = np.zeros((0, 3), int)
    while len(colours) < n:
        c = rng.integers(40, 256, 3)
        if not len(colours) or np.abs(colours - c).sum(axis=1).min() > 60:
            colours = np.vstack([colours, c])
    paths = []
    for i, colour in enumerate(colours):
        path = tmp_path / f"p{i}.jpg"
        Image.new("RGB", (90 + i, 70), tuple(int(x) for x in colour)).save(path, quality=95)
        paths.append(path)
    return paths, colours


def _tile(report: Path, spans: np.ndarray, number: int) -> np.ndarray:
    start, end = spans[number]
    data = (report / PYRAMID_TILES).read_bytes()[start:end]
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"), dtype=int)


def test_levels_halve_down_to_one_tile() -> None:
    levels = pyramid_levels(grid=571, cell=64, tile=256)  # the original's 325,253 photos
    assert levels[0].cols == 1 and levels[-1].cols == 143 and levels[-1].size == 571 * 64
    assert [lv.cols for lv in levels] == [1, 2, 3, 5, 9, 18, 36, 72, 143]
    assert all(a.size == -(-b.size // 2) for a, b in itertools.pairwise(levels))
    with pytest.raises(ValueError):
        pyramid_levels(10, 48, 100)


def test_deepest_tiles_show_each_photo_once(tmp_path: Path) -> None:
    n, grid = 40, 7  # 49 cells: 9 stay empty; 7 × 16 px = 112 px, two tiles a side at the deepest level
    paths, colours = _photos(tmp_path, n)
    rng = np.random.default_rng(1)
    cells = rng.permutation(grid * grid)[:n]
    layout = Layout(np.arange(n), rng.random((n, 2)), np.column_stack([cells % grid, cells // grid]), grid,
                    "test", n)
    report = tmp_path / "report"
    summary = draw_pyramid(layout, paths, report, PyramidConfig(cell=CELL, tile=TILE, quality=95, workers=2))
    geometry = json.loads((report / PYRAMID_JSON).read_text())
    assert geometry["levels"] == summary["levels"] and summary["unreadable"] == []
    levels = geometry["levels"]
    assert [(lv["cols"], lv["rows"]) for lv in levels] == [(1, 1), (2, 2)]
    spans = np.load(report / PYRAMID_INDEX)
    assert len(spans) == summary["tiles"] == 5
    grid_cells = np.load(report / PYRAMID_CELLS)
    assert sorted(grid_cells[grid_cells >= 0].tolist()) == list(range(n))  # each photo in one cell
    deepest = levels[-1]
    picture = np.zeros((2 * TILE, 2 * TILE, 3), int)
    for y in range(2):
        for x in range(2):
            number = deepest["base"] + 2 * y + x
            picture[y * TILE:(y + 1) * TILE, x * TILE:(x + 1) * TILE] = _tile(report, spans, number)
    seen = np.zeros(n, int)
    for row in range(grid):
        for col in range(grid):
            block = picture[row * CELL + 2:(row + 1) * CELL - 2, col * CELL + 2:(col + 1) * CELL - 2]
            mean = block.reshape(-1, 3).mean(axis=0)
            index = int(grid_cells[row, col])
            if index < 0:
                assert np.abs(mean - BACKGROUND).max() < 8, (row, col)
                continue
            distance = np.abs(colours - mean).sum(axis=1)
            assert int(distance.argmin()) == index and distance[index] < 25, (row, col, mean, colours[index])
            seen[index] += 1
    assert (seen == 1).all()  # every photo shows once, in its own cell
    overview = _tile(report, spans, levels[0]["base"])
    reduced = picture[::2, ::2][:TILE, :TILE]
    # The level above is the one below, halved.
    assert np.abs(overview[:56, :56] - reduced[:56, :56]).mean() < 12
