"""Bad uploads to the photo endpoints answer 4xx with the JSON error body, never 5xx."""

from __future__ import annotations

import asyncio
import json
import struct
import zlib
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient

from engine.app import create_app
from space import bundle
from tests.engine.helpers import make_settings, png_bytes

LIMIT = 150_000


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_header(width: int, height: int) -> bytes:
    """A tiny well-framed PNG whose IHDR claims ``width``×``height`` (a decompression bomb's shape)."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\0" * 1000)
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", idat) + _chunk(b"IEND", b"")


@pytest.fixture
def photo(small_bundle: Path) -> bytes:
    items = json.loads((small_bundle / bundle.IMAGE_META).read_text())["items"]
    return Path(items[1]["path"]).read_bytes()


@pytest.fixture
async def client(aiohttp_client: Any, small_bundle_models: Path) -> TestClient:
    return await aiohttp_client(create_app(make_settings(small_bundle_models, max_upload_bytes=LIMIT)))


async def test_bad_uploads(client: TestClient, photo: bytes) -> None:
    assert len(photo) > 2000
    cases: dict[str, tuple[bytes, int, set[str]]] = {
        "empty": (b"", 400, {"bad_image"}),
        "text": (b"hello, this is not an image at all\n" * 20, 400, {"bad_image"}),
        "truncated jpeg": (photo[: len(photo) // 2], 400, {"bad_image"}),
        "oversize": (photo + b"\0" * LIMIT, 413, {"image_too_large", "payload_too_large"}),
        "just over": (b"\xff\xd8\xff" + b"\0" * (LIMIT + 10), 413, {"image_too_large"}),
        "png bomb header": (png_header(40000, 40000), 413, {"image_too_large"}),
        "png no data": (png_header(64, 64), 400, {"bad_image"}),
    }
    for endpoint in ("/v1/hashtags", "/v1/similar"):
        for name, (data, status, codes) in cases.items():
            r = await client.post(endpoint, data=data, headers={"Content-Type": "application/octet-stream"})
            body = await r.json()
            assert (r.status, body["error"] in codes) == (status, True), (endpoint, name, body)
            assert body["message"]
    # the service is still fine afterwards
    r = await client.post("/v1/hashtags", data=photo)
    assert r.status == 200


async def test_multipart_without_image_field(client: TestClient) -> None:
    form = aiohttp.FormData()
    form.add_field("file", png_bytes(), filename="x.png", content_type="image/png")
    r = await client.post("/v1/hashtags", data=form)
    assert r.status == 400 and (await r.json())["error"] == "bad_image"


async def test_identical_concurrent_photos_run_once(client: TestClient, photo: bytes) -> None:
    rs = await asyncio.gather(*(client.post("/v1/hashtags", params={"k": "4"}, data=photo) for _ in range(8)))
    bodies = [await r.json() for r in rs]
    assert all(r.status == 200 for r in rs) and all(b == bodies[0] for b in bodies)
    text = await (await client.get("/metrics")).text()
    misses = 'engine_cache_misses_total{endpoint="hashtags"} '
    coalesced = 'engine_cache_coalesced_total{endpoint="hashtags"} '
    values = {line.rsplit(" ", 1)[0] + " ": float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
              if line.startswith(("engine_cache_misses_total", "engine_cache_coalesced_total",
                                  "engine_cache_hits_total"))}
    hits = values.get('engine_cache_hits_total{endpoint="hashtags"} ', 0.0)
    # one computation: every other request joined it or (if it came later) hit the cache
    assert values[misses] - values.get(coalesced, 0.0) == 1 and values[misses] + hits == 8


async def test_small_png_is_fine_and_cached(client: TestClient) -> None:
    data = png_bytes()
    a = await client.post("/v1/similar", params={"k": "3"}, data=data)
    b = await client.post("/v1/similar", params={"k": "3"}, data=data)
    assert a.status == b.status == 200
    assert await a.json() == await b.json()
    text = await (await client.get("/metrics")).text()
    assert 'engine_cache_hits_total{endpoint="similar"} 1.0' in text
