"""The per-photo feature store: frozen-CNN features keyed by photo content and encoder, written in parts.

``<work>/feature-store/<backbone>-<crops>crop-<key>/`` (``…-<crops>whole-…`` for whole-photo views) holds
one folder per encoder setting (backbone, weights fingerprint, crops and framing, width and the levels whose
means are concatenated: :class:`FeatureSpec`; the
joint recipe's default pool4 + 5a + 5b store never meets the 5b-only one). Inside, parts:
``part-<writer>-<n>.npy``
(rows × D float32) and ``part-<writer>-<n>.keys`` (the rows' photo SHA-256 digests, 32 bytes each), the
keys renamed into place last, so a part exists only once it is whole. A writer closes a part every
``flush_rows`` photos or ``flush_seconds`` (30 s by default): ``kill -9`` loses at most that much encoding,
and a rerun after any filter, topic or text change encodes only the photos the store lacks. Writers never
share a file (each has its own name: rank, pid, start time), so torchrun ranks, or two machines, fill one
store at once; unreadable photos are not stored (a rerun tries them again, which costs little).

``--features DIR`` imports features computed elsewhere (``python -m train.image.encode_dist`` writes
them): ``keys.txt`` (one SHA-256 a line, hex), ``features.npy`` (rows × D, float16 or float32) and
``meta.json`` (``{"backbone", "crops", "dim", "levels", "framing"}``; no levels: 5b alone; no framing:
centre crops), refused in one line
when these differ from the run's.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from tqdm import tqdm

from space.errors import SpaceError
from train.image.photokeys import KEY_BYTES, UNREADABLE
from train.image.rowfile import close_rows, open_rows
from train.progress import ProgressCallback, throttled

if TYPE_CHECKING:
    from train.image.encode import EncodeConfig

log = logging.getLogger(__name__)

BACKBONES = {"bvlc": "bvlc_googlenet", "torchvision": "torchvision_googlenet"}
FEATURE_DIM = 1024  # GoogLeNet's pooled features
# Channels of each GoogLeNet level whose global mean can be a feature, in network order; "pool4" is
# inception 4e after the fourth max pool, "5b" the last block (its mean: the classic pooled features).
LEVEL_WIDTHS: dict[str, int] = {"3b": 480, "4a": 512, "4b": 512, "4c": 512, "4d": 528, "pool4": 832,
                                "5a": 832, "5b": 1024}
POOL5: tuple[str, ...] = ("5b",)
# The joint recipe's default on the BVLC network: 5b's mean and the means of the two levels below it,
# measured best for their cost (docs/benchmarks.md, "Joint recipe ablation").
DEFAULT_LEVELS: tuple[str, ...] = ("pool4", "5a", "5b")
FLUSH_ROWS = 4096
FLUSH_SECONDS = 30.0
IMPORT_BLOCK = 65536  # rows copied per step from an imported features.npy (bounds memory)


class FeatureImportMismatch(SpaceError):
    """``--features DIR`` holds features of another encoder setting, or is not a features folder."""

    code = "feature_import_mismatch"
    status = 400


@dataclass(frozen=True)
class FeatureSpec:
    """What a stored feature vector depends on besides the photo: the network, its weights, the views."""

    backbone: str  # as meta.json names it: bvlc_googlenet, torchvision_googlenet
    weights: str  # a fingerprint of the weights ("none": the backbone's own download)
    crops: int
    dim: int = FEATURE_DIM
    levels: tuple[str, ...] = POOL5  # whose global means, concatenated in network order
    framing: str = "centre"  # space.images.FRAMINGS

    @classmethod
    def of(cls, backbone: str, weights: str, crops: int, levels: Sequence[str] = POOL5,
           framing: str = "centre") -> FeatureSpec:
        """The setting of ``levels``' means (its width computed)."""
        levels = normalise_levels(levels)
        return cls(backbone, weights, crops, feature_width(levels), levels, framing)

    def fields(self) -> dict[str, Any]:
        """Every field, ``levels`` only when not the pooled 5b alone and ``framing`` only when not the
        centre, so the stores and stage keys of earlier settings stay what they were."""
        out = asdict(self)
        if self.levels == POOL5:
            del out["levels"]
        else:
            out["levels"] = list(self.levels)
        if self.framing == "centre":
            del out["framing"]
        return out

    def key(self) -> str:
        """A short hash of every field."""
        blob = json.dumps(self.fields(), sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:16]

    def describe(self) -> str:
        """``bvlc_googlenet, 10 crops, 1024-d`` (and the levels when more than 5b; ``whole photo`` views)."""
        levels = "" if self.levels == POOL5 else f" ({'+'.join(self.levels)})"
        views = (f"{self.crops} crop{'s' if self.crops != 1 else ''}" if self.framing == "centre"
                 else f"{self.crops} {self.framing}-photo view{'s' if self.crops != 1 else ''}")
        return f"{self.backbone}, {views}, {self.dim}-d{levels}"


def normalise_levels(levels: Sequence[str]) -> tuple[str, ...]:
    """``levels`` in network order without repeats; ValueError naming an unknown one or none given."""
    unknown = [name for name in levels if name not in LEVEL_WIDTHS]
    if unknown or not levels:
        raise ValueError(f"unknown feature levels {unknown or '(none)'}: choose from "
                         f"{', '.join(LEVEL_WIDTHS)}")
    return tuple(name for name in LEVEL_WIDTHS if name in levels)


def feature_width(levels: Sequence[str]) -> int:
    """The width of the concatenated means of ``levels``."""
    return sum(LEVEL_WIDTHS[name] for name in levels)


def _atomic(path: Path, write: Callable[[Any], None]) -> None:
    # A name of its own: two writers (torchrun ranks) may write the same file (meta.json) at once.
    tmp = path.with_name(f"{path.name}.{os.getpid()}-{time.time_ns()}.partial")
    with open(tmp, "wb") as fh:
        write(fh)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


class PartWriter:
    """Appends (key, vector) rows to a store, closing a part every ``flush_rows`` rows or ``flush_seconds``
    (whichever comes first)."""

    def __init__(self, store: FeatureStore, tag: str, flush_rows: int = FLUSH_ROWS,
                 flush_seconds: float = FLUSH_SECONDS) -> None:
        self.store, self.tag = store, tag
        self.flush_rows, self.flush_seconds = max(1, flush_rows), flush_seconds
        self.keys: list[bytes] = []
        self.rows: list[np.ndarray] = []
        self.parts = 0
        self.written = 0
        self.last = time.monotonic()

    def add(self, key: bytes, vector: np.ndarray) -> None:
        """Buffer one photo's vector; write a part when the buffer is full or old enough."""
        self.keys.append(key)
        self.rows.append(np.asarray(vector, np.float32))
        if len(self.keys) >= self.flush_rows or time.monotonic() - self.last >= self.flush_seconds:
            self.flush()

    def flush(self) -> None:
        """Write the buffered rows as one part (vectors first, keys last: the keys make it count)."""
        self.last = time.monotonic()
        if not self.keys:
            return
        stem = self.store.dir / f"part-{self.tag}-{self.parts:06d}"
        vectors = np.stack(self.rows)
        _atomic(stem.with_suffix(".npy"), lambda fh: np.save(fh, vectors))
        blob = b"".join(self.keys)
        _atomic(stem.with_suffix(".keys"), lambda fh: fh.write(blob))
        self.parts += 1
        self.written += len(self.keys)
        self.keys.clear()
        self.rows.clear()

    def __enter__(self) -> PartWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.flush()  # what was encoded before an exception is kept too


class FeatureStore:
    """One encoder setting's stored features (see the module docstring)."""

    def __init__(self, base: Path, spec: FeatureSpec) -> None:
        self.spec = spec
        views = "crop" if spec.framing == "centre" else spec.framing
        self.dir = base / f"{spec.backbone}-{spec.crops}{views}-{spec.key()}"
        self.dir.mkdir(parents=True, exist_ok=True)
        meta = self.dir / "meta.json"
        if not meta.is_file():
            _atomic(meta, lambda fh: fh.write(json.dumps(asdict(spec), indent=1).encode()))

    def parts(self) -> list[Path]:
        """The finished parts (their ``.keys`` files), in name order."""
        return sorted(self.dir.glob("part-*.keys"))

    def index(self) -> dict[bytes, tuple[Path, int]]:
        """key → (vectors file, row) over every finished part; a damaged part is skipped (logged)."""
        out: dict[bytes, tuple[Path, int]] = {}
        for keys_path in self.parts():
            npy = keys_path.with_suffix(".npy")
            blob = keys_path.read_bytes()
            try:
                shape = np.load(npy, mmap_mode="r").shape
            except (OSError, ValueError) as exc:
                log.warning("feature store: skipping %s (%s)", npy.name, exc)
                continue
            n = len(blob) // KEY_BYTES
            if len(blob) % KEY_BYTES or shape != (n, self.spec.dim):
                log.warning("feature store: skipping %s: %d key bytes for vectors %s", keys_path.name,
                            len(blob), shape)
                continue
            for row in range(n):
                out[blob[row * KEY_BYTES:(row + 1) * KEY_BYTES]] = (npy, row)
        return out

    def writer(self, tag: str, flush_rows: int = FLUSH_ROWS,
               flush_seconds: float = FLUSH_SECONDS) -> PartWriter:
        """A writer whose parts are named after ``tag`` (unique per process)."""
        return PartWriter(self, tag, flush_rows, flush_seconds)

    def gather(self, keys: np.ndarray, out_path: Path | None = None) -> tuple[np.ndarray, list[int]]:
        """(N, D) float32 rows for ``keys`` (a memory map of ``out_path`` when given) and the rows missing."""
        index = self.index()
        n, dim = len(keys), self.spec.dim
        out, tmp = open_rows(out_path, n, dim)
        by_part: dict[Path, tuple[list[int], list[int]]] = {}
        missing: list[int] = []
        for i, k in enumerate(keys):
            hit = index.get(bytes(k))
            if hit is None:
                missing.append(i)
                out[i] = 0.0
            else:
                dest, rows = by_part.setdefault(hit[0], ([], []))
                dest.append(i)
                rows.append(hit[1])
        for npy, (dest, rows) in by_part.items():
            out[dest] = np.load(npy, mmap_mode="r")[rows]
        return close_rows(out, tmp, out_path), missing

    def import_folder(self, folder: Path, wanted: np.ndarray) -> int:
        """Copy the rows of ``folder`` (the ``--features`` format) whose keys are ``wanted`` and the store
        lacks into a part of its own; return how many. Raises :class:`FeatureImportMismatch` (one line)."""
        got, lines, matrix = open_import(folder, self.spec)
        have = self.index()
        need = {bytes(k) for k in wanted} - set(have) - {UNREADABLE}
        rows: list[int] = []
        keys: list[bytes] = []
        for row, line in enumerate(lines):
            try:
                key = bytes.fromhex(line)
            except ValueError as exc:
                raise FeatureImportMismatch(f"--features {folder}: keys.txt line {row + 1} is not hex"
                                            ) from exc
            if len(key) != KEY_BYTES:
                raise FeatureImportMismatch(f"--features {folder}: keys.txt line {row + 1} is not a SHA-256")
            if key in need:
                need.discard(key)
                rows.append(row)
                keys.append(key)
        tag = f"import-{os.getpid()}-{time.time_ns()}"
        with self.writer(tag, flush_rows=IMPORT_BLOCK, flush_seconds=float("inf")) as w:
            for start in range(0, len(rows), IMPORT_BLOCK):
                block = np.asarray(matrix[rows[start:start + IMPORT_BLOCK]], np.float32)
                for key, vec in zip(keys[start:start + IMPORT_BLOCK], block, strict=True):
                    w.add(key, vec)
        log.info("imported %d photos' features from %s (%s)", len(rows), folder, got.describe())
        return len(rows)


def open_import(folder: Path, spec: FeatureSpec) -> tuple[FeatureSpec, list[str], np.ndarray]:
    """A ``--features`` folder's setting, keys (hex lines) and matrix (memory-mapped), checked against
    ``spec`` (backbone, crops, width); :class:`FeatureImportMismatch` in one line when they differ."""
    meta = read_import_meta(folder)
    try:
        got = FeatureSpec(str(meta.get("backbone")), spec.weights, int(meta.get("crops", -1)),
                          int(meta.get("dim", -1)), normalise_levels(meta.get("levels", POOL5)),
                          str(meta.get("framing", "centre")))
    except (TypeError, ValueError) as exc:
        raise FeatureImportMismatch(f"--features {folder}: meta.json has no whole crops, dim and known "
                                    "levels") from exc
    if ((got.backbone, got.crops, got.dim, got.levels, got.framing)
            != (spec.backbone, spec.crops, spec.dim, spec.levels, spec.framing)):
        raise FeatureImportMismatch(
            f"--features {folder}: its features are {got.describe()}; this run needs "
            f"{spec.describe()} (set --encode-crops, --encode-framing, --image-levels or --backbone to "
            "match, or encode them again)")
    try:
        lines = (folder / "keys.txt").read_text(encoding="ascii").split()
        matrix = np.load(folder / "features.npy", mmap_mode="r")
    except (OSError, ValueError) as exc:
        raise FeatureImportMismatch(f"--features {folder}: unreadable ({exc})") from exc
    if matrix.ndim != 2 or matrix.shape != (len(lines), spec.dim) or matrix.dtype not in (
            np.float16, np.float32):
        raise FeatureImportMismatch(
            f"--features {folder}: features.npy is {matrix.dtype} {matrix.shape}, expected float16 or "
            f"float32 ({len(lines)}, {spec.dim}), one row per line of keys.txt")
    return got, lines, matrix


def read_import_meta(folder: Path) -> dict[str, Any]:
    """``folder/meta.json``, or :class:`FeatureImportMismatch` naming what is missing."""
    for name in ("keys.txt", "features.npy", "meta.json"):
        if not (folder / name).is_file():
            raise FeatureImportMismatch(f"--features {folder}: no {name} (expected keys.txt, features.npy, "
                                        "meta.json)")
    try:
        meta = json.loads((folder / "meta.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise FeatureImportMismatch(f"--features {folder}: meta.json is not JSON ({exc})") from exc
    if not isinstance(meta, dict):
        raise FeatureImportMismatch(f"--features {folder}: meta.json is not an object")
    return meta


def write_folder(folder: Path, keys: np.ndarray, vectors: np.ndarray, spec: FeatureSpec) -> None:
    """Write the ``--features`` format: ``keys.txt``, ``features.npy`` (float32), ``meta.json`` last."""
    folder.mkdir(parents=True, exist_ok=True)
    text = "".join(bytes(k).hex() + "\n" for k in keys)
    _atomic(folder / "keys.txt", lambda fh: fh.write(text.encode("ascii")))
    _atomic(folder / "features.npy", lambda fh: np.save(fh, np.asarray(vectors, np.float32)))
    meta = {"backbone": spec.backbone, "crops": spec.crops, "dim": spec.dim, "levels": list(spec.levels),
            "framing": spec.framing}
    _atomic(folder / "meta.json", lambda fh: fh.write(json.dumps(meta).encode()))


@dataclass(frozen=True)
class Todo:
    """The photos a run must encode: first positions of the keys the store lacks."""

    positions: list[int]  # one per distinct missing key, in photo order
    already: int  # distinct keys the store holds
    distinct: int  # distinct readable keys in the run


def missing(store_index: dict[bytes, Any], keys: np.ndarray) -> Todo:
    """Which photos to encode: one per distinct key not yet stored (unreadable photos are not tried)."""
    seen: set[bytes] = set()
    todo: list[int] = []
    already = 0
    for i, k in enumerate(keys):
        key = bytes(k)
        if key == UNREADABLE or key in seen:
            continue
        seen.add(key)
        if key in store_index:
            already += 1
        else:
            todo.append(i)
    return Todo(todo, already, len(seen))


def encode_into(store: FeatureStore, photos: Sequence[Path], keys: np.ndarray, positions: Sequence[int],
                batches: Callable[[Sequence[int]], Iterator[tuple[int, np.ndarray | None]]], *,
                tag: str, already: int, total: int, scale: int = 1,
                progress: ProgressCallback | None = None, show_bar: bool = True,
                flush_rows: int = FLUSH_ROWS, flush_seconds: float = FLUSH_SECONDS) -> tuple[int, list[int]]:
    """Encode ``photos[positions]`` through ``batches`` into the store; return (stored, failed positions).

    ``batches(positions)`` yields (position, vector or None when unreadable). Progress (stage "encode")
    counts distinct photos from ``already`` up to ``total``; ``scale``: this writer's share of the work is
    1/scale (torchrun ranks report their own share times the world size).
    """
    report = throttled(progress)
    if report:
        report("encode", already, total, "photos")
    failed: list[int] = []
    bar = tqdm(total=total, initial=already, desc="features", unit="photo", mininterval=1.0,
               disable=not show_bar)
    done = 0
    try:
        with store.writer(tag, flush_rows, flush_seconds) as w:
            for pos, vec in batches(positions):
                if vec is None:
                    failed.append(pos)
                else:
                    w.add(bytes(keys[pos]), vec)
                done += 1
                bar.update(scale)
                if report:
                    report("encode", min(total, already + done * scale), total, "photos")
        return w.written, failed
    finally:
        bar.close()


def encode_missing(store: FeatureStore, photos: Sequence[Path], keys: np.ndarray, cfg: EncodeConfig, *,
                   rank: int = 0, world: int = 1, onnx_path: Path | None, module: Callable[[], Any],
                   progress: ProgressCallback | None = None, flush_rows: int = FLUSH_ROWS,
                   note: str = "") -> Todo:
    """Encode this rank's share (every ``world``-th) of the photos the store lacks; return what was to do.

    The log line (and the progress's first report) say how many photos were already encoded. ``onnx_path``:
    the exported network, when ONNX Runtime encodes; ``module()``: the torch module, when torch does.
    """
    from train.image.decode import Decoder
    from train.image.encode import decode_in_processes, decode_workers, encode_views
    from train.image.runtime import open_encoder

    todo = missing(store.index(), keys)
    mine = todo.positions[rank::world]
    log.info("features: %d of %d photos already encoded%s, %d to encode%s", todo.already, todo.distinct,
             note, len(todo.positions), f" ({len(mine)} on rank {rank} of {world})" if world > 1 else "")
    if not mine:
        return todo

    def network() -> Path:
        if onnx_path is None:
            raise RuntimeError("ONNX Runtime encodes, but no ONNX graph was exported")
        return onnx_path

    encoder = open_encoder(cfg.runtime, onnx_path=network, module=module, device=cfg.device,
                           device_id=cfg.device_id, threads=cfg.threads, half=cfg.half)
    processes = decode_in_processes(cfg, encoder.provider)
    with Decoder(decode_workers(cfg), cfg.crops, processes=processes, framing=cfg.framing) as decoder:
        encode_into(store, photos, keys, mine,
                    lambda order: encode_views(encoder, decoder, photos, order, cfg.batch_size),
                    tag=f"r{rank}-{os.getpid()}-{time.time_ns()}", already=todo.already, total=todo.distinct,
                    scale=world, progress=progress, show_bar=progress is None and rank == 0,
                    flush_rows=flush_rows)
    return todo
