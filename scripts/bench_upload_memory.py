"""The most memory one upload can take: a running engine's peak RSS while it answers one hostile image.

Each image below is at most ``ENGINE_MAX_UPLOAD_MB`` (10 MB) on the wire yet decodes to far more: a 16-bit
grayscale PNG of 7000 × 7000 (~111 KB), the same as RGBA and RGB, a 1-bit and a palette PNG, a GIF, a
lossless WebP, deflate TIFFs (one strip, and tiled), a run-length BMP, and a progressive JPEG of 7000 × 7000
(the reduced JPEG decode's case), plus a 3000 × 3000 RGB PNG of noise near the upload limit. The engine runs
as ``python -m engine`` on a copy of the bundle; before each upload its peak-RSS mark is reset
(``/proc/PID/clear_refs`` 5, Linux), the image is POSTed to ``/v1/hashtags`` once, and the peak over the
steady RSS before the request is that upload's cost. Each image gets a fresh engine (warmed up by three
small photos), since memory an allocator keeps after one upload would hide the next one's cost.

    python scripts/bench_upload_memory.py --models DIR [--json out.json] [--out /work/scratch/x/uploads]

Needs root or the engine's own user (clear_refs). Prints one table row per image: its size on the wire, its
pixels, the answer, the steady RSS, the peak over it, and what the process still holds after the answer.
"""

from __future__ import annotations

import argparse
import io
import json
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from pagetools import free_port, wait_ready
from PIL import Image

SIDE = 7000


def _save(img: Image.Image, fmt: str, **kwargs: Any) -> bytes:
    out = io.BytesIO()
    img.save(out, format=fmt, **kwargs)
    return out.getvalue()


def _pattern(side: int) -> np.ndarray:
    """A smooth gradient: compresses to almost nothing, but is not one flat colour."""
    ramp = np.linspace(0, 1, side, dtype=np.float32)
    return ramp[None, :] * ramp[:, None]


def bmp_rle8(width: int, height: int) -> bytes:
    """A run-length (RLE8) BMP of one colour, written by hand: Pillow reads the format but never writes it."""
    import struct

    row = b"".join(bytes([min(255, width - x), 1]) for x in range(0, width, 255)) + b"\x00\x00"
    pixels = row * height + b"\x00\x01"
    palette = b"".join(bytes([i, i, i, 0]) for i in range(256))
    offset = 14 + 40 + len(palette)
    info = struct.pack("<IiiHHIIiiII", 40, width, height, 1, 8, 1, len(pixels), 2835, 2835, 256, 0)
    return b"BM" + struct.pack("<IHHI", offset + len(pixels), 0, 0, offset) + info + palette + pixels


def hostile_images(side: int = SIDE) -> dict[str, Callable[[], bytes]]:
    """Name → a function making the image's bytes (made lazily: some take a few seconds)."""
    def gray16() -> bytes:
        return _save(Image.fromarray((_pattern(side) * 65535).astype(np.uint16)), "PNG")

    def rgba() -> bytes:
        return _save(Image.new("RGBA", (side, side), (10, 200, 30, 128)), "PNG")

    def rgb() -> bytes:
        return _save(Image.new("RGB", (side, side), (10, 200, 30)), "PNG")

    def one_bit() -> bytes:
        return _save(Image.new("1", (side, side), 1), "PNG")

    def palette() -> bytes:
        return _save(Image.new("P", (side, side), 7), "PNG")

    def gif() -> bytes:
        return _save(Image.new("P", (side, side), 3), "GIF")

    def webp() -> bytes:
        return _save(Image.new("RGB", (side, side), (10, 200, 30)), "WEBP", lossless=True)

    def tiff_strip() -> bytes:
        return _save(Image.new("RGB", (side, side), (10, 200, 30)), "TIFF", compression="tiff_adobe_deflate")

    def tiff_tiled() -> bytes:
        return _save(Image.new("RGBA", (side, side), (10, 200, 30, 9)), "TIFF",
                     compression="tiff_adobe_deflate", tiled=True, tile_width=512, tile_height=512)

    def bmp_rle() -> bytes:
        return bmp_rle8(side, side)

    def jpeg() -> bytes:
        arr = (_pattern(side)[:, :, None] * np.array([255, 128, 64], dtype=np.float32)).astype(np.uint8)
        return _save(Image.fromarray(arr), "JPEG", quality=30, progressive=True)

    def big(fmt: str, mode: str, s: int, **kwargs: Any) -> Callable[[], bytes]:
        """The largest image of its kind that the decode budget accepts (the most a request may take)."""
        def make() -> bytes:
            if mode == "RGB" and fmt == "JPEG":
                arr = (_pattern(s)[:, :, None] * np.array([255, 128, 64], dtype=np.float32)).astype(np.uint8)
                return _save(Image.fromarray(arr), fmt, **kwargs)
            return _save(Image.new(mode, (s, s), (10, 200, 30, 99)[:len(mode)]), fmt, **kwargs)
        return make

    def noise_png() -> bytes:
        rng = np.random.default_rng(0)
        return _save(Image.fromarray(rng.integers(0, 256, (1800, 1800, 3), dtype=np.uint8)), "PNG")

    return {"png_gray16": gray16, "png_rgba": rgba, "png_rgb": rgb, "png_1bit": one_bit,
            "png_palette": palette, "gif": gif, "webp_lossless": webp, "tiff_one_strip": tiff_strip,
            "tiff_tiled_rgba": tiff_tiled, "bmp_rle8": bmp_rle, "jpeg_progressive": jpeg,
            "png_noise_9mb": noise_png,
            # The largest accepted of each kind.
            "jpeg_baseline_7000": big("JPEG", "RGB", side, quality=30),
            "jpeg_progressive_5700": big("JPEG", "RGB", 5700, quality=30, progressive=True),
            "jpeg_progressive_444_4000": big("JPEG", "RGB", 4000, quality=30, progressive=True,
                                             subsampling=0),
            "png_rgb_5000": big("PNG", "RGB", 5000), "png_rgba_3500": big("PNG", "RGBA", 3500),
            "tiff_tiled_rgba_3500": big("TIFF", "RGBA", 3500, compression="tiff_adobe_deflate", tiled=True,
                                        tile_width=512, tile_height=512),
            "webp_lossless_2500": big("WEBP", "RGB", 2500, lossless=True),
            "bmp_rle8_5700": lambda: bmp_rle8(5700, 5700)}


def _kb(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)




def _post(url: str, data: bytes) -> tuple[int, str]:
    req = urllib.request.Request(url, data=data, method="POST",
                                 headers={"Content-Type": "application/octet-stream"})
    try:
        with urllib.request.urlopen(req, timeout=120) as r:
            return r.status, "ok"
    except urllib.error.HTTPError as exc:
        return exc.code, str(json.loads(exc.read()).get("error"))


class Engine:
    """``python -m engine`` on a free port, one photo worker, until stopped."""

    def __init__(self, models: Path) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.proc = subprocess.Popen([sys.executable, "-m", "engine", "--models", str(models), "--port",
                                      str(self.port), "--image-workers", "1"],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        try:
            wait_ready(self.base, self.proc)
        except SystemExit:
            self.stop()
            raise
        # Warm up: a real photo through the whole path (ORT arenas, pools), so steady means steady.
        warm = _save(Image.new("RGB", (640, 480), (90, 90, 90)), "JPEG")
        for _ in range(3):
            _post(f"{self.base}/v1/hashtags", warm)

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=30)


def measure(models: Path, name: str, data: bytes) -> dict[str, Any]:
    """One upload to a fresh engine: its answer, the steady RSS, the peak over it and what stays after."""
    with Image.open(io.BytesIO(data)) as probe:
        size, mode = probe.size, probe.mode
    engine = Engine(models)
    try:
        pid = engine.proc.pid
        steady = _kb(pid, "VmRSS")
        Path(f"/proc/{pid}/clear_refs").write_text("5")  # the peak mark restarts at the current RSS
        started = time.perf_counter()
        status, answer = _post(f"{engine.base}/v1/hashtags", data)
        took = time.perf_counter() - started
        peak = _kb(pid, "VmHWM")
        after = _kb(pid, "VmRSS")
    finally:
        engine.stop()
    return {"image": name, "bytes": len(data), "size": f"{size[0]}x{size[1]}", "mode": mode,
            "status": status, "answer": answer, "steady_mb": round(steady / 1024, 1),
            "peak_over_steady_mb": round((peak - steady) / 1024, 1),
            "kept_after_mb": round((after - steady) / 1024, 1), "seconds": round(took, 2)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", type=Path, required=True)
    p.add_argument("--out", type=Path, default=None, help="keep the images here (made again otherwise)")
    p.add_argument("--json", type=Path, default=None)
    p.add_argument("--only", nargs="*", default=None, help="image names to run")
    a = p.parse_args(argv)
    rows: list[dict[str, Any]] = []
    for name, make in hostile_images().items():
        if a.only and name not in a.only:
            continue
        cached = a.out / f"{name}.bin" if a.out else None
        if cached is not None and cached.is_file():
            data = cached.read_bytes()
        else:
            data = make()
            if cached is not None:
                cached.parent.mkdir(parents=True, exist_ok=True)
                cached.write_bytes(data)
        row = measure(a.models, name, data)
        rows.append(row)
        print(f"{name:18} {len(data):>10,} B {row['size']:>10} {row['mode']:5} {row['status']} "
              f"{row['answer']:17} steady {row['steady_mb']:6.1f} MB  "
              f"peak +{row['peak_over_steady_mb']:7.1f} MB  kept +{row['kept_after_mb']:6.1f} MB  "
              f"{row['seconds']:5.2f} s", flush=True)
    worst = max(rows, key=lambda r: r["peak_over_steady_mb"])
    print(f"worst: {worst['image']} +{worst['peak_over_steady_mb']} MB over steady")
    if a.json:
        a.json.write_text(json.dumps({"rows": rows, "worst": worst}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
