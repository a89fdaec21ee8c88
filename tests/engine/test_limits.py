"""The engine's own limits, each reached by a request that only that limit stops.

Issue 19, item 5: the pixel guard was never exercised (Pillow's guard stopped every tested bomb first),
the path-traversal tests could not tell the router's 404 from the handler's and the client normalised
``..`` away before sending, symlinks in the report folder were untested, multipart fields other than
``image`` were drained without a cap, and compressed request bodies were untested.
"""

from __future__ import annotations

import asyncio
import gzip
import io
import json
import os
import zlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient
from PIL import Image
from yarl import URL

from engine.app import create_app
from engine.public import public
from space import bundle, images
from space.errors import ImageTooLarge
from tests.engine.helpers import make_settings, png_bytes
from tests.engine.test_uploads import png_header

LIMIT = 150_000
HANDLER_404 = "No report file"  # the report handler's refusal; the router's 404 says "Not Found"


@pytest.fixture
async def client(aiohttp_client: Any, models: Path) -> TestClient:
    return await aiohttp_client(create_app(make_settings(models, max_upload_bytes=LIMIT)))


# ---- the 50-megapixel guard --------------------------------------------------------------------------

def test_pillow_lets_8000x8000_through_and_only_the_projects_guard_stops_it() -> None:
    side = 8000
    assert side * side < Image.MAX_IMAGE_PIXELS  # Pillow's own bomb guard would not fire
    assert side * side > images.DEFAULT_MAX_PIXELS
    with pytest.raises(ImageTooLarge, match=r"8000×8000 pixels; at most 50,000,000"):
        images.open_image(png_header(side, side))


async def test_the_pixel_guard_answers_413_over_http(client: TestClient) -> None:
    for endpoint in ("/v1/hashtags", "/v1/similar"):
        r = await client.post(endpoint, data=png_header(8000, 8000),
                              headers={"Content-Type": "application/octet-stream"})
        body = await r.json()
        assert (r.status, body["error"]) == (413, "image_too_large"), body
        assert "at most 50,000,000 pixels" in body["message"]  # the project's check, not Pillow's


# ---- report files: traversal, odd names, symlinks ---------------------------------------------------

def _report(models: Path) -> Path:
    return bundle.active_path(models) / bundle.REPORT_DIR


async def _raw_get(client: TestClient, raw_path: str) -> tuple[int, dict[str, Any]]:
    """GET a path exactly as written: no normalisation of ``..`` or percent-escapes by the client."""
    url = URL(str(client.make_url("")).rstrip("/") + raw_path, encoded=True)
    assert url.raw_path == raw_path
    async with client.session.get(url) as r:
        return r.status, await r.json()


@pytest.mark.parametrize("raw", [
    "/v1/report/../../etc/passwd",
    "/v1/report/../manifest.json",
    "/v1/report/..%2Fmanifest.json",
    "/v1/report/..%2F..%2F..%2Fetc%2Fpasswd",
    "/v1/report/%2Fetc%2Fpasswd",
    "/v1/report/stats.json%00.png",
    "/v1/report/" + "a" * 300,
    "/v1/report/./stats.json",
    "/v1/report/..\\manifest.json",
])
async def test_report_names_that_leave_the_folder_are_refused_by_the_handler(
    client: TestClient, raw: str
) -> None:
    status, body = await _raw_get(client, raw)
    if status == 404 and body["message"] == "Not Found":
        pytest.fail(f"{raw}: answered by the router, so the handler's check was never reached")
    assert (status, body["error"]) == (404, "not_found"), (raw, body)
    assert body["message"].startswith(HANDLER_404), (raw, body)


async def test_report_symlinks_inside_are_served_outside_refused(client: TestClient, models: Path,
                                                                 tmp_path: Path) -> None:
    report = _report(models)
    secret = tmp_path / "secret.txt"
    secret.write_text("not for clients")
    os.symlink(secret, report / "outside.txt")
    os.symlink(report.parent / bundle.MANIFEST, report / "manifest.json")  # the bundle, not the report
    os.symlink("stats.json", report / "alias.json")
    os.symlink("loop-b", report / "loop-a")
    os.symlink("loop-a", report / "loop-b")
    (report / "sub").mkdir()
    for name in ("outside.txt", "manifest.json", "loop-a", "sub", "missing.json"):
        r = await client.get(f"/v1/report/{name}")
        body = await r.json()
        assert (r.status, body["message"].startswith(HANDLER_404)) == (404, True), (name, body)
    r = await client.get("/v1/report/alias.json")
    # stats.json as the public sees it (its ingest examples name server paths: engine/public.py).
    assert r.status == 200
    assert json.loads(await r.read()) == public(json.loads((report / "stats.json").read_bytes()))


# ---- uploads: multipart fields, compressed bodies ------------------------------------------------------

async def test_fields_other_than_image_are_capped_not_drained(client: TestClient) -> None:
    form = aiohttp.FormData()
    form.add_field("junk", b"\0" * (3 * LIMIT), filename="junk.bin", content_type="application/octet-stream")
    form.add_field("image", png_bytes(), filename="x.png", content_type="image/png")
    r = await client.post("/v1/hashtags", data=form)
    assert (r.status, (await r.json())["error"]) == (413, "image_too_large")
    small = aiohttp.FormData()
    small.add_field("note", "hello")
    small.add_field("image", png_bytes(), filename="x.png", content_type="image/png")
    assert (await client.post("/v1/hashtags", data=small)).status == 200  # small fields are fine


async def test_a_chunked_multipart_body_stops_at_the_cap(client: TestClient) -> None:
    """No Content-Length: the engine stops reading once the body is over the cap, not at its end."""
    boundary = "xyz"
    sent = 0
    total = 200 * LIMIT  # 30 MB, if it were all read

    async def body() -> AsyncIterator[bytes]:
        nonlocal sent
        head = f'--{boundary}\r\nContent-Disposition: form-data; name="junk"\r\n\r\n'.encode()
        yield head
        chunk = b"\0" * (1 << 16)
        while sent < total:
            sent += len(chunk)
            yield chunk
            await asyncio.sleep(0)

    headers = {"Content-Type": f"multipart/form-data; boundary={boundary}"}
    try:
        r = await client.post("/v1/hashtags", data=body(), headers=headers)
        assert (r.status, (await r.json())["error"]) == (413, "image_too_large")
    except aiohttp.ClientError:
        pass  # the engine answered and closed while the client was still sending: also a refusal
    assert sent < total / 2, f"the engine read {sent:,} of {total:,} bytes"
    assert (await client.get("/v1/stats")).status == 200


def _gzip_bomb(size: int) -> bytes:
    out = io.BytesIO()
    with gzip.GzipFile(fileobj=out, mode="wb", compresslevel=9) as f:
        block = b"\0" * (1 << 20)
        for _ in range(size // len(block)):
            f.write(block)
    return out.getvalue()


@pytest.fixture(scope="module")
def bomb() -> bytes:
    """~130 KB that inflates to 128 MB."""
    return _gzip_bomb(128 << 20)


async def test_gzip_bomb_bodies_are_refused(client: TestClient, bomb: bytes) -> None:
    assert len(bomb) < LIMIT  # small enough on the wire: only the inflated size can stop it
    raw = {"Content-Encoding": "gzip", "Content-Type": "application/octet-stream"}
    r = await client.post("/v1/hashtags", data=bomb, headers=raw)
    assert r.status == 413 and (await r.json())["error"] in {"image_too_large", "payload_too_large"}
    boundary = "b0mb"
    inner = (f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="x.png"\r\n\r\n'
             .encode() + b"\0" * (4 * LIMIT) + f"\r\n--{boundary}--\r\n".encode())
    multi = {"Content-Encoding": "deflate", "Content-Type": f"multipart/form-data; boundary={boundary}"}
    r = await client.post("/v1/similar", data=zlib.compress(inner, 9), headers=multi)
    assert r.status == 413 and (await r.json())["error"] == "image_too_large"
    assert (await client.post("/v1/hashtags", data=png_bytes())).status == 200  # still serving
