"""Encode images into the word space with the exported ONNX encoder (the same path serving uses)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
from tqdm import tqdm

from space.errors import SpaceError
from space.images import load_for_network
from train.export import INPUT_NAME, OUTPUT_NAME, ort_session
from train.image_model import throttled

log = logging.getLogger(__name__)

Progress = Callable[[str, int, "int | None", str], None]


def encode_images(
    onnx_path: Path,
    images: Sequence[Path],
    batch_size: int = 32,
    *,
    progress: Progress | None = None,
    threads: int | None = None,
) -> tuple[np.ndarray, list[int]]:
    """(N, D) float32 vectors of ``images`` (zero rows for unreadable ones) and the failed indices."""
    session = ort_session(onnx_path, threads)
    dim = session.get_outputs()[0].shape[1]
    if not isinstance(dim, int):
        probe = np.zeros((1, 3, 224, 224), np.float32)
        dim = int(session.run([OUTPUT_NAME], {INPUT_NAME: probe})[0].shape[1])
    out = np.zeros((len(images), dim), dtype=np.float32)
    failed: list[int] = []
    report = throttled(progress)
    batch: list[np.ndarray] = []
    rows: list[int] = []

    def flush() -> None:
        if batch:
            out[rows] = session.run([OUTPUT_NAME], {INPUT_NAME: np.stack(batch)})[0]
            batch.clear()
            rows.clear()

    for i, path in enumerate(tqdm(images, desc="encode", unit="img", mininterval=1.0)):
        try:
            batch.append(load_for_network(path))
            rows.append(i)
        except SpaceError as exc:
            log.warning("cannot encode %s: %s", path, exc)
            failed.append(i)
        if len(batch) >= batch_size:
            flush()
        if report:
            report("encode", i + 1, len(images), "images")
    flush()
    log.info("encoded %d images (%d failed)", len(images) - len(failed), len(failed))
    return out, failed
