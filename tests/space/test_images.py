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


def test_the_whole_framing_keeps_the_edges_the_centre_crop_cuts(photo: Path) -> None:
    """A wide photo with a red band at its left edge: the whole-photo view (all of it scaled to 224 × 224)
    still shows the band; the centre crop of the short-side-256 photo has lost it. One whole view is the
    serving view of a whole-framed bundle, two add its mirror, ten are refused."""
    img = Image.open(photo).convert("RGB").resize((400, 250))
    img.paste((255, 0, 0), (0, 0, 40, 250))
    whole, centre = preprocess(img, "whole"), preprocess(img, "centre")
    assert whole.shape == centre.shape == (3, 224, 224)
    red = MEAN_BGR.copy()
    red[:] = [0.0, 0.0, 255.0]
    red -= MEAN_BGR  # the band's pixel in network layout (BGR, mean subtracted)
    np.testing.assert_allclose(whole[:, 112, 5], red, atol=1.0)
    assert np.abs(centre[:, 112, 5] - red).max() > 50
    one, two = network_views(img, 1, "whole"), network_views(img, 2, "whole")
    np.testing.assert_array_equal(one[0], whole)
    np.testing.assert_array_equal(two[1], whole[:, :, ::-1])
    for crops, framing in ((10, "whole"), (1, "square")):
        with pytest.raises(ValueError):
            network_views(img, crops, framing)


# ---- issue 28: memory bounded before decoding -------------------------------------------------------

_PEAK = r'''
import sys
from pathlib import Path
from space.images import load_for_network

def kb(field):
    for line in open("/proc/self/status"):
        if line.startswith(field + ":"):
            return int(line.split()[1])

data = Path(sys.argv[1]).read_bytes()
base = kb("VmRSS")
Path("/proc/self/clear_refs").write_text("5")
try:
    load_for_network(data)
    answer = "ok"
except Exception as exc:
    answer = type(exc).__name__
print(answer, (kb("VmHWM") - base) / 1024)
'''


def _peak_mb(tmp_path: Path, data: bytes) -> tuple[str, float]:
    """(outcome, peak RSS over the process's steady RSS in MB) of decoding ``data`` in a fresh process."""
    import subprocess
    import sys

    from tests.conftest import ROOT

    path = tmp_path / "upload.bin"
    path.write_bytes(data)
    out = subprocess.run([sys.executable, "-c", _PEAK, str(path)], capture_output=True, text=True, check=True,
                         cwd=ROOT)
    answer, peak = out.stdout.split()
    return answer, float(peak)


def _gray16(side: int) -> bytes:
    ramp = np.linspace(0, 65535, side, dtype=np.float32)
    return _encode(Image.fromarray((ramp[None, :] * ramp[:, None] / 65535).astype(np.uint16)), "PNG")


def test_small_files_that_decode_huge_are_refused_before_decoding() -> None:
    """Issue 28: a 200 KB RGBA PNG of 7000 × 7000 took ~1.1 GB to decode and convert."""
    for img, fmt, kw in ((Image.new("RGBA", (7000, 7000), (1, 2, 3, 4)), "PNG", {}),
                         (Image.new("RGB", (5100, 5100), (1, 2, 3)), "PNG", {}),
                         (Image.new("RGB", (2600, 2600), (1, 2, 3)), "WEBP", {"lossless": True})):
        data = _encode(img, fmt, **kw)
        assert len(data) < 1_000_000
        with pytest.raises(ImageTooLarge, match="decoding it would take"):
            open_image(data)


def test_a_progressive_jpeg_counts_its_full_size_coefficients() -> None:
    ramp = np.linspace(0, 255, 6000, dtype=np.float32)[None, :, None]
    img = Image.fromarray((ramp * np.ones((6000, 1, 3))).astype(np.uint8))
    assert open_image(_encode(img, "JPEG", quality=30)).size[0] < 6000  # baseline: drafted, accepted
    with pytest.raises(ImageTooLarge, match="6000×6000"):
        open_image(_encode(img, "JPEG", quality=30, progressive=True))


def test_formats_no_user_sends_are_not_opened() -> None:
    for fmt in ("EPS", "PCX", "TGA", "ICO"):
        with pytest.raises(BadImage):
            open_image(_encode(Image.new("RGB", (64, 64), (1, 2, 3)), fmt))


def test_the_largest_accepted_images_stay_within_150_mb(tmp_path: Path) -> None:
    """The decode budget holds for what it lets through (a fresh process's peak RSS, measured)."""
    for data in (_gray16(7000), _encode(Image.new("RGBA", (3500, 3500), (1, 2, 3, 4)), "PNG"),
                 _encode(Image.new("1", (7000, 7000), 1), "PNG")):
        answer, peak = _peak_mb(tmp_path, data)
        assert answer == "ok" and peak < 150, (answer, peak)


def test_big_images_are_shrunk_but_look_the_same() -> None:
    """The box reduction after decoding changes the network input by little (vs a full-size decode)."""
    rng = np.random.default_rng(0)
    small = Image.fromarray(rng.integers(0, 256, (60, 80, 3), dtype=np.uint8)).resize((2400, 1800))
    for img in (small, small.convert("RGBA"), small.convert("L"), small.convert("P")):
        data = _encode(img, "PNG")
        reduced = open_image(data)
        full = open_image(data, draft=None)
        assert min(reduced.size) >= 2 * 256 and reduced.size[0] < full.size[0]
        diff = np.abs(preprocess(reduced) - preprocess(full))
        assert float(diff.mean()) < 3.0, (img.mode, float(diff.mean()))
