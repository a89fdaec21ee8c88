"""A rows × dim float32 result written straight into a memory-mapped ``.npy`` (or kept in memory).

Feature arrays of a large corpus do not fit twice in memory: the rows go into ``NAME.partial`` and the
finished file replaces ``NAME`` in one rename, so a reader never sees half an array.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np


def open_rows(out_path: Path | None, n: int, dim: int) -> tuple[np.ndarray, Path | None]:
    """Zeroed (n, dim) float32 rows: a memory map of ``out_path``'s temporary file, else an array."""
    if out_path is None:
        return np.zeros((n, dim), np.float32), None
    out_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_path.with_name(out_path.name + ".partial")
    return np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float32, shape=(n, dim)), tmp


def close_rows(out: np.ndarray, tmp: Path | None, out_path: Path | None) -> np.ndarray:
    """The finished rows: ``out`` itself in memory, or ``out_path`` renamed into place and mapped."""
    if out_path is None or tmp is None:
        return out
    assert isinstance(out, np.memmap)
    out.flush()
    del out
    os.replace(tmp, out_path)
    return np.load(out_path, mmap_mode="r")
