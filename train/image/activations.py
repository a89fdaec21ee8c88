"""GoogLeNet's pool4 activations (inception 5a's input, 832×7×7) of every view of every image, cached once.

Fine-tuning the top inception blocks (5a, 5b) and pooling their 7×7 grid another way both start from the
same frozen part of the network, conv1 … inception_4e and pool4, which holds about nine tenths of its
multiply-adds. That part runs once per view: its output (fp16, 81.5 KB a view) goes into one
``np.memmap`` of shape (images, views, 832, 7, 7) keyed by the weights, the image list and the views.
The views are :func:`space.images.network_views`' (1 centre crop, 2 with its mirror, 10 with the four
corners and their mirrors), so the mean over a cached image's views is exactly what the bundle encoder
averages. The fill is resumable: a state file records how many images are written, so a run stopped on
a shared machine goes on where it stopped. On CPU the lower part runs through ONNX Runtime (its LRN as
the cheap fixed chain of :mod:`train.image.export`).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from collections import deque
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from space.errors import SpaceError
from space.images import network_views, open_image
from space.ort import open_session
from train.progress import ProgressCallback, throttled

log = logging.getLogger(__name__)

POOL4_SHAPE = (832, 7, 7)
GRID_CHANNELS = 1024
# Pooled widths of the levels below the grid: pool4 (inception 4e, pooled) and inception 5a.
LEVEL_DIMS = (832, 832)
# Images written between two saves of the state file: what a stopped run loses at most.
SAVE_EVERY = 64


class Lower(nn.Module):
    """conv1 … inception_4e and pool4 of a backbone: (B, 3, 224, 224) → (B, 832, 7, 7)."""

    def __init__(self, backbone: nn.Module) -> None:
        super().__init__()
        self.backbone = backbone
        self.block_4e, self.pool4 = _lower_tail(backbone)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Network inputs → pool4 activations."""
        return self.pool4(self.block_4e(self.backbone.trunk(x)))  # type: ignore[operator]


class Upper(nn.Module):
    """Inception 5a and 5b of a backbone (shared with it, not copied): (B, 832, 7, 7) → (B, 1024, 7, 7)."""

    def __init__(self, backbone: nn.Module) -> None:
        super().__init__()
        self.block_5a, self.block_5b = _upper_blocks(backbone)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """pool4 activations → the 7×7 grid the bundle encoder's features are the mean of."""
        out: torch.Tensor = self.block_5b(self.block_5a(x))
        return out


def _lower_tail(backbone: nn.Module) -> tuple[nn.Module, nn.Module]:
    """(inception 4e, pool4) of the BVLC or the torchvision GoogLeNet."""
    blocks = getattr(backbone, "blocks", None)
    if isinstance(blocks, nn.ModuleDict):
        return blocks["4e"], backbone.pool4  # type: ignore[return-value]
    net: Any = backbone.net  # TorchvisionGoogLeNet
    return net.inception4e, net.maxpool4


def _upper_blocks(backbone: nn.Module) -> tuple[nn.Module, nn.Module]:
    """(inception 5a, inception 5b) of the BVLC or the torchvision GoogLeNet."""
    blocks = getattr(backbone, "blocks", None)
    if isinstance(blocks, nn.ModuleDict):
        return blocks["5a"], blocks["5b"]
    net: Any = backbone.net
    return net.inception5a, net.inception5b


@dataclass(frozen=True)
class ActivationCache:
    """Cached pool4 activations: ``open()[i, v]`` is view ``v`` of image ``i`` (zeros when it failed)."""

    path: Path
    n_images: int
    views: int
    failed: tuple[int, ...]

    def open(self) -> np.memmap:
        """The activations, read-only, shape (n_images, views, 832, 7, 7), fp16."""
        shape = (self.n_images, self.views, *POOL4_SHAPE)
        return np.memmap(self.path, dtype=np.float16, mode="r", shape=shape)


def cache_key(key_parts: Sequence[str], images: Sequence[Path], views: int,
              select: Sequence[int] | None = None) -> str:
    """What decides the cached activations: the backbone and weights, the image list, the views."""
    src = json.dumps(["pool4", list(key_parts), [str(p) for p in images], views,
                      None if select is None else list(select)])
    return hashlib.sha256(src.encode()).hexdigest()[:20]


def _export_lower(backbone: nn.Module, path: Path) -> None:
    """The lower part as ONNX (LRN as the fixed chain ONNX Runtime runs fast), written atomically."""
    from train.image.export import with_onnx_lrn

    tmp = path.with_suffix(".partial.onnx")
    model = with_onnx_lrn(Lower(backbone)).eval()
    with torch.no_grad():
        torch.onnx.export(model, (torch.zeros(1, 3, 224, 224),), str(tmp), input_names=["images"],
                          output_names=["pool4"], opset_version=17, dynamo=False,
                          dynamic_axes={"images": {0: "batch"}, "pool4": {0: "batch"}})
    os.replace(tmp, path)


def _decode(path: Path, views: int, select: Sequence[int] | None) -> np.ndarray | None:
    try:
        out = network_views(open_image(path), views)
        return out if select is None else out[list(select)]
    except SpaceError as exc:
        log.warning("cannot read %s: %s", path, exc)
        return None


def _decoded(images: Sequence[Path], start: int, views: int, select: Sequence[int] | None,
             pool: ThreadPoolExecutor, window: int) -> Iterator[tuple[int, np.ndarray | None]]:
    """(index, views) from ``start`` on, in order, decoded ahead by at most ``window`` images."""
    pending: deque[tuple[int, Future[np.ndarray | None]]] = deque()
    for i in range(start, len(images)):
        pending.append((i, pool.submit(_decode, images[i], views, select)))
        if len(pending) >= window:
            j, fut = pending.popleft()
            yield j, fut.result()
    while pending:
        j, fut = pending.popleft()
        yield j, fut.result()


def cache_pool4(
    backbone: nn.Module,
    images: Sequence[Path],
    views: int,
    work_dir: Path,
    *,
    key_parts: Sequence[str],
    select: Sequence[int] | None = None,
    batch_size: int = 40,
    threads: int | None = None,
    progress: ProgressCallback | None = None,
) -> ActivationCache:
    """Compute (or reuse, or finish) the pool4 activations of ``views`` views of every image.

    ``select``: only these of the ``views`` views, in this order (e.g. (0, 1), the centre and its mirror,
    first, and the eight corner views in a second cache), so a cheap cache can rank ideas early and the
    full one costs no view twice.
    """
    key = cache_key(key_parts, images, views, select)
    views_total = views
    views = views if select is None else len(select)
    path = work_dir / f"pool4-{key}.f16"
    state_path = work_dir / f"pool4-{key}.json"
    n = len(images)
    shape = (max(n, 1), views, *POOL4_SHAPE)
    state: dict[str, Any] = {"done": 0, "failed": [], "n_images": n, "views": views}
    if state_path.is_file() and path.is_file():
        state = json.loads(state_path.read_text(encoding="utf-8"))
        if state["done"] >= n:
            log.info("reusing cached pool4 activations %s (%d images × %d views)", path.name, n, views)
            return ActivationCache(path, n, views, tuple(state["failed"]))
        log.info("resuming the pool4 cache %s at image %d of %d", path.name, state["done"], n)
        mm = np.memmap(path, dtype=np.float16, mode="r+", shape=shape)
    else:
        work_dir.mkdir(parents=True, exist_ok=True)
        mm = np.memmap(path, dtype=np.float16, mode="w+", shape=shape)
    onnx_path = work_dir / f"pool4-{key}.onnx"
    if not onnx_path.is_file():
        _export_lower(backbone.eval(), onnx_path)
    session = open_session(onnx_path, threads, spin=False)
    failed: list[int] = list(state["failed"])
    done = int(state["done"])
    report = throttled(progress)
    per_call = max(1, batch_size // views)
    bar = tqdm(total=n, initial=done, desc="pool4 cache", unit="img", mininterval=2.0)
    started, at_start = time.monotonic(), done
    batch: list[np.ndarray] = []
    rows: list[int] = []

    def flush() -> None:
        if batch:
            out = session.run(["pool4"], {"images": np.concatenate(batch)})[0]
            mm[rows] = out.reshape(len(rows), views, *POOL4_SHAPE).astype(np.float16)
            batch.clear()
            rows.clear()

    def save(upto: int) -> None:
        mm.flush()
        tmp = state_path.with_suffix(".partial")
        tmp.write_text(json.dumps({"done": upto, "failed": failed, "n_images": n, "views": views}))
        os.replace(tmp, state_path)

    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="decode") as pool:
        for i, x in _decoded(images, done, views_total, select, pool, window=4 * per_call):
            if x is None:
                failed.append(i)
                mm[i] = 0
            else:
                batch.append(x)
                rows.append(i)
            if len(batch) >= per_call:
                flush()
            bar.update(1)
            if (i + 1) % SAVE_EVERY == 0:
                flush()
                save(i + 1)
                rate = (i + 1 - at_start) / max(time.monotonic() - started, 1e-6)
                bar.set_postfix(img_s=f"{rate:.2f}", refresh=False)
            if report:
                report("pool4-cache", i + 1, n, "images")
        flush()
    save(n)
    bar.close()
    log.info("cached pool4 activations of %d images × %d views in %.0f s (%d failed)", n - at_start, views,
             time.monotonic() - started, len(failed))
    return ActivationCache(path, n, views, tuple(failed))


def upper_features(upper: Upper, maps: np.ndarray, rows: Sequence[int] | np.ndarray, *,
                   grid_out: np.ndarray | None = None, levels_out: np.ndarray | None = None,
                   batch_size: int = 64, progress: ProgressCallback | None = None) -> np.ndarray:
    """The frozen top blocks over cached maps of ``rows``: pooled (len(rows), views, 1024) features.

    With ``grid_out`` (an array (len(rows), views, 1024, 7, 7), e.g. an fp16 memmap) the 7×7 grids they
    are the mean of are written there too; with ``levels_out`` (len(rows), views, 1664) the lower levels'
    pooled features, pool4's and 5a's means (:data:`LEVEL_DIMS`).
    """
    rows = np.asarray(rows, np.int64)
    views = maps.shape[1]
    out = np.zeros((len(rows), views, GRID_CHANNELS), np.float32)
    per = max(1, batch_size // views)
    report = throttled(progress)
    upper = upper.eval()
    with torch.no_grad():
        for s in tqdm(range(0, len(rows), per), desc="top blocks", unit="batch", mininterval=2.0):
            n = len(rows[s : s + per])
            x = torch.from_numpy(np.asarray(maps[rows[s : s + n]], np.float32).reshape(-1, *POOL4_SHAPE))
            y5a = upper.block_5a(x)
            y = upper.block_5b(y5a)
            out[s : s + n] = y.mean(dim=(2, 3)).reshape(n, views, GRID_CHANNELS).numpy()
            if levels_out is not None:
                low = torch.cat([x.mean(dim=(2, 3)), y5a.mean(dim=(2, 3))], dim=1)
                levels_out[s : s + n] = low.reshape(n, views, -1).numpy()
            if grid_out is not None:
                grid_out[s : s + n] = y.reshape(n, views, GRID_CHANNELS, 7, 7).numpy()
            if report:
                report("top-blocks", s + n, len(rows), "images")
    return out
