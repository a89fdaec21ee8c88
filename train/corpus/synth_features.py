"""Features folders for the scale corpus: the format ``train all --features DIR`` imports.

A features folder holds ``keys.txt`` (one photo's SHA-256 a line, hex), ``features.npy`` (rows × D,
float16 or float32; row i is line i) and ``meta.json`` (``{"backbone": "bvlc_googlenet", "crops": 1,
"dim": 2688, "levels": ["pool4", "5a", "5b"]}``, the settings of the run that computed them). The base
photos' folder is computed once by the frozen GoogLeNet (:func:`compute_base_features`, one crop, the
levels ``train all`` uses by default); the scale corpus's folder gives each of its
photos its base photo's row. A synthetic photo is its base re-cropped and re-encoded, so its own features
differ a little from these: a run that imports them trains on the base photos' features, which is what the
benchmark needs (the stages' cost), not exact features.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

KEYS = "keys.txt"
FEATURES = "features.npy"
META = "meta.json"
BACKBONE = "bvlc_googlenet"


@dataclass(frozen=True)
class FeatureTable:
    """A features folder in memory: the row of each photo key."""

    keys: tuple[str, ...]
    features: np.ndarray
    meta: dict[str, Any]

    def row_of(self) -> dict[str, int]:
        """Photo key → row."""
        return {k: i for i, k in enumerate(self.keys)}

    @classmethod
    def load(cls, folder: Path) -> FeatureTable:
        """Read a features folder (its features memory-mapped)."""
        keys = tuple((folder / KEYS).read_text(encoding="ascii").split())
        features = np.load(folder / FEATURES, mmap_mode="r")
        meta = json.loads((folder / META).read_text(encoding="utf-8"))
        if features.shape[0] != len(keys):
            raise ValueError(f"{folder}: {len(keys)} keys but {features.shape[0]} feature rows")
        return cls(keys, features, meta)

    def save(self, folder: Path) -> None:
        """Write the folder (meta.json last: a folder with it is complete)."""
        folder.mkdir(parents=True, exist_ok=True)
        (folder / KEYS).write_text("".join(k + "\n" for k in self.keys), encoding="ascii")
        np.save(folder / FEATURES, np.asarray(self.features))
        (folder / META).write_text(json.dumps(self.meta), encoding="utf-8")


def file_sha256(path: Path) -> str:
    """A photo file's content key."""
    return hashlib.sha256(path.read_bytes()).hexdigest()


def compute_base_features(images: list[Path], weights: Path, folder: Path) -> FeatureTable:
    """The frozen BVLC GoogLeNet's pooled features of ``images`` at one crop (resumable in ``folder``): the
    means of the levels ``train all`` uses by default (:mod:`train.image.levels`)."""
    from train.image.encode import encode_images
    from train.image.export import export_features
    from train.image.features import DEFAULT_LEVELS

    folder.mkdir(parents=True, exist_ok=True)
    onnx_path = folder / f"features-{'-'.join(DEFAULT_LEVELS)}.onnx"
    if not onnx_path.is_file():
        export_features("bvlc", weights, onnx_path, images[:8], DEFAULT_LEVELS)
    feats, failed = encode_images(onnx_path, images, work_dir=folder / "chunks-levels", crops=1)
    keys: dict[str, int] = {}
    for i in sorted(set(range(len(images))) - set(failed)):
        keys.setdefault(file_sha256(images[i]), i)  # a photo in the set twice (Flickr8k has one) is one row
    good = list(keys.values())
    table = FeatureTable(tuple(keys), np.asarray(feats, np.float32)[good],
                         {"backbone": BACKBONE, "crops": 1, "dim": int(np.asarray(feats).shape[1]),
                          "levels": list(DEFAULT_LEVELS)})
    table.save(folder)
    log.info("base features: %d photos (%d unreadable) in %s", len(good), len(failed), folder)
    return table


def base_features(folder: Path, images: list[Path], weights: Path | None) -> FeatureTable:
    """The base photos' features folder: read when complete, else computed with ``weights``."""
    if (folder / META).is_file():
        return FeatureTable.load(folder)
    if weights is None:
        raise ValueError(f"{folder} holds no features folder yet: give --weights to compute it")
    return compute_base_features(images, weights, folder)


class FeatureSink:
    """Writes the corpus's features folder row by row (memory: one row; ``features.npy`` is streamed)."""

    def __init__(self, folder: Path, table: FeatureTable, base_names: tuple[str, ...], source: Path) -> None:
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        for name in (META, KEYS, FEATURES):
            (folder / name).unlink(missing_ok=True)
        self.table = table
        images = source / "images" if (source / "images").is_dir() else source
        row_of = table.row_of()
        # Base photo index → its row in the table (-1: no features, e.g. an unreadable base photo).
        self.base_row = np.array([row_of.get(file_sha256(images / n), -1) for n in base_names], np.int64)
        self.dtype = np.dtype(np.float16)
        self.keys = (folder / (KEYS + ".tmp")).open("w", encoding="ascii")
        self.rows = (folder / (FEATURES + ".raw")).open("wb")
        self.seen: set[str] = set()
        self.skipped = 0

    def add(self, sha: str, base: int) -> None:
        """One photo's row: its base photo's features."""
        row = int(self.base_row[base])
        if row < 0 or sha in self.seen:
            self.skipped += 1
            return
        self.seen.add(sha)
        self.keys.write(sha + "\n")
        self.rows.write(np.asarray(self.table.features[row], self.dtype).tobytes())

    def close(self) -> dict[str, Any]:
        """Finish ``features.npy`` (header + rows), ``keys.txt`` and ``meta.json``; return a summary."""
        self.keys.close()
        self.rows.close()
        n, dim = len(self.seen), int(self.table.features.shape[1])
        raw = self.folder / (FEATURES + ".raw")
        out = self.folder / FEATURES
        with out.open("wb") as f:
            header = {"descr": np.lib.format.dtype_to_descr(self.dtype), "fortran_order": False,
                      "shape": (n, dim)}
            np.lib.format.write_array_header_1_0(f, header)
            with raw.open("rb") as src:
                while block := src.read(1 << 22):
                    f.write(block)
        raw.unlink()
        os.replace(self.folder / (KEYS + ".tmp"), self.folder / KEYS)
        meta = {**self.table.meta, "dim": dim}
        (self.folder / META).write_text(json.dumps(meta), encoding="utf-8")
        return {"folder": str(self.folder), "rows": n, "dtype": str(self.dtype), **meta}
