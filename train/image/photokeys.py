"""Each photo's key: the SHA-256 of its bytes, remembered by path, size and mtime so a rerun reads no photo.

The feature store (:mod:`train.image.features`) is keyed by photo content, so a post whose photo moved or
was re-posted reuses its features, and a photo replaced in place is encoded again. Hashing reads every
byte once (about 19,000 Flickr8k photos/s from the page cache here; threads, as hashlib and file reads
release the GIL); the cache (SQLite, one row per path) makes the next run cost one ``stat`` per photo.
An unreadable path gets the all-zero key and is never cached: it fails at decoding, as before.
"""

from __future__ import annotations

import hashlib
import logging
import os
import sqlite3
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from train.progress import ProgressCallback, throttled

log = logging.getLogger(__name__)

KEY_BYTES = 32
UNREADABLE = bytes(KEY_BYTES)
BATCH = 2048  # paths hashed (and written to the cache) per step


def file_sha256(path: Path) -> bytes:
    """The SHA-256 digest of the file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.digest()


class HashCache:
    """path → (size, mtime_ns, sha256) in an SQLite file; one writer at a time (rank 0)."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(str(path), timeout=60)
        self.db.execute("CREATE TABLE IF NOT EXISTS sha256 (path TEXT PRIMARY KEY, size INTEGER, "
                        "mtime_ns INTEGER, digest BLOB)")

    def close(self) -> None:
        """Close the database."""
        self.db.close()

    def __enter__(self) -> HashCache:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def known(self) -> dict[str, tuple[int, int, bytes]]:
        """Every cached entry (one query: 325,000 rows load in about a second)."""
        rows = self.db.execute("SELECT path, size, mtime_ns, digest FROM sha256")
        return {p: (s, m, d) for p, s, m, d in rows}

    def put(self, rows: Sequence[tuple[str, int, int, bytes]]) -> None:
        """Remember ``(path, size, mtime_ns, digest)`` rows (committed at once)."""
        with self.db:
            self.db.executemany("INSERT OR REPLACE INTO sha256 VALUES (?, ?, ?, ?)", rows)


def _stat(path: Path) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_size, st.st_mtime_ns


def _hash(path: Path) -> bytes:
    try:
        return file_sha256(path)
    except OSError:
        return UNREADABLE


def photo_keys(photos: Sequence[Path], cache: Path | None = None, *, threads: int = 8,
               progress: ProgressCallback | None = None) -> np.ndarray:
    """(N, 32) uint8: each photo's SHA-256 (zeros where unreadable), hashing only photos the cache lacks."""
    n = len(photos)
    keys = np.zeros((n, KEY_BYTES), np.uint8)
    db = HashCache(cache) if cache is not None else None
    known = db.known() if db is not None else {}
    report = throttled(progress)
    todo: list[tuple[int, str, int, int]] = []
    for i, p in enumerate(photos):
        st = _stat(p)
        if st is None:
            continue
        name = str(p)
        hit = known.get(name)
        if hit is not None and hit[0] == st[0] and hit[1] == st[1]:
            keys[i] = np.frombuffer(hit[2], np.uint8)
        else:
            todo.append((i, name, *st))
    if todo:
        log.info("hashing %d of %d photos (%d known by path, size and mtime)", len(todo), n, n - len(todo))
    try:
        with ThreadPoolExecutor(max(1, threads), thread_name_prefix="sha256") as pool:
            for start in range(0, len(todo), BATCH):
                part = todo[start:start + BATCH]
                digests = list(pool.map(_hash, [Path(name) for _, name, _, _ in part]))
                rows = []
                for (i, name, size, mtime), d in zip(part, digests, strict=True):
                    keys[i] = np.frombuffer(d, np.uint8)
                    if d != UNREADABLE:
                        rows.append((name, size, mtime, d))
                if db is not None:
                    db.put(rows)
                if report:
                    report("hash", n - len(todo) + start + len(part), n, "photos")
    finally:
        if db is not None:
            db.close()
    return keys


def hex_keys(keys: np.ndarray) -> list[str]:
    """The keys as lowercase hex strings."""
    return [bytes(k).hex() for k in keys]


def digest_of(keys: np.ndarray) -> str:
    """One hex digest of an ordered key list (a stage key)."""
    return hashlib.sha256(np.ascontiguousarray(keys, np.uint8).tobytes()).hexdigest()
