"""The shared image loader on real photos and on hostile or odd files."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from space.errors import BadImage, ImageTooLarge
from space.images import MEAN_BGR, load_for_network, network_views, open_image, preprocess, thumbnail_jpeg


@pytest.fixture(scope="module")
def photo(flickr8k_dir: Path) -> Path:
    return sorted((flickr8k_dir / "images").glob("*.jpg"))[0]


def _encode(img: Image.Image, fmt: str, **kw: object) -> bytes:
    out = io.BytesIO()
    img.save(out, format=fmt, **kw)
    return out.getvalue()


def test_real_photo_network_layout(photo: Path) -> None:
    arr = load_for_network(photo)
    assert arr.shape == (3, 224, 224) and arr.dtype == np.float32
    img = open_image(photo)
    assert img.size == (224, 224)  # Flickr8k as shipped: short side 256, centre crop = a scaled view
    rgb = np.asarray(img.resize((256, 256), Image.Resampling.BILINEAR), dtype=np.float32)[16:240, 16:240]
    # BGR order, Caffe mean subtracted
    for channel, rgb_index in ((0, 2), (1, 1), (2, 0)):
        assert np.allclose(arr[channel], rgb[:, :, rgb_index] - MEAN_BGR[channel], atol=1.0)


def test_same_input_from_bytes_and_path(photo: Path) -> None:
    assert np.array_equal(load_for_network(photo.read_bytes()), load_for_network(photo))


@pytest.mark.parametrize("mode", ["L", "P", "RGBA", "CMYK", "I;16", "LA", "1"])
def test_modes_become_rgb(photo: Path, mode: str) -> None:
    base = open_image(photo)
    if mode == "I;16":
        img = Image.fromarray(np.asarray(base.convert("L"), dtype=np.uint16) * 257)
        data = _encode(img, "PNG")
    else:
        img = base.convert(mode)
        data = _encode(img, "TIFF" if mode == "CMYK" else "PNG")
    out = open_image(data)
    assert out.mode == "RGB" and out.size == base.size
    assert preprocess(out).shape == (3, 224, 224)


def test_exif_rotation_applied(photo: Path) -> None:
    img = open_image(photo).resize((300, 200))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise on display
    out = open_image(_encode(img, "JPEG", exif=exif))
    assert out.size == (200, 300)


def test_animated_gif_first_frame() -> None:
    frames = [Image.new("RGB", (64, 64), c) for c in ((255, 0, 0), (0, 0, 255))]
    buf = io.BytesIO()
    frames[0].save(buf, format="GIF", save_all=True, append_images=frames[1:])
    out = open_image(buf.getvalue())
    r, _g, b = out.getpixel((10, 10))  # type: ignore[misc]
    assert r > 200 and b < 50


def test_alpha_composited_on_white() -> None:
    img = Image.new("RGBA", (32, 32), (0, 0, 0, 0))
    assert open_image(_encode(img, "PNG")).getpixel((0, 0)) == (255, 255, 255)


@pytest.mark.parametrize(
    "data",
    [b"", b"hello, I am text", b"PK\x03\x04" + b"\0" * 100],
    ids=["empty", "text", "zip"],
)
def test_not_images_rejected(data: bytes) -> None:
    with pytest.raises(BadImage):
        open_image(data)


def test_truncated_jpeg_rejected(photo: Path) -> None:
    data = photo.read_bytes()
    with pytest.raises(BadImage):
        open_image(data[: len(data) // 2])


def _png_header_claiming(width: int, height: int) -> bytes:
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    chunk = b"IHDR" + ihdr
    idat = b"IDAT" + zlib.compress(b"\0" * 64)
    return (
        b"\x89PNG\r\n\x1a\n"
        + struct.pack(">I", len(ihdr)) + chunk + struct.pack(">I", zlib.crc32(chunk))
        + struct.pack(">I", len(idat) - 4) + idat + struct.pack(">I", zlib.crc32(idat))
    )


def test_decompression_bomb_header_refused_before_decoding() -> None:
    with pytest.raises(ImageTooLarge):
        open_image(_png_header_claiming(40000, 40000))


def test_oversize_bytes_refused(photo: Path) -> None:
    with pytest.raises(ImageTooLarge):
        open_image(photo.read_bytes(), max_bytes=1000)


def test_huge_jpeg_decoded_small_via_draft() -> None:
    big = Image.new("RGB", (6000, 4000), (10, 200, 30))
    out = open_image(_encode(big, "JPEG", quality=50))
    assert min(out.size) >= 256 and max(out.size) < 6000


def test_thumbnail_bounded(photo: Path) -> None:
    thumb = Image.open(io.BytesIO(thumbnail_jpeg(photo, 64)))
    assert max(thumb.size) <= 64 and thumb.format == "JPEG"


def test_network_views_centre_mirrors_and_corners(photo: Path) -> None:
    img = Image.open(photo).convert("RGB").resize((300, 256))  # wider than tall: corners differ from centre
    one, two, ten = (network_views(img, n) for n in (1, 2, 10))
    assert one.shape == (1, 3, 224, 224) and two.shape == (2, 3, 224, 224) and ten.shape == (10, 3, 224, 224)
    np.testing.assert_array_equal(one[0], preprocess(img))  # one view is the serving view
    np.testing.assert_array_equal(two[1], one[0][:, :, ::-1])  # its mirror
    np.testing.assert_array_equal(ten[:2], two)
    np.testing.assert_array_equal(ten[3], ten[2][:, :, ::-1])
    assert not np.array_equal(ten[2], ten[0]) and not np.array_equal(ten[2], ten[4])  # left vs right corner
    with pytest.raises(ValueError):
        network_views(img, 5)
