"""The scale corpus's photos: each a base photo re-cropped, resized and re-encoded, so its bytes are its own.

A post's photo is a pure function of (base photo, variant, seed): a re-post renders its original's
parameters and so gets the very same bytes, and a rerun writes the same corpus. Variant ``k`` of a base
photo is cropped at offsets ``(k % 16, k // 16 % 16)`` from the top-left and scaled by ``k // 256``, so no
two variants of one base photo share their pixels (up to 65,536 variants; 600,000 posts over Flickr8k's
8,091 photos use about 75 each).
"""

from __future__ import annotations

import hashlib
import io
import random
from collections.abc import Sequence
from pathlib import Path

from PIL import Image

MAX_SIDE = 256  # small photos: 600,000 of them take about 8 GB


class BaseImages:
    """The base photos by index (paths only: each worker decodes what it needs)."""

    def __init__(self, source: Path, names: Sequence[str]) -> None:
        self.folder = source / "images" if (source / "images").is_dir() else source
        self.names = tuple(names)

    def path(self, index: int) -> Path:
        """The file of base photo ``index``."""
        return self.folder / self.names[index]


def render_photo(base: Path, variant: int, seed: int) -> bytes:
    """JPEG bytes of ``variant`` of ``base``: a crop, a resize to at most :data:`MAX_SIDE`, a quality."""
    rng = random.Random(seed)
    with Image.open(base) as src:
        img: Image.Image = src.convert("RGB")
    w, h = img.size
    left, top = variant % 16, variant // 16 % 16
    shrink = 1.0 - 0.02 * (variant // 256 % 16)
    # The far edges vary with the seed only: the near ones already make every variant's pixels differ.
    right = max(left + 8, round((w - rng.randint(0, 24)) * shrink))
    bottom = max(top + 8, round((h - rng.randint(0, 24)) * shrink))
    img = img.crop((left, top, min(w, right), min(h, bottom)))
    scale = rng.uniform(0.8, 1.15) * min(1.0, MAX_SIDE / max(img.size))
    size = (max(8, min(MAX_SIDE, round(img.width * scale))), max(8, min(MAX_SIDE, round(img.height * scale))))
    img = img.resize(size, Image.Resampling.BILINEAR)
    out = io.BytesIO()
    img.save(out, "JPEG", quality=rng.randint(70, 92))
    return out.getvalue()


def broken_copy(data: bytes, index: int) -> bytes:
    """A failed download of ``data``: empty, or cut off part way (the filters find it unreadable)."""
    if index % 5 == 0:
        return b""
    return data[: len(data) * (30 + index % 40) // 100]


def sha256_hex(data: bytes) -> str:
    """The photo's content key, as the features folder writes it."""
    return hashlib.sha256(data).hexdigest()
