"""Encode images into the word space with the exported ONNX encoder (the same path serving uses).

Any corpus size: images are encoded in chunks (4,096 by default) while worker processes decode the next
images ahead of the network (:mod:`train.image.decode`), so every core stays busy. Each finished chunk
is written atomically to a work folder (``chunk-00012.npy`` and ``chunk-00012.failed.json``), so memory
stays bounded by one chunk plus the output (which may be a memory-mapped ``.npy``), and an interrupted
run resumes at the first unfinished chunk. ONNX Runtime's CUDA provider is used when ``onnxruntime-gpu``
sees a GPU, else the CPU with every core. (The joint recipe's features use a per-photo store instead:
:mod:`train.image.features`.)
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from space.ort import INPUT_NAME, OUTPUT_NAME
from train.image.decode import Decoder, views_of
from train.image.photokeys import file_sha256
from train.image.rowfile import close_rows, open_rows
from train.image.runtime import Encoder, OrtEncoder
from train.progress import ProgressCallback, throttled

log = logging.getLogger(__name__)

CHUNK_SIZE = 4096
STATE_NAME = "encode-state.json"


@dataclass(frozen=True)
class EncodeConfig:
    """How a corpus is encoded: batch and chunk sizes, threads, device."""

    batch_size: int = 32
    chunk_size: int = CHUNK_SIZE
    threads: int | None = None  # ONNX Runtime intra-op threads; None: every core
    decode_workers: int | None = None  # image-decoding workers; None: every core
    # Decode in worker processes (True) or threads (False); None: processes when a GPU runs the network (they
    # never contend for the GIL with the loop feeding it), threads on the CPU, where the network takes the
    # cores anyway and threads cost less CPU per photo (docs/benchmarks.md "Image features").
    decode_processes: bool | None = None
    device: str = "auto"  # "auto": CUDA when one is usable, else CPU; "cpu"; "cuda"
    device_id: int = 0
    # ONNX Runtime's idle threads busy-wait by default; here they share the cores with the decode workers,
    # in two A/B pairs on the (contended) 2-core dev machine, not spinning gave 9 % and 54 % more images/s.
    spin: bool = False
    # Views averaged per image (space.images.network_views): 1 centre crop; 2 + mirror; 10 centre, corners
    # and mirrors. Bundle images may use more than one; photos sent to the engine always use one.
    crops: int = 1
    framing: str = "centre"  # space.images.FRAMINGS: the whole photo, or the short-side-256 image's crops
    # The features' network (train.image.runtime): "auto" (torch on a CUDA device, else ONNX Runtime),
    # "onnx" or "torch"; bundle encoders (encode_corpus) always run on ONNX Runtime. ``half``: torch on a
    # GPU under float16 autocast.
    runtime: str = "auto"
    half: bool = False


def decode_workers(cfg: EncodeConfig) -> int:
    """Decoding workers: as asked, else one per core."""
    return cfg.decode_workers or os.cpu_count() or 1


def decode_in_processes(cfg: EncodeConfig, provider: str) -> bool:
    """Whether to decode in processes: as asked, else when ``provider`` (the encoder's) is a GPU."""
    if cfg.decode_processes is not None:
        return cfg.decode_processes
    return "cuda" in provider.lower()


@dataclass(frozen=True)
class EncodeResult:
    """The vectors (zero rows for unreadable images), the failed indices and what the run did."""

    vectors: np.ndarray
    failed: list[int]
    chunks_encoded: int
    chunks_resumed: int
    provider: str
    seconds: float


def output_dim(session: Any) -> int:
    """The width of the encoder's output vectors."""
    dim = session.get_outputs()[0].shape[1]
    if isinstance(dim, int):
        return dim
    probe = np.zeros((1, 3, 224, 224), np.float32)
    return int(session.run([OUTPUT_NAME], {INPUT_NAME: probe})[0].shape[1])


def chunk_files(work_dir: Path, chunk: int) -> tuple[Path, Path]:
    """The vectors file and the failed-list file of one chunk."""
    return work_dir / f"chunk-{chunk:05d}.npy", work_dir / f"chunk-{chunk:05d}.failed.json"


def _atomic_write_bytes(path: Path, write: Callable[[Any], None]) -> None:
    """Write through ``write(file)`` to a temporary sibling, fsync, then rename over ``path``."""
    tmp = path.with_name(path.name + ".partial")
    with open(tmp, "wb") as fh:
        write(fh)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def _fingerprint_images(images: Sequence[Path]) -> str:
    digest = hashlib.sha256()
    for path in images:
        digest.update(str(path).encode("utf-8", "surrogateescape") + b"\n")
    return digest.hexdigest()


def _prepare_work_dir(work_dir: Path, state: dict[str, Any]) -> None:
    """Make ``work_dir`` hold chunks of this exact job: chunks of another job are removed."""
    work_dir.mkdir(parents=True, exist_ok=True)
    path = work_dir / STATE_NAME
    try:
        old = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        old = None
    if old == state:
        return
    stale = sorted(work_dir.glob("chunk-*"))
    if stale:
        log.warning("%s holds %d chunk files of another encoding job: starting over", work_dir, len(stale))
        for f in stale:
            f.unlink()
    _atomic_write_bytes(path, lambda fh: fh.write(json.dumps(state, sort_keys=True).encode()))


def _finished_chunk(work_dir: Path, chunk: int, rows: range, dim: int) -> bool:
    """True when the chunk's files are complete: vectors of the right shape, failed rows inside it."""
    npy, failed = chunk_files(work_dir, chunk)
    try:
        arr = np.load(npy, mmap_mode="r")
        bad = json.loads(failed.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return (arr.shape == (len(rows), dim) and arr.dtype == np.float32 and isinstance(bad, list)
            and all(isinstance(i, int) and i in rows for i in bad))


def _write_chunk(work_dir: Path, chunk: int, vectors: np.ndarray, failed: list[int]) -> None:
    """Write one chunk's failed list, then its vectors, each atomically."""
    npy, failed_path = chunk_files(work_dir, chunk)
    # The failed list first: a chunk counts as finished only once its vectors are in place.
    _atomic_write_bytes(failed_path, lambda fh: fh.write(json.dumps(failed).encode()))
    _atomic_write_bytes(npy, lambda fh: np.save(fh, vectors))


def encode_views(encoder: Encoder, decoder: Decoder, photos: Sequence[Path], order: Iterable[int],
                 batch_size: int = 32) -> Iterator[tuple[int, np.ndarray | None]]:
    """(i, vector) for ``photos[i]``, i in ``order``: the mean of its views' outputs, or None (logged)
    when unreadable. About ``batch_size`` views go through the encoder per call."""
    crops = decoder.crops
    per_batch = max(1, batch_size // crops)  # photos per encoder call
    views: list[np.ndarray] = []
    at: list[int] = []

    def run() -> Iterator[tuple[int, np.ndarray | None]]:
        out = encoder(np.concatenate(views))
        vecs = out.reshape(len(at), crops, out.shape[1]).mean(axis=1)
        yield from zip(at, vecs, strict=True)
        views.clear()
        at.clear()

    for i, pixels in decoder.stream(photos, order):
        if isinstance(pixels, str):
            log.warning("cannot encode %s: %s", photos[i], pixels)
            yield i, None
            continue
        views.append(views_of(pixels, crops))
        at.append(i)
        if len(at) >= per_batch:
            yield from run()
    if at:
        yield from run()


def _chunk_ranges(n: int, chunk_size: int) -> list[range]:
    return [range(start, min(start + chunk_size, n)) for start in range(0, n, chunk_size)]


def encode_corpus(
    onnx_path: Path,
    images: Sequence[Path],
    work_dir: Path,
    cfg: EncodeConfig = EncodeConfig(),
    *,
    out_path: Path | None = None,
    progress: ProgressCallback | None = None,
    on_chunk: Callable[[int], None] | None = None,
) -> EncodeResult:
    """Encode ``images`` chunk by chunk into ``work_dir`` (resuming finished chunks) and assemble them.

    The result's vectors are a read-only memory map of ``out_path`` when given, else an in-memory array.
    ``on_chunk(chunk)`` runs after each chunk is safely on disk (progress hooks, tests).
    """
    started = time.monotonic()
    if cfg.chunk_size < 1 or cfg.batch_size < 1:
        raise ValueError("chunk_size and batch_size must be positive")
    encoder = OrtEncoder(onnx_path, cfg.threads, cfg.device, cfg.device_id, cfg.spin)
    provider = encoder.provider
    dim = output_dim(encoder.session)
    n = len(images)
    state = {"n": n, "dim": dim, "chunk_size": cfg.chunk_size, "images": _fingerprint_images(images),
             "encoder": file_sha256(onnx_path).hex(), "crops": cfg.crops}
    if cfg.framing != "centre":  # the state of a centre-framed run stays what it was before framings
        state["framing"] = cfg.framing
    _prepare_work_dir(work_dir, state)
    chunks = _chunk_ranges(n, cfg.chunk_size)
    todo = [c for c, rows in enumerate(chunks) if not _finished_chunk(work_dir, c, rows, dim)]
    resumed = len(chunks) - len(todo)
    todo_set = set(todo)
    done = sum(len(rows) for c, rows in enumerate(chunks) if c not in todo_set)
    if resumed:
        log.info("resuming: %d of %d chunks already encoded in %s", resumed, len(chunks), work_dir)
    report = throttled(progress)
    bar = tqdm(total=n, initial=done, desc="encode", unit="img", mininterval=1.0)
    try:
        with Decoder(decode_workers(cfg), cfg.crops, processes=decode_in_processes(cfg, provider),
                     framing=cfg.framing) as decoder:
            for c in todo:
                rows = chunks[c]
                vectors = np.zeros((len(rows), dim), dtype=np.float32)
                failed: list[int] = []
                for row, vec in encode_views(encoder, decoder, images, rows, cfg.batch_size):
                    if vec is None:
                        failed.append(row)
                    else:
                        vectors[row - rows.start] = vec
                    done += 1
                    bar.update(1)
                    if report:
                        report("encode", done, n, "images")
                failed.sort()
                _write_chunk(work_dir, c, vectors, failed)
                if on_chunk is not None:
                    on_chunk(c)
    finally:
        bar.close()
    if report and n == 0:
        report("encode", 0, 0, "images")
    out, all_failed = _assemble(work_dir, chunks, dim, out_path)
    seconds = time.monotonic() - started
    log.info("encoded %d images (%d failed, %d chunks resumed) on %s in %.1f s",
             n - len(all_failed), len(all_failed), resumed, provider, seconds)
    return EncodeResult(out, all_failed, len(todo), resumed, provider, seconds)


def _assemble(work_dir: Path, chunks: list[range], dim: int,
              out_path: Path | None) -> tuple[np.ndarray, list[int]]:
    """Copy the chunk files, in order, into one array (a memory-mapped .npy when ``out_path``)."""
    n = chunks[-1].stop if chunks else 0
    out, tmp = open_rows(out_path, n, dim)
    failed: list[int] = []
    for c, rows in enumerate(chunks):
        npy, failed_path = chunk_files(work_dir, c)
        out[rows.start:rows.stop] = np.load(npy, mmap_mode="r")
        failed.extend(json.loads(failed_path.read_text(encoding="utf-8")))
    return close_rows(out, tmp, out_path), failed


def encode_images(
    onnx_path: Path,
    images: Sequence[Path],
    batch_size: int = 32,
    *,
    progress: ProgressCallback | None = None,
    threads: int | None = None,
    work_dir: Path | None = None,
    out_path: Path | None = None,
    chunk_size: int = CHUNK_SIZE,
    decode_workers: int | None = None,
    device: str = "auto",
    crops: int = 1,
    framing: str = "centre",
) -> tuple[np.ndarray, list[int]]:
    """(N, D) float32 vectors of ``images`` (zero rows for unreadable ones) and the failed indices.

    With ``work_dir`` the run is resumable there; without it, chunks go to a temporary folder.
    """
    cfg = EncodeConfig(batch_size=batch_size, chunk_size=chunk_size, threads=threads,
                       decode_workers=decode_workers, device=device, crops=crops, framing=framing)
    if work_dir is not None:
        result = encode_corpus(onnx_path, images, work_dir, cfg, out_path=out_path, progress=progress)
        return result.vectors, result.failed
    tmp = Path(tempfile.mkdtemp(prefix="encode-"))
    try:
        result = encode_corpus(onnx_path, images, tmp, cfg, out_path=out_path, progress=progress)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return result.vectors, result.failed
