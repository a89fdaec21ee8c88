"""A corpus of hostile and odd files, each POSTed to the real engine's photo endpoints: never a 5xx.

Every file is generated here (nothing committed). Each answer is a 200 with well-formed results or a
4xx with the JSON ``{"error", "message"}`` body; after the corpus the engine still answers a real photo,
and the process's resident memory grows by less than :data:`RSS_GROWTH_LIMIT_MB` across it.
"""

from __future__ import annotations

import io
import json
import struct
import zipfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import pytest
from PIL import Image

from engine.app import create_app
from space import bundle
from tests.engine.helpers import make_settings

K = 5
# Measured growth across the whole corpus was ~0-30 MB (ONNX Runtime arenas, Pillow); a leak of the
# decoded 12000×12000 or bomb buffers would show as hundreds of MB.
RSS_GROWTH_LIMIT_MB = 300.0
OK = frozenset({200})
BAD = frozenset({400})
TOO_LARGE = frozenset({413})
ANY_4XX_OR_OK = frozenset({200, *range(400, 500)})


@dataclass(frozen=True)
class Case:
    """One hostile file: its bytes, the name it is uploaded under, and the statuses it may get."""

    name: str
    data: bytes
    filename: str
    allowed: frozenset[int]


def _save(img: Image.Image, fmt: str, **kw: Any) -> bytes:
    out = io.BytesIO()
    img.save(out, format=fmt, **kw)
    return out.getvalue()


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _png_claiming(width: int, height: int) -> bytes:
    """A 100-byte PNG whose header claims ``width``×``height`` (a decompression bomb's shape)."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", zlib.compress(b"\0" * 64))
            + _chunk(b"IEND", b""))


def _bit_flipped(photo: bytes) -> bytes:
    """``photo`` with 64 bytes in its middle third inverted (entropy-coded data, past the headers)."""
    data = bytearray(photo)
    rng = np.random.default_rng(8)
    for i in rng.integers(len(data) // 3, 2 * len(data) // 3, size=64):
        data[int(i)] ^= 0xFF
    return bytes(data)


def _exif_rotated() -> bytes:
    img = Image.new("RGB", (96, 48), (20, 120, 220))
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: rotate 90° clockwise to display
    return _save(img, "JPEG", exif=exif.tobytes())


def _gradient(size: tuple[int, int], mode: str = "RGB") -> Image.Image:
    w, h = size
    x = np.linspace(0, 255, w, dtype=np.float32)[None, :]
    y = np.linspace(0, 255, h, dtype=np.float32)[:, None]
    rgb = np.stack([x + 0 * y, y + 0 * x, (x + y) / 2], axis=-1).astype(np.uint8)
    return Image.fromarray(rgb).convert(mode)


def _zip_bytes() -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as z:
        z.writestr("photo.jpg", b"not really " * 100)
    return out.getvalue()


def _corpus(photo: bytes) -> list[Case]:
    """Every hostile or odd file, built in memory (the 12000×12000 JPEG is grey at quality 5: fast)."""
    rgba = _gradient((80, 60), "RGBA")
    rgba.putalpha(Image.new("L", rgba.size, 90))
    frames = [_gradient((40, 40)).rotate(a) for a in (0, 90, 180)]
    sixteen = Image.fromarray(np.arange(64 * 48, dtype=np.uint16).reshape(48, 64) * 20)
    cases = [
        Case("empty", b"", "empty.jpg", BAD),
        Case("text as jpg", b"just some text, not a picture\n" * 40, "notes.jpg", BAD),
        Case("zip as jpg", _zip_bytes(), "archive.jpg", BAD),
        Case("truncated jpeg", photo[: len(photo) // 2], "half.jpg", BAD),
        Case("bit-flipped jpeg", _bit_flipped(photo), "flipped.jpg", OK | BAD),
        Case("png claiming 40000x40000", _png_claiming(40000, 40000), "bomb.png", TOO_LARGE),
        Case("png 200000x1", _save(Image.new("RGB", (200000, 1)), "PNG"), "line.png", TOO_LARGE),
        Case("jpeg 12000x12000", _save(Image.new("L", (12000, 12000), 128), "JPEG", quality=5),
             "huge.jpg", TOO_LARGE),
        Case("cmyk jpeg", _save(_gradient((80, 60), "CMYK"), "JPEG"), "cmyk.jpg", OK),
        Case("16-bit png", _save(sixteen, "PNG"), "deep.png", OK),
        Case("rgba png", _save(rgba, "PNG"), "alpha.png", OK),
        Case("palette gif", _save(_gradient((80, 60)).convert("P"), "GIF"), "palette.gif", OK),
        Case("animated gif", _save(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=50),
             "anim.gif", OK),
        Case("webp", _save(_gradient((80, 60)), "WEBP"), "x.webp", OK),
        Case("tiff", _save(_gradient((80, 60)), "TIFF"), "x.tiff", OK),
        Case("bmp", _save(_gradient((80, 60)), "BMP"), "x.bmp", OK),
        Case("exif-rotated jpeg", _exif_rotated(), "rotated.jpg", OK),
        Case("1x1", _save(Image.new("RGB", (1, 1), (255, 0, 0)), "PNG"), "dot.png", OK),
        Case("4000x30 panorama", _save(_gradient((4000, 30)), "JPEG", quality=60), "pano.jpg", OK),
        Case("svg text", b'<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10">'
             b'<rect width="10" height="10"/></svg>', "vector.jpg", BAD),
    ]
    assert Image.open(io.BytesIO(cases[9].data)).mode.startswith("I;16")  # really 16-bit on disk
    return cases


def _rss_mb() -> float:
    """This process's resident set (VmRSS) in MB, from /proc (no psutil)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS in /proc/self/status")


def _well_formed(endpoint: str, body: dict[str, Any]) -> bool:
    if endpoint == "/v1/hashtags":
        tags = body["hashtags"]
        return len(tags) == K and all(isinstance(t["word"], str) and -1 <= t["score"] <= 1 for t in tags)
    hits = body["images"]
    return len(hits) == K and all(h["id"] and h["url"] and -1 <= h["score"] <= 1 for h in hits)


@pytest.fixture(scope="module")
def photo(small_bundle: Path) -> bytes:
    items = json.loads((small_bundle / bundle.IMAGE_META).read_text())["items"]
    return Path(items[2]["path"]).read_bytes()


@pytest.fixture(scope="module")
def corpus(photo: bytes) -> list[Case]:
    return _corpus(photo)


@pytest.mark.parametrize("endpoint", ["/v1/hashtags", "/v1/similar"])
async def test_hostile_corpus_never_5xx(
    endpoint: str, corpus: list[Case], photo: bytes, aiohttp_client: Callable[..., Any],
    small_bundle_models: Path,
) -> None:
    client = await aiohttp_client(create_app(make_settings(small_bundle_models)))

    async def post(data: bytes, filename: str) -> tuple[int, dict[str, Any]]:
        form = aiohttp.FormData()
        form.add_field("image", data, filename=filename, content_type="image/jpeg")
        r = await client.post(endpoint, params={"k": str(K)}, data=form)
        return r.status, await r.json(content_type=None)

    status, body = await post(photo, "warm.jpg")  # ONNX Runtime's arenas exist before we measure
    assert status == 200 and _well_formed(endpoint, body)
    before = _rss_mb()
    wrong = []
    for case in corpus:
        status, body = await post(case.data, case.filename)
        if status == 200:
            good = _well_formed(endpoint, body)
        else:
            good = set(body) == {"error", "message"} and bool(body["message"]) and 400 <= status < 500
        if not good or status not in case.allowed:
            wrong.append((case.name, status, body))
    growth = _rss_mb() - before
    print(f"{endpoint}: RSS {before:.0f} MB -> {before + growth:.0f} MB (+{growth:.1f} MB) over "
          f"{len(corpus)} hostile files")
    assert wrong == []
    assert growth < RSS_GROWTH_LIMIT_MB
    status, body = await post(photo, "again.jpg")  # still serving, same answer as before the corpus
    assert status == 200 and _well_formed(endpoint, body)
    health = await (await client.get("/healthz")).json()
    assert health["status"] == "ok"


MALFORMED: dict[str, tuple[dict[str, str], bytes]] = {
    "multipart without boundary": ({"Content-Type": "multipart/form-data"}, b"abc"),
    "multipart body missing its boundary": (
        {"Content-Type": "multipart/form-data; boundary=XYZ"}, b"no boundary anywhere in here"),
    "multipart part cut short": (
        {"Content-Type": "multipart/form-data; boundary=XYZ"},
        b'--XYZ\r\nContent-Disposition: form-data; name="image"\r\n\r\nabc'),
    "multipart without parts": ({"Content-Type": "multipart/form-data; boundary=XYZ"}, b"--XYZ--\r\n"),
    "multipart declared gzip, not gzip": (
        {"Content-Type": "multipart/form-data; boundary=XYZ", "Content-Encoding": "gzip"}, b"notgzip"),
    "raw body declared gzip, not gzip": (
        {"Content-Type": "application/octet-stream", "Content-Encoding": "gzip"}, b"notgzip"),
}


async def test_malformed_upload_bodies_are_4xx(
    aiohttp_client: Callable[..., Any], small_bundle_models: Path, photo: bytes
) -> None:
    """Broken multipart framing or Content-Encoding is the client's fault: 400 JSON, not 500."""
    client = await aiohttp_client(create_app(make_settings(small_bundle_models)))
    wrong = []
    for name, (headers, data) in MALFORMED.items():
        try:  # a fresh connection each: aiohttp drops one whose body failed to decode
            r = await client.post("/v1/hashtags", data=data, headers={**headers, "Connection": "close"})
            body = await r.json(content_type=None)
        except aiohttp.ClientError as exc:
            wrong.append((name, 0, repr(exc)))
            continue
        if r.status != 400 or body.get("error") != "bad_image" or not body.get("message"):
            wrong.append((name, r.status, body))
    assert wrong == []
    assert (await client.post("/v1/hashtags", data=photo)).status == 200
