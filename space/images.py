"""The one image loader for training, encoding and serving.

Decodes untrusted bytes safely (size and pixel limits, decompression-bomb guard kept on, first frame of
animations, EXIF orientation), converts every mode to RGB, and prepares the network input the BVLC
GoogLeNet expects: the photo framed to 224 × 224 (:data:`FRAMINGS`), BGR order, per-channel mean subtracted.

Memory is bounded before any pixel is decoded. A 111 KB PNG can name 7000 × 7000 16-bit pixels, and its
decode plus the conversions after it took ~1 GB; so each image's decode cost is estimated from its header
(pixels × bytes per pixel in Pillow's layout, the coefficient buffer of a progressive JPEG, libwebp's own
copy) and an image over :data:`DEFAULT_MAX_DECODE_BYTES` is refused as too large. JPEGs decode reduced
(``draft``); any other image is shrunk by a cheap box reduction right after decoding, to at most four times
the size its use needs, so the conversions to RGB work on a small image. Only common photo formats are
opened at all (:data:`FORMATS`): Pillow's others (EPS, which runs Ghostscript, PSD, FITS…) are no photo a
user sends.
"""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

from space.errors import BadImage, ImageTooLarge

RESIZE = 256
CROP = 224
# Caffe's ImageNet mean, in BGR order (the weights' README).
MEAN_BGR = np.array([104.0, 117.0, 123.0], dtype=np.float32)
DEFAULT_MAX_PIXELS = 50_000_000  # about 7000 x 7000: well above any photo, far below a bomb
DEFAULT_MAX_BYTES = 10 * 1024 * 1024
# What one decode may allocate: a 24-megapixel RGB PNG (Pillow keeps RGB as 4 bytes a pixel), a 48-megapixel
# grayscale one, any JPEG up to the pixel limit (decoded reduced). scripts/bench_upload_memory.py measures
# the whole request's peak against it (docs/reliability.md).
DEFAULT_MAX_DECODE_BYTES = 96 * 1024 * 1024
FORMATS = ("JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF")  # a JPEG opener also opens MPO (phones' 3D/bursts)

# Truncated files must fail loudly, never decode half an image silently.
ImageFile.LOAD_TRUNCATED_IMAGES = False


def _check_pixels(img: Image.Image, max_pixels: int) -> None:
    w, h = img.size
    if w <= 0 or h <= 0:
        raise BadImage("The image has no pixels.")
    if w * h > max_pixels:
        raise ImageTooLarge(f"The image is {w}×{h} pixels; at most {max_pixels:,} pixels are accepted.")
    # Scaling the short side up to RESIZE multiplies the pixels: a 664-byte 200000×1 PNG would need ~39 GB.
    if max(w, h) * RESIZE * RESIZE > max_pixels * min(w, h):
        raise ImageTooLarge(f"The image is {w}×{h} pixels: too elongated to scale to {RESIZE} pixels safely.")


def _pixel_bytes(mode: str) -> int:
    """Bytes Pillow stores per pixel of ``mode`` (every multi-band mode takes four)."""
    if mode in ("1", "L", "P"):
        return 1
    if mode.startswith("I;16"):
        return 2
    return 4


def decode_cost(img: Image.Image) -> int:
    """The bytes decoding ``img`` (opened, drafted, not loaded) will allocate, from its header alone."""
    w, h = img.size
    cost = w * h * _pixel_bytes(img.mode)
    if img.mode in ("LA", "RGBA", "PA"):
        cost *= 2  # reducing an image with alpha premultiplies it first: a second full-size copy
    if img.format == "WEBP":
        cost *= 4  # libwebp's canvas, the frame's bytes, the image made from them (measured: ~4x the pixels)
    if any(tile[0] == "bmp_rle" for tile in getattr(img, "tile", ())):
        cost *= 3  # Pillow's run-length BMP decoder is Python: it gathers the pixels in bytes, then copies
    if img.format in ("JPEG", "MPO") and (img.info.get("progressive") or img.info.get("progression")):
        # A progressive JPEG keeps every DCT coefficient (2 bytes) of the full-size image, drafted or not:
        # all of the luma's, and of each chroma component its sampled share.
        full_w, full_h = getattr(img, "_size_before_draft", img.size)
        layers = getattr(img, "layer", None) or [("", 1, 1, 0)] * len(img.getbands())
        h_max = max(int(layer[1]) for layer in layers) or 1
        v_max = max(int(layer[2]) for layer in layers) or 1
        cost += sum(-(-full_w * int(layer[1]) // h_max) * -(-full_h * int(layer[2]) // v_max) * 2
                    for layer in layers)
    return cost


def _check_cost(img: Image.Image, max_decode_bytes: int) -> None:
    cost = decode_cost(img)
    if cost > max_decode_bytes:
        w, h = getattr(img, "_size_before_draft", img.size)
        raise ImageTooLarge(
            f"The image is {w}×{h} pixels of mode {img.mode} ({img.format}): decoding it would take "
            f"{cost / 2**20:,.0f} MB, at most {max_decode_bytes / 2**20:,.0f} MB are allowed. Send a smaller "
            f"image (a baseline JPEG of any size up to the pixel limit decodes reduced).")


def _shrink(img: Image.Image, keep: int) -> Image.Image:
    """``img`` reduced by a whole factor to a short side of at least ``2 * keep`` (unchanged when close).

    Box reduction costs one pass and only the output's memory, so the conversions after it (16-bit
    scaling, alpha over white) touch a small image; the resize to the network's size stays the usual one.
    """
    w, h = img.size
    factor = min(w, h) // (2 * keep)
    if factor < 2:
        return img
    if img.mode.startswith("I;16"):
        return img.resize((-(-w // factor), -(-h // factor)), Image.Resampling.BOX)
    if img.mode in ("1", "P"):
        # Pillow's reduce() refuses these modes, and averaging palette indices means nothing: pick pixels
        # (nearest) down to four times the final factor's size, then average colours from there.
        coarse = factor // 4
        if coarse >= 2:
            img = img.resize((-(-w // coarse), -(-h // coarse)), Image.Resampling.NEAREST)
        img = img.convert("L" if img.mode == "1" else "RGBA" if "transparency" in img.info else "RGB")
        return _shrink(img, keep)
    return img.reduce(factor)


def _to_rgb(img: Image.Image) -> Image.Image:
    """Convert any Pillow mode (palette, alpha, CMYK, 16-bit, float, 1-bit) to 8-bit RGB on white."""
    if img.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        arr = np.asarray(img, dtype=np.float64)
        lo, hi = float(arr.min()), float(arr.max())
        scale = 255.0 / (hi - lo) if hi > lo else 0.0
        img = Image.fromarray(((arr - lo) * scale).astype(np.uint8), mode="L")
    if img.mode == "P":
        img = img.convert("RGBA") if "transparency" in img.info else img.convert("RGB")
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        img = Image.alpha_composite(background, rgba)
    return img if img.mode == "RGB" else img.convert("RGB")


def open_image(
    source: bytes | str | Path,
    *,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    max_bytes: int = DEFAULT_MAX_BYTES,
    draft: int | None = RESIZE,
    max_decode_bytes: int = DEFAULT_MAX_DECODE_BYTES,
) -> Image.Image:
    """Decode ``source`` (bytes or a path) into an upright RGB image, or raise a :class:`BadImage`.

    ``draft`` is the short side the caller needs: JPEG decoding scales down on the fly (a 12000×12000
    photo never materialises at full size) and other images are box-reduced after decoding, each keeping
    the short side at least ``draft`` pixels (twice that for the reduction). ``None``: full size.
    """
    if isinstance(source, bytes | bytearray):
        if len(source) == 0:
            raise BadImage("The file is empty.")
        if len(source) > max_bytes:
            raise ImageTooLarge(f"The file is {len(source):,} bytes; at most {max_bytes:,} are accepted.")
        stream: io.BytesIO | Path = io.BytesIO(source)
    else:
        stream = Path(source)
        try:
            size = stream.stat().st_size
        except OSError as exc:
            raise BadImage(f"Cannot read {stream.name}: {exc.strerror}") from exc
        if size == 0:
            raise BadImage(f"{stream.name} is empty.")
    try:
        with warnings.catch_warnings():
            # Pillow only warns between its limit and twice it: make every bomb an error.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(stream, formats=FORMATS)
            _check_pixels(img, max_pixels)
            if getattr(img, "n_frames", 1) > 1:
                img.seek(0)
            if img.format in ("JPEG", "MPO"):
                img._size_before_draft = img.size  # type: ignore[attr-defined]  # decode_cost reads it
                if draft:
                    img.draft("RGB", (draft, draft))
            _check_cost(img, max_decode_bytes)
            img.load()
            small = _shrink(img, draft) if draft else img
            upright: Image.Image = ImageOps.exif_transpose(small) or small
            return _to_rgb(upright)
    except (ImageTooLarge, BadImage):
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageTooLarge(f"The image is too large to decode safely: {exc}") from exc
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError, IndexError) as exc:
        raise BadImage("The file is not an image we can read (broken, truncated or unsupported).") from exc


def resize_short_side(img: Image.Image, size: int = RESIZE) -> Image.Image:
    """Scale so the shorter side is ``size`` pixels, keeping the aspect ratio."""
    w, h = img.size
    scale = size / min(w, h)
    new = (max(size, round(w * scale)), max(size, round(h * scale)))
    return img.resize(new, Image.Resampling.BILINEAR)


def to_network_input(img: Image.Image) -> np.ndarray:
    """A 224×224 RGB image → float32 (3, 224, 224), BGR order, Caffe mean subtracted."""
    arr = np.asarray(img, dtype=np.float32)[:, :, ::-1] - MEAN_BGR
    return np.ascontiguousarray(arr.transpose(2, 0, 1))


def center_crop(img: Image.Image, size: int = CROP) -> Image.Image:
    """The central ``size``×``size`` crop."""
    w, h = img.size
    left, top = (w - size) // 2, (h - size) // 2
    return img.crop((left, top, left + size, top + size))


# How a photo becomes the network's 224 × 224 input. "whole": all of it, scaled to 224 × 224 (the aspect
# ratio not kept: nothing at the edges is lost, and a square photo is only scaled); "centre": the short
# side scaled to 256 and the centre 224 × 224 cut out (the Caffe-era protocol; with 10 views also the four
# corners). On Flickr8k the whole photo and its mirror, averaged (the default bundle's features), score
# as the mean of 10 centre-framed crops or better, for a fifth of the work (docs/benchmarks.md, "Image
# framing"). A bundle records its framing; photos sent to the engine are framed the same way, one view.
FRAMINGS = ("whole", "centre")
CROPS = (1, 2, 10)


def whole_view(img: Image.Image) -> Image.Image:
    """The whole photo scaled to 224 × 224."""
    return img if img.size == (CROP, CROP) else img.resize((CROP, CROP), Image.Resampling.BILINEAR)


def check_views(crops: int, framing: str) -> None:
    """ValueError unless ``crops`` views of ``framing`` exist (the whole photo has 1, or 2: + its mirror)."""
    if framing not in FRAMINGS:
        raise ValueError(f"framing must be one of {FRAMINGS}")
    allowed = CROPS if framing == "centre" else (1, 2)
    if crops not in allowed:
        raise ValueError(f"crops must be one of {allowed} with the {framing} framing")


def preprocess(img: Image.Image, framing: str = "centre") -> np.ndarray:
    """Serving/evaluation view in network layout: the whole photo, or the centre crop (:data:`FRAMINGS`)."""
    check_views(1, framing)
    view = whole_view(img) if framing == "whole" else center_crop(resize_short_side(img))
    return to_network_input(view)


def network_views(img: Image.Image, crops: int = 1, framing: str = "centre") -> np.ndarray:
    """(crops, 3, 224, 224) network inputs of one photo, whose outputs are averaged.

    1: the framed view (serving); 2: it and its mirror; 10 (centre framing only): the centre and four
    corner crops of the short-side-256 image, each also mirrored (the Caffe-era test protocol).
    """
    check_views(crops, framing)
    if framing == "whole":
        view = whole_view(img)
        views = [view] if crops == 1 else [view, view.transpose(Image.Transpose.FLIP_LEFT_RIGHT)]
        return np.stack([to_network_input(v) for v in views])
    r = resize_short_side(img)
    w, h = r.size
    boxes = [((w - CROP) // 2, (h - CROP) // 2)]
    if crops == 10:
        boxes += [(0, 0), (w - CROP, 0), (0, h - CROP), (w - CROP, h - CROP)]
    out = []
    for left, top in boxes:
        view = r.crop((left, top, left + CROP, top + CROP))
        out.append(to_network_input(view))
        if crops > 1:
            out.append(to_network_input(view.transpose(Image.Transpose.FLIP_LEFT_RIGHT)))
    return np.stack(out)


def load_for_network(source: bytes | str | Path, framing: str = "centre", **limits: int) -> np.ndarray:
    """Decode ``source`` safely and return its network input (3, 224, 224), framed by ``framing``."""
    return preprocess(open_image(source, **limits), framing)


def thumbnail_jpeg(source: bytes | str | Path, max_side: int, quality: int = 85) -> bytes:
    """A JPEG no larger than ``max_side`` on either side (for previews)."""
    img = open_image(source, draft=max_side)
    img.thumbnail((max_side, max_side), Image.Resampling.BILINEAR)
    out = io.BytesIO()
    img.save(out, format="JPEG", quality=quality)
    return out.getvalue()
