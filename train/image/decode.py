"""Decoding photos for the encoders in worker processes, so the network (a GPU above all) is never starved.

A worker turns a path into the few uint8 pixels the views need — the whole photo at 224 × 224; with the
centre framing the 224 centre crop for 1 or 2 views, the whole short-side-256 image for 10 — and the main
process cuts the views and hands uint8 batches to the encoder, which converts them (on the GPU for torch):
a uint8 view is a quarter of its float32 network input, so the pipes between processes carry a quarter of
the bytes. The views equal
:func:`space.images.network_views`' exactly (the same crops and mirrors, the same BGR mean subtraction).

Workers are processes (``spawn``: the trainer holds torch and ONNX Runtime threads, which must not be
forked; the default when a GPU runs the network), or threads (``processes=False``; on the CPU, where the
network takes the cores anyway and threads cost less); tasks of a few photos each, with a bounded number in
flight, so memory stays bounded whatever the corpus size.
"""

from __future__ import annotations

import logging
import multiprocessing
from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import Executor, Future, ProcessPoolExecutor, ThreadPoolExecutor
from pathlib import Path

import numpy as np

from space.errors import SpaceError
from space.images import CROP, MEAN_BGR, check_views, open_image, resize_short_side, whole_view

log = logging.getLogger(__name__)

TASK_PHOTOS = 8  # photos per worker task: amortises the inter-process round trip
Decoded = np.ndarray | str  # uint8 pixels, or why the photo could not be read


def decode_pixels(path: str, crops: int, framing: str = "centre") -> Decoded:
    """The uint8 RGB pixels the ``crops`` views of one photo are cut from, or the reason it is unreadable."""
    check_views(crops, framing)
    try:
        img = open_image(path)
        if framing == "whole":
            return np.asarray(whole_view(img), dtype=np.uint8)
        r = resize_short_side(img)
    except SpaceError as exc:
        return str(exc)
    if crops == 10:
        return np.asarray(r, dtype=np.uint8)
    w, h = r.size
    left, top = (w - CROP) // 2, (h - CROP) // 2
    return np.asarray(r.crop((left, top, left + CROP, top + CROP)), dtype=np.uint8)


def _decode_task(paths: list[str], crops: int, framing: str) -> list[Decoded]:
    return [decode_pixels(p, crops, framing) for p in paths]


def views_of(pixels: np.ndarray, crops: int) -> np.ndarray:
    """(crops, 224, 224, 3) uint8 views of :func:`decode_pixels`' output, in ``network_views``' order."""
    if crops != 10:
        return pixels[None] if crops == 1 else np.stack([pixels, pixels[:, ::-1]])
    h, w = pixels.shape[:2]
    out = []
    for left, top in [((w - CROP) // 2, (h - CROP) // 2), (0, 0), (w - CROP, 0), (0, h - CROP),
                      (w - CROP, h - CROP)]:
        view = pixels[top:top + CROP, left:left + CROP]
        out += [view, view[:, ::-1]]
    return np.stack(out)


def network_batch(views: np.ndarray) -> np.ndarray:
    """uint8 RGB views (n, 224, 224, 3) → float32 network inputs (n, 3, 224, 224): BGR, Caffe mean off."""
    x = views[..., ::-1].astype(np.float32) - MEAN_BGR
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2))


class Decoder:
    """A pool of decoding workers; :meth:`stream` yields each photo's pixels in the order asked."""

    def __init__(self, workers: int, crops: int = 1, *, processes: bool = True,
                 framing: str = "centre") -> None:
        check_views(crops, framing)
        self.workers = max(1, workers)
        self.crops = crops
        self.framing = framing
        self.processes = processes
        self._pool: Executor | None = None

    def __enter__(self) -> Decoder:
        if self.processes:
            self._pool = ProcessPoolExecutor(self.workers, mp_context=multiprocessing.get_context("spawn"))
        else:
            self._pool = ThreadPoolExecutor(self.workers, thread_name_prefix="decode")
        return self

    def __exit__(self, *exc: object) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None

    def stream(self, photos: Sequence[Path], order: Iterable[int],
               window: int | None = None) -> Iterator[tuple[int, Decoded]]:
        """(i, pixels or error) for ``photos[i]``, i in ``order``, with at most ``window`` tasks queued."""
        if self._pool is None:
            raise RuntimeError("Decoder.stream outside its `with` block")
        pool = self._pool
        window = window or 4 * self.workers
        pending: deque[tuple[list[int], Future[list[Decoded]]]] = deque()
        task: list[int] = []

        def submit() -> None:
            paths = [str(photos[i]) for i in task]
            pending.append((list(task), pool.submit(_decode_task, paths, self.crops, self.framing)))
            task.clear()

        for i in order:
            task.append(i)
            if len(task) >= TASK_PHOTOS:
                submit()
                while len(pending) > window:
                    yield from _drain(pending.popleft())
        if task:
            submit()
        while pending:
            yield from _drain(pending.popleft())


def _drain(item: tuple[list[int], Future[list[Decoded]]]) -> Iterator[tuple[int, Decoded]]:
    rows, fut = item
    yield from zip(rows, fut.result(), strict=True)
