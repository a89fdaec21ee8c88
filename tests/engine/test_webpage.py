"""The web page's routes (engine.webpage) over the small real bundle, without a browser.

The browser itself is tests/engine/test_web_browser.py; here: the page and its files with their headers
(a strict CSP, immutable assets under the tag), nothing fetched from elsewhere and no HTML written from
data in the scripts, /map.json against the bundle's map (its tile pyramid, or an older bundle's mosaic), the
map's tiles and cells, /v1/similar/{id}, and the package data.
"""

from __future__ import annotations

import fnmatch
import json
import re
import shutil
import tomllib
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from aiohttp.test_utils import TestClient

from engine import webpage
from engine.app import create_app
from space import bundle
from space.items import public_ids
from tests.conftest import ROOT
from tests.engine.helpers import make_settings, publish_copy

STATIC = ROOT / "engine" / "static"


@pytest.fixture
async def client(aiohttp_client: Any, small_bundle_models: Path) -> TestClient:
    return await aiohttp_client(create_app(make_settings(small_bundle_models)))


def _asset_urls(html: str) -> list[str]:
    return re.findall(r'(?:src|href)="(/static/[^"]+)"', html)


async def test_the_page_has_a_strict_policy_and_tagged_assets(client: TestClient) -> None:
    r = await client.get("/", params={"q": "<script>dog"})
    assert r.status == 200 and r.content_type == "text/html"
    csp = r.headers["Content-Security-Policy"]
    assert "default-src 'self'" in csp and "script-src 'self'" in csp and "style-src 'self'" in csp
    assert "unsafe-inline" not in csp and "unsafe-eval" not in csp and "frame-ancestors 'none'" in csp
    assert r.headers["X-Content-Type-Options"] == "nosniff" and r.headers["Cache-Control"] == "no-cache"
    html = await r.text()
    assert "<script>" not in html.lower()  # the query is never written into the page by the server
    assert re.findall(r"<script\b[^>]*>", html) == [f'<script type="module" src="/static/{_tag()}/app.js">']
    assert " style=" not in html and "__STATIC__" not in html
    urls = _asset_urls(html)
    assert {u.rsplit("/", 1)[1] for u in urls} == {"icon.svg", "style.css", "common.js", "app.js"}
    for url in urls:
        asset = await client.get(url)
        assert asset.status == 200, url
        assert asset.headers["Cache-Control"] == webpage.IMMUTABLE
        assert asset.headers["Content-Security-Policy"] == webpage.CSP


def _tag() -> str:
    return webpage.Assets.load().tag


async def test_static_files_other_tags_and_unknown_names(client: TestClient) -> None:
    for name, ctype in (("app.js", "text/javascript"), ("map.js", "text/javascript"),
                        ("analyses.js", "text/javascript"), ("common.js", "text/javascript"),
                        ("style.css", "text/css"), ("icon.svg", "image/svg+xml")):
        r = await client.get(f"/static/old/{name}")  # a page of an older deploy still gets a file
        assert r.status == 200 and r.content_type == ctype and r.headers["Cache-Control"] == "no-cache"
        assert await r.read() == (STATIC / name).read_bytes()
    for bad in ("index.html", "nope.js", "..%2Fwebpage.py", "%2E%2E"):
        r = await client.get(f"/static/{_tag()}/{bad}")
        assert r.status == 404, bad
        assert (await r.json())["error"] == "not_found"


def test_the_scripts_fetch_nothing_from_elsewhere_and_write_no_html() -> None:
    for path in STATIC.iterdir():
        text = path.read_text(encoding="utf-8")
        text = text.replace("http://www.w3.org/2000/svg", "")  # the SVG namespace, never fetched
        other_host = re.search(r"(?<![\w.])(https?:)?//[a-z0-9-]+\.[a-z]", text)
        assert other_host is None, f"{path.name} names another host: {other_host}"
        if path.suffix == ".js":
            for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval(",
                         "new Function", "setAttribute(\"style\"", "setTimeout(\""):
                assert sink not in text, f"{path.name} uses {sink}"


def test_package_data_ships_every_static_file() -> None:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]
    globs = config["engine"]
    files = [p.relative_to(ROOT / "engine").as_posix() for p in STATIC.iterdir()]
    assert files and all(any(fnmatch.fnmatch(f, g) for g in globs) for f in files), (files, globs)
    assert "COPY engine ./engine" in (ROOT / "docker" / "Dockerfile.serve").read_text()


def _without_tiles(staged: Path) -> None:
    """A bundle as published before the map's tile pyramid: its report holds the mosaic only."""
    shutil.rmtree(staged / bundle.REPORT_DIR / "map")


async def test_map_tiles_and_cells(client: TestClient, small_bundle: Path) -> None:
    r = await client.get("/map.json")
    assert r.status == 200
    data = await r.json()
    pyramid = json.loads((small_bundle / bundle.REPORT_DIR / "map" / "pyramid.json").read_text())
    items = json.loads((small_bundle / bundle.IMAGE_META).read_text())["items"]
    ids = public_ids(items)
    grid, tiles = data["grid"], data["tiles"]
    assert grid == pyramid["grid"] and not data["sampled"]
    assert data["laid_out"] == data["images"] == len(items)
    assert "cells" not in data and "/" not in data["version"]
    levels = tiles["levels"]
    assert levels[0]["cols"] == 1 and levels[-1]["size"] == grid * tiles["cell"]
    deepest = len(levels) - 1
    url = tiles["url"].replace("{z}", str(deepest)).replace("{x}", "1").replace("{y}", "0")
    tile = await client.get(url)
    assert tile.status == 200 and tile.content_type == "image/jpeg"
    assert tile.headers["Cache-Control"] == webpage.IMMUTABLE and (await tile.read())[:2] == b"\xff\xd8"
    cells = np.load(small_bundle / bundle.REPORT_DIR / "map" / "cells.npy")
    seen = []
    for row in range(grid):
        for col in range(grid):
            answer = await (await client.get(tiles["cell_url"].replace("{col}", str(col))
                                             .replace("{row}", str(row)))).json()
            index = int(cells[row, col])
            assert answer == {"id": ids[index] if index >= 0 else None}
            if answer["id"] is not None:
                seen.append(answer["id"])
    assert sorted(seen) == sorted(ids)  # every photo, once
    hit = await (await client.get(f"/v1/similar/{seen[0]}", params={"k": "1"})).json()
    assert hit["image"]["caption"] == items[ids.index(seen[0])]["caption"]
    version = data["version"]
    for bad in (f"/map/{version}/tiles/{deepest + 1}/0/0.jpg", f"/map/{version}/tiles/0/1/0.jpg",
                f"/map/{version}/tiles/0/-1/0.jpg", f"/map/{version}/tiles/0/0/x.jpg",
                f"/map/{version}/cell/{grid}/0", f"/map/{version}/cell/0/99999999999",
                "/map/another-version/tiles/0/0/0.jpg", "/map/another-version/cell/0/0"):
        r = await client.get(bad)
        assert r.status == 404 and (await r.json())["error"] == "not_found", bad
    bad_cell = await client.get(f"/map/{version}/cell/{grid - 1}/{grid}")
    assert bad_cell.status == 404


async def test_a_bundle_without_tiles_maps_its_mosaic(aiohttp_client: Any, models: Path) -> None:
    version = publish_copy(models, bundle.active_path(models), edit=_without_tiles)
    small_bundle = models / version
    client = await aiohttp_client(create_app(make_settings(models)))
    r = await client.get("/map.json")
    assert r.status == 200
    data = await r.json()
    layout = json.loads((small_bundle / bundle.REPORT_DIR / "tsne_layout.json").read_text())
    items = json.loads((small_bundle / bundle.IMAGE_META).read_text())["items"]
    grid = layout["grid"]
    assert "tiles" not in data and data["grid"] == grid and len(data["cells"]) == grid * grid
    assert data["laid_out"] == len(layout["items"]) == sum(c is not None for c in data["cells"])
    assert data["sampled"] is False and data["images"] == len(items)
    assert "path" not in r.headers and "/" not in "".join(c for c in data["cells"] if c)  # ids, no paths
    for entry in layout["items"][:20]:
        image_id = data["cells"][entry["row"] * grid + entry["col"]]
        hit = await (await client.get(f"/v1/similar/{image_id}", params={"k": "1"})).json()
        assert hit["image"]["caption"] == items[entry["index"]]["caption"]
    sizes = [m["size"] for m in data["mosaics"]]
    assert sizes == sorted(sizes) and sizes
    for mosaic in data["mosaics"]:
        assert mosaic["url"].endswith(f"?v={data['version']}")
        png = await client.get(mosaic["url"])
        assert png.status == 200 and (await png.read())[:8] == b"\x89PNG\r\n\x1a\n"
    assert (await client.get(f"/map/{version}/tiles/0/0/0.jpg")).status == 404


async def test_map_json_without_a_layout_is_a_404(aiohttp_client: Any, models: Path) -> None:
    def drop_layout(staged: Path) -> None:
        (staged / bundle.REPORT_DIR / "tsne_layout.json").unlink()
        _without_tiles(staged)

    publish_copy(models, bundle.active_path(models), edit=drop_layout)
    client = await aiohttp_client(create_app(make_settings(models)))
    r = await client.get("/map.json")
    assert r.status == 404
    assert (await r.json())["error"] == "not_found"
    assert (await client.get("/")).status == 200


async def test_similar_by_id(client: TestClient, small_bundle: Path) -> None:
    items = json.loads((small_bundle / bundle.IMAGE_META).read_text())["items"]
    first = (await (await client.get("/v1/images", params={"q": "dog", "k": "1"})).json())["images"][0]
    r = await client.get(f"/v1/similar/{first['id']}", params={"k": "7"})
    assert r.status == 200
    body = await r.json()
    assert body["image"]["id"] == first["id"] and body["image"]["caption"] == first["caption"]
    assert "score" not in body["image"] and body["image"]["url"] == first["url"]
    ids = [h["id"] for h in body["images"]]
    assert len(ids) == 7 and first["id"] not in ids and len(set(ids)) == 7
    scores = [h["score"] for h in body["images"]]
    assert scores == sorted(scores, reverse=True)
    # The same neighbours as uploading that photo's file: the stored vector is the file's encoding.
    path = Path(items[public_ids(items).index(first["id"])]["path"])
    upload = await (await client.post("/v1/similar", params={"k": "8"}, data=path.read_bytes())).json()
    assert upload["images"][0]["id"] == first["id"]
    assert len(set(ids[:5]) & {h["id"] for h in upload["images"]}) >= 3
    again = await client.get(f"/v1/similar/{first['id']}", params={"k": "7"})
    assert await again.read() == await r.read()
    metrics = await (await client.get("/metrics")).text()
    assert 'engine_cache_hits_total{endpoint="similar_id"} 1.0' in metrics
    assert (await client.get("/v1/similar/no-such-photo")).status == 404
    bad = await client.get(f"/v1/similar/{first['id']}", params={"k": "0"})
    assert bad.status == 400 and (await bad.json())["error"] == "bad_parameter"


async def test_openapi_describes_similar_by_id(client: TestClient) -> None:
    spec = await (await client.get("/openapi.json")).json()
    assert "/v1/similar/{id}" in spec["paths"]
