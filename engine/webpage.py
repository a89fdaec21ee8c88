"""The topic in a browser: a web page served by the engine at ``/`` (the API stays under ``/v1/``).

The page is plain files under ``engine/static/`` (HTML, CSS, ES modules; no build step, nothing fetched
from elsewhere) that call the same API as any client, so it shares the engine's cache, pools and bundle
switching: a reload after an admin activates another bundle shows the new one.

Routes:
- ``GET /``: ``index.html``, its asset URLs pointing at ``/static/<tag>/`` where ``<tag>`` is a hash of
  every static file: those answer with a year's ``immutable`` caching, the page itself with ``no-cache``,
  so a deploy changes the tag and a browser fetches the new files once.
- ``GET /static/<tag>/<name>``: a static file (an older tag gets the current file, uncached).
- ``GET /map.json``: the page's view of the bundle's photo map. A bundle with a tile pyramid
  (``report/map/``, ``train.report.mosaic.draw_pyramid``: every photo, zoomable to single photos) answers
  its geometry and the URLs of its tiles and cells; an older one, its ``report/tsne_layout.json``: the
  photo id in each cell of the mosaic grid (no server paths), the mosaics' sizes and geometry, and whether
  it is a sample.
- ``GET /map/{version}/tiles/{z}/{x}/{y}.jpg``: one tile of that version's pyramid, a slice of its
  memory-mapped pack, cached for a year (a version's tiles never change);
  ``GET /map/{version}/cell/{col}/{row}``: the photo id in a cell of its grid (``{"id": null}`` for an
  empty cell), for a click on the map.
- ``GET /v1/similar/{id}``: the photo ``id`` and the images nearest to it (the map's and the viewer's
  "similar photos"), cached like the other answers.

Every page response carries a strict Content-Security-Policy (scripts, styles and connections from this
origin only, no inline script or style element, no eval), ``nosniff`` and a no-framing policy; the scripts
write user text (captions, queries) with ``textContent`` only.
"""

from __future__ import annotations

import hashlib
import json
import logging
import mmap
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import numpy as np
from aiohttp import web

from engine import views
from engine.cache import cache_key
from engine.errors import NotFound
from engine.keys import CACHE, METRICS, RUNTIME
from engine.model import Model
from space import bundle
from space.vectorindex import nearest

log = logging.getLogger(__name__)

STATIC_DIR = Path(__file__).with_name("static")
INDEX = "index.html"
LAYOUT = "tsne_layout.json"
# The pyramid's files under report/ (train.report.mosaic writes them; the engine only reads them).
PYRAMID_JSON = "map/pyramid.json"
PYRAMID_TILES = "map/tiles.bin"
PYRAMID_INDEX = "map/tiles.npy"
PYRAMID_CELLS = "map/cells.npy"
STATIC_PLACEHOLDER = "__STATIC__"
TYPES = {
    ".html": "text/html", ".css": "text/css", ".js": "text/javascript", ".svg": "image/svg+xml",
    ".txt": "text/plain",
}
CSP = "; ".join([
    "default-src 'self'",
    "script-src 'self'",
    "style-src 'self'",
    "img-src 'self' blob:",  # blob: the preview of a photo being uploaded (URL.createObjectURL)
    "connect-src 'self'",
    "object-src 'none'",
    "base-uri 'none'",
    "form-action 'self'",
    "frame-ancestors 'none'",
])
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "X-Frame-Options": "DENY",
}
IMMUTABLE = "public, max-age=31536000, immutable"


@dataclass(frozen=True)
class Assets:
    """The static files, read once: name → (bytes, content type), and the tag naming this set."""

    files: dict[str, tuple[bytes, str]]
    tag: str

    @classmethod
    def load(cls, root: Path = STATIC_DIR) -> Assets:
        files: dict[str, tuple[bytes, str]] = {}
        digest = hashlib.sha256()
        for path in sorted(p for p in root.iterdir() if p.is_file() and p.suffix in TYPES):
            data = path.read_bytes()
            charset = "" if path.suffix == ".svg" else "; charset=utf-8"
            files[path.name] = (data, TYPES[path.suffix] + charset)
            digest.update(path.name.encode() + b"\0" + data + b"\0")
        if INDEX not in files:
            raise FileNotFoundError(f"{root / INDEX} is missing: the engine package is incomplete")
        return cls(files, digest.hexdigest()[:12])

    def index(self) -> bytes:
        """``index.html`` with its asset URLs under this set's tag."""
        return self.files[INDEX][0].replace(STATIC_PLACEHOLDER.encode(), f"/static/{self.tag}".encode())


@dataclass(frozen=True)
class Pyramid:
    """A bundle's map tiles, memory-mapped: tile bytes by (z, x, y), the image row in each grid cell."""

    geometry: dict[str, Any]
    pack: Any  # mmap of tiles.bin (or b"" when empty)
    spans: np.ndarray  # (T, 2) start and end of each tile in the pack
    cells: np.ndarray  # (grid, grid) int32 image row, -1: empty

    @classmethod
    def open(cls, report: Path) -> Pyramid | None:
        """The pyramid under ``report``; None for a bundle without one (it shows its mosaic)."""
        names = (PYRAMID_JSON, PYRAMID_TILES, PYRAMID_INDEX, PYRAMID_CELLS)
        if not all((report / name).is_file() for name in names):
            return None
        geometry = json.loads((report / PYRAMID_JSON).read_text(encoding="utf-8"))
        pack: Any = b""
        if (report / PYRAMID_TILES).stat().st_size:
            with (report / PYRAMID_TILES).open("rb") as f:
                pack = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        spans = np.load(report / PYRAMID_INDEX, mmap_mode="r")
        cells = np.load(report / PYRAMID_CELLS, mmap_mode="r")
        grid = int(geometry["grid"])
        if cells.shape != (grid, grid) or spans.ndim != 2 or spans.shape[1] != 2:
            log.warning("%s: the map pyramid's files disagree: not shown", report)
            return None
        return cls(geometry, pack, spans, cells)

    def tile(self, z: int, x: int, y: int) -> bytes | None:
        """The JPEG bytes of tile (x, y) of level z, or None outside the pyramid."""
        levels = self.geometry["levels"]
        if not 0 <= z < len(levels):
            return None
        level = levels[z]
        if not (0 <= x < int(level["cols"]) and 0 <= y < int(level["rows"])):
            return None
        number = int(level["base"]) + y * int(level["cols"]) + x
        if number >= len(self.spans):
            return None
        start, end = (int(v) for v in self.spans[number])
        return bytes(self.pack[start:end])

    def row_at(self, col: int, row: int) -> int | None:
        """The image row in grid cell (col, row), or None (empty, or outside the grid)."""
        grid = int(self.geometry["grid"])
        if not (0 <= col < grid and 0 <= row < grid):
            return None
        value = int(self.cells[row, col])
        return value if value >= 0 else None


ASSETS = web.AppKey("web_assets", Assets)
MAPS = web.AppKey("web_maps", dict)  # bundle version → encoded /map.json body (the latest few)
PYRAMIDS = web.AppKey("web_pyramids", dict)  # bundle version → its Pyramid or None (the latest few)


async def page(request: web.Request) -> web.Response:
    """The page; ``?q=…&lang=…`` and ``#map`` are read by its script, so any search is a link."""
    assets = request.app[ASSETS]
    return web.Response(body=assets.index(), content_type="text/html", charset="utf-8",
                        headers={**SECURITY_HEADERS, "Cache-Control": "no-cache"})


async def static_file(request: web.Request) -> web.Response:
    """A static file; immutable under the current tag."""
    assets = request.app[ASSETS]
    name = request.match_info["name"]
    found = assets.files.get(name)
    if found is None or name == INDEX:
        raise NotFound(f"No static file {name[:100]!r}.")
    data, ctype = found
    cache = IMMUTABLE if request.match_info["tag"] == assets.tag else "no-cache"
    headers = {**SECURITY_HEADERS, "Content-Type": ctype, "Cache-Control": cache}
    return web.Response(body=data, headers=headers)


def map_body(model: Model) -> bytes:
    """``/map.json`` of a model: its tile pyramid's geometry, or (an older bundle) the mosaic grid's cells
    as photo ids (null: an empty cell), from its layout."""
    report = model.path / bundle.REPORT_DIR
    pyramid = Pyramid.open(report)
    if pyramid is not None:
        return _pyramid_body(model, pyramid)
    path = report / LAYOUT
    if not path.is_file():
        raise NotFound(f"Bundle {model.version} has no photo map (no report/{LAYOUT}).")
    layout = json.loads(path.read_text(encoding="utf-8"))
    grid = int(layout["grid"])
    cells: list[str | None] = [None] * (grid * grid)
    for item in layout.get("items", []):
        index, col, row = int(item["index"]), int(item["col"]), int(item["row"])
        # The layout's index is the row of the bundle's images.json (the report lays out the kept posts).
        if 0 <= index < len(model.ids) and 0 <= col < grid and 0 <= row < grid:
            cells[row * grid + col] = model.ids[index]
    laid_out = sum(c is not None for c in cells)
    mosaics = [
        {"size": int(size), "url": f"/v1/report/{spec['file']}?v={model.version}",
         "tile": int(spec["tile"]), "margin": int(spec["margin"])}
        for size, spec in sorted((layout.get("mosaics") or {}).items(), key=lambda kv: int(kv[0]))
        if (report / str(spec["file"])).is_file()
    ]
    if not mosaics:
        raise NotFound(f"Bundle {model.version} has a photo layout but no mosaic image.")
    images = int(layout.get("images") or len(model.ids))
    return json.dumps({
        "version": model.version, "grid": grid, "images": images, "laid_out": laid_out,
        "sampled": laid_out < images, "sampling": layout.get("sampling"), "mosaics": mosaics, "cells": cells,
    }, ensure_ascii=False).encode("utf-8")


def _pyramid_body(model: Model, pyramid: Pyramid) -> bytes:
    geometry = pyramid.geometry
    version = model.version
    root = f"/map/{quote(version, safe='')}"
    images = int(geometry.get("images") or model.n_images)
    return json.dumps({
        "version": version, "grid": int(geometry["grid"]), "images": model.n_images, "laid_out": images,
        "sampled": images < model.n_images, "sampling": None,
        "tiles": {
            "cell": int(geometry["cell"]), "tile": int(geometry["tile"]),
            "levels": [{"cols": int(lv["cols"]), "rows": int(lv["rows"]), "size": int(lv["size"])}
                       for lv in geometry["levels"]],
            "url": root + "/tiles/{z}/{x}/{y}.jpg", "cell_url": root + "/cell/{col}/{row}",
        },
    }, ensure_ascii=False).encode("utf-8")


def _pyramid(request: web.Request, model: Model) -> Pyramid | None:
    """The served model's pyramid, opened once per version."""
    pyramids = request.app[PYRAMIDS]
    if model.version not in pyramids:
        while len(pyramids) >= 2:  # the served bundle and perhaps the one before it
            pyramids.pop(next(iter(pyramids)))
        pyramids[model.version] = Pyramid.open(model.path / bundle.REPORT_DIR)
    found: Pyramid | None = pyramids[model.version]
    return found


def _served_pyramid(request: web.Request, model: Model) -> Pyramid | None:
    """The map pyramid of the bundle the path names, which must be the one served (else 404)."""
    if request.match_info["version"] != model.version:
        raise NotFound(f"The map of bundle {request.match_info['version'][:40]!r} is not served.")
    return _pyramid(request, model)


def _map_int(request: web.Request, name: str) -> int:
    raw = request.match_info[name]
    if not raw.isdigit() or len(raw) > 9:
        raise NotFound(f"No map tile or cell {raw[:20]!r}.")
    return int(raw)


async def map_tile(request: web.Request) -> web.Response:
    """One JPEG tile of the served bundle's map; immutable (the version is in the path)."""
    runtime = request.app[RUNTIME]
    with runtime.holder.use() as model:
        pyramid = _served_pyramid(request, model)
        z, x, y = (_map_int(request, name) for name in ("z", "x", "y"))
        data = None if pyramid is None else pyramid.tile(z, x, y)
    if data is None:
        raise NotFound(f"No map tile {z}/{x}/{y}.")
    return web.Response(body=data, content_type="image/jpeg",
                        headers={"Cache-Control": IMMUTABLE, "X-Content-Type-Options": "nosniff"})


async def map_cell(request: web.Request) -> web.Response:
    """The photo id in a cell of the served bundle's map grid (``null`` for an empty cell)."""
    runtime = request.app[RUNTIME]
    with runtime.holder.use() as model:
        pyramid = _served_pyramid(request, model)
        if pyramid is None:
            raise NotFound(f"Bundle {model.version} has no map tiles.")
        col, row = _map_int(request, "col"), _map_int(request, "row")
        grid = int(pyramid.geometry["grid"])
        if not (col < grid and row < grid):
            raise NotFound(f"No cell {col}/{row} on the {grid}×{grid} map.")
        key = pyramid.row_at(col, row)
        image_id = model.ids[key] if key is not None and 0 <= key < model.n_images else None
    return web.json_response({"id": image_id}, headers={"Cache-Control": IMMUTABLE})


async def map_data(request: web.Request) -> web.Response:
    """The photo map of the served bundle (computed once per bundle version)."""
    runtime = request.app[RUNTIME]
    maps = request.app[MAPS]
    with runtime.holder.use() as model:
        body = maps.get(model.version)
        if body is None:
            body = await runtime.text.run(map_body, model)
            while len(maps) >= 2:  # the served bundle and perhaps the one before it
                maps.pop(next(iter(maps)))
            maps[model.version] = body
    return web.Response(body=body, content_type="application/json", headers={"Cache-Control": "no-cache"})


def similar_to(model: Model, key: int, k: int) -> bytes:
    """``/v1/similar/{id}`` body: image ``key`` and the ``k`` images nearest to it (itself left out)."""
    query = model.image_vectors[key][None]  # already as served: centred when the bundle is, unit
    [(keys, sims)] = nearest(model.images_index, model.image_vectors, query, [k + 1])
    hits = [{**model.hits[i], "score": round(float(s), 4)}
            for i, s in zip(np.asarray(keys).tolist(), np.asarray(sims).tolist(), strict=True)
            if i != key and 0 <= i < len(model.hits)][:k]
    image = {name: value for name, value in model.hits[key].items() if name != "score"}
    return json.dumps({"image": image, "images": hits, "version": model.version},
                      ensure_ascii=False).encode("utf-8")


async def similar_by_id(request: web.Request) -> web.Response:
    """Images like the corpus photo ``id``, and that photo's own fields (caption, url, lang)."""
    runtime = request.app[RUNTIME]
    image_id = request.match_info["id"]
    k = views.k_param(request)
    with runtime.holder.use() as model:
        key = model.row_of(image_id)
        if key is None:
            raise NotFound(f"No image {image_id[:100]!r} in bundle {model.version}.")
        cache = request.app[CACHE]
        ckey = cache_key(model.version, "similar_id", image_id, k)
        body = await cache.get(ckey)
        request.app[METRICS].cache_result("similar_id", hit=body is not None)
        if body is None:
            body = await runtime.text.run(similar_to, model, key, k)
            cache.put(ckey, body)
    return web.Response(body=body, content_type="application/json")


def setup_routes(app: web.Application, assets: Assets | None = None) -> None:
    """Register the page's routes (``/``, ``/static/…``, ``/map.json``, ``/map/…``) and
    ``/v1/similar/{id}``."""
    app[ASSETS] = assets or Assets.load()
    app[MAPS] = {}
    app[PYRAMIDS] = {}
    app.router.add_get("/", page)
    app.router.add_get("/static/{tag}/{name}", static_file)
    app.router.add_get("/map.json", map_data)
    app.router.add_get("/map/{version}/tiles/{z}/{x}/{y}.jpg", map_tile)
    app.router.add_get("/map/{version}/cell/{col}/{row}", map_cell)
    app.router.add_get("/v1/similar/{id}", similar_by_id)

