"""Encoding beyond one machine: torchrun-launched ranks each encode a share; rank 0 merges.

Two jobs. **Features for ``train all --features DIR``** (``--weights``/``--backbone``, no ``--onnx``): the
frozen backbone's pooled features of every listed photo, the mean of ``--encode-crops`` views, written as
``DIR/keys.txt`` (each photo's SHA-256, hex), ``DIR/features.npy`` (float32, row i is line i) and
``DIR/meta.json`` (``{"backbone", "crops", "dim", "levels", "framing"}``; the levels' means as ``train all``'s
``--image-levels``, its default unless given); ranks fill one per-photo store in ``DIR/store``
(:mod:`train.image.features`: a rerun, or a rank that died, loses at most one part), on the GPU when
there is one::

    torchrun --nnodes 2 --node_rank R --nproc_per_node 8 --rdzv_backend c10d --rdzv_endpoint HOST:29500 \
        -m train.image.encode_dist --weights W --images LIST.txt --out DIR

**A bundle encoder's vectors** (``--onnx BUNDLE/image_encoder.onnx``, photos framed as the bundle's manifest
says unless ``--encode-framing`` is given): rank r takes rows r, r+W, r+2W, …
(:func:`train.image.distributed.shard_indices`), encodes them with the resumable chunked encoder into
``DIR/shards/`` (a rerun resumes each shard), waits for every rank, and rank 0 writes ``DIR/images.npy``
(corpus order, built through a memory map), ``DIR/failed.json`` and ``DIR/images.usearch`` (key = corpus
row; unreadable images left out)::

    torchrun --standalone --nproc_per_node 2 -m train.image.encode_dist \
        --onnx BUNDLE/image_encoder.onnx --images LIST.txt --out DIR

DIR is on a filesystem every node sees.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import time
from dataclasses import asdict, dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from space.bundle import manifest_crops, manifest_framing, read_manifest
from space.cli import Parser, fail
from space.envvars import SettingError
from space.errors import BundleInvalid
from space.images import CROPS, FRAMINGS, check_views
from space.logs import env_secrets, setup_logging
from train.config import JOINT_CROPS, JOINT_FRAMING
from train.image.distributed import DistContext, barrier, broadcast_object, process_group, shard_indices
from train.image.encode import EncodeConfig, encode_corpus

log = logging.getLogger(__name__)

IMAGES_NAME = "images.npy"
INDEX_NAME = "images.usearch"
FAILED_NAME = "failed.json"
SUMMARY_NAME = "encode.json"
MERGE_BLOCK = 65536  # rows copied per step while merging: bounds the merge's memory


@dataclass(frozen=True)
class DistEncodeConfig:
    """One distributed encoding job: encoder, image list, output folder, per-rank encoder settings."""

    onnx: Path
    images: Path
    out: Path
    encode: EncodeConfig = field(default_factory=EncodeConfig)
    index_dtype: str = "f16"
    barrier_hours: float = 24.0  # a slow node may finish its shard hours after the fastest one


def read_image_list(path: Path) -> list[Path]:
    """The image paths listed one per line in ``path`` (relative ones are relative to its folder)."""
    base = path.resolve().parent
    lines = path.read_text(encoding="utf-8").splitlines()
    return [p if p.is_absolute() else base / p for p in (Path(s.strip()) for s in lines if s.strip())]


def shard_name(ctx: DistContext) -> str:
    """The file stem of this rank's shard (world size in the name: a resized run never mixes shards)."""
    return f"shard-{ctx.rank:05d}-of-{ctx.world_size:05d}"


def _write_json(path: Path, data: Any) -> None:
    tmp = path.with_name(path.name + ".partial")
    tmp.write_text(json.dumps(data, indent=1, sort_keys=True), encoding="utf-8")
    os.replace(tmp, path)


def encode_shard(cfg: DistEncodeConfig, images: list[Path], ctx: DistContext) -> dict[str, Any]:
    """Encode this rank's rows into ``out/shards/`` (resumable) and write its stats; return them."""
    rows = shard_indices(len(images), ctx)
    name = shard_name(ctx)
    shards = cfg.out / "shards"
    shards.mkdir(parents=True, exist_ok=True)
    result = encode_corpus(cfg.onnx, [images[i] for i in rows], cfg.out / "work" / name, cfg.encode,
                           out_path=shards / f"{name}.npy")
    stats = {
        "rank": ctx.rank, "rows": len(rows), "failed": [int(rows[i]) for i in result.failed],
        "seconds": result.seconds, "provider": result.provider,
        "chunks_encoded": result.chunks_encoded, "chunks_resumed": result.chunks_resumed,
    }
    _write_json(shards / f"{name}.json", stats)
    log.info("rank %d encoded %d rows in %.1f s (%.1f img/s)", ctx.rank, len(rows), result.seconds,
             len(rows) / max(result.seconds, 1e-9))
    return stats


def wait_for_all(ctx: DistContext, hours: float) -> None:
    """Block until every rank finished its shard (gloo's monitored barrier takes a long timeout)."""
    if ctx.enabled and dist.is_initialized() and dist.get_backend() == "gloo":
        dist.monitored_barrier(timeout=timedelta(hours=hours))
    else:
        barrier(ctx)


def merge_shards(cfg: DistEncodeConfig, n: int, world_size: int) -> tuple[np.ndarray, list[int]]:
    """Write ``out/images.npy`` in corpus order from every rank's shard; return it (memory-mapped), failed."""
    shards = cfg.out / "shards"
    parts = [DistContext(rank=r, world_size=world_size) for r in range(world_size)]
    first = np.load(shards / f"{shard_name(parts[0])}.npy", mmap_mode="r")
    dim = int(first.shape[1])
    target = cfg.out / IMAGES_NAME
    tmp = target.with_name(target.name + ".partial")
    out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float32, shape=(n, dim))
    failed: list[int] = []
    for part in parts:
        rows = shard_indices(n, part)
        shard = np.load(shards / f"{shard_name(part)}.npy", mmap_mode="r")
        if shard.shape != (len(rows), dim):
            raise ValueError(f"shard {shard_name(part)} has shape {shard.shape}, expected {(len(rows), dim)}")
        for start in range(0, len(rows), MERGE_BLOCK):
            out[rows[start:start + MERGE_BLOCK]] = shard[start:start + MERGE_BLOCK]
        stats = json.loads((shards / f"{shard_name(part)}.json").read_text(encoding="utf-8"))
        failed.extend(int(i) for i in stats["failed"])
    out.flush()
    del out
    os.replace(tmp, target)
    return np.load(target, mmap_mode="r"), sorted(failed)


def build_merged_index(cfg: DistEncodeConfig, vectors: np.ndarray, failed: list[int]) -> int:
    """Write ``out/images.usearch`` (key = corpus row, unreadable rows removed); return its size."""
    from space.vectorindex import build_index

    index = build_index(vectors, None, dtype=cfg.index_dtype)
    if failed:
        index.remove(np.asarray(failed, dtype=np.uint64))
    target = cfg.out / INDEX_NAME
    tmp = target.with_name(target.name + ".partial")
    index.save(str(tmp))
    os.replace(tmp, target)
    return len(index)


def run(cfg: DistEncodeConfig) -> dict[str, Any] | None:
    """This rank's part of the job; rank 0 returns the summary (also written to ``out/encode.json``)."""
    started = time.monotonic()
    images = read_image_list(cfg.images)
    if not images:
        raise ValueError(f"{cfg.images} lists no images")
    with process_group(backend="gloo") as ctx:
        encode_shard(cfg, images, ctx)
        wait_for_all(ctx, cfg.barrier_hours)
        if not ctx.is_main:
            return None
        merge_started = time.monotonic()
        vectors, failed = merge_shards(cfg, len(images), ctx.world_size)
        indexed = build_merged_index(cfg, vectors, failed)
        _write_json(cfg.out / FAILED_NAME, failed)
        per_rank = [json.loads((cfg.out / "shards" / f"{shard_name(DistContext(r, ctx.world_size))}.json")
                               .read_text(encoding="utf-8")) for r in range(ctx.world_size)]
        total = time.monotonic() - started
        summary = {
            "images": len(images), "dim": int(vectors.shape[1]), "failed": len(failed), "indexed": indexed,
            "world_size": ctx.world_size, "seconds": round(total, 3),
            "merge_seconds": round(time.monotonic() - merge_started, 3),
            "images_per_s": round(len(images) / total, 2),
            "ranks": [{k: s[k] for k in ("rank", "rows", "seconds", "provider", "chunks_encoded",
                                         "chunks_resumed")} for s in per_rank],
            "encode": asdict(cfg.encode),
        }
        _write_json(cfg.out / SUMMARY_NAME, summary)
        log.info("merged %d vectors from %d ranks into %s (%d indexed, %d failed) in %.1f s",
                 len(images), ctx.world_size, cfg.out, indexed, len(failed), total)
        return summary


@dataclass(frozen=True)
class FeaturesJob:
    """A features job: the backbone and its weights, the photo list, the output folder, encoder settings."""

    images: Path
    out: Path
    backbone: str = "bvlc"
    weights: Path | None = None
    encode: EncodeConfig = field(default_factory=EncodeConfig)
    barrier_hours: float = 24.0
    # Whose means the features are (train.image.levels); None: train all's default for the backbone.
    levels: tuple[str, ...] | None = None

    @property
    def feature_levels(self) -> tuple[str, ...]:
        """The levels encoded: :attr:`levels`, else pool4, 5a, 5b (BVLC) or 5b (torchvision)."""
        from train.image.features import DEFAULT_LEVELS, POOL5

        if self.levels is not None:
            return self.levels
        return DEFAULT_LEVELS if self.backbone == "bvlc" else POOL5


def run_features(job: FeaturesJob) -> dict[str, Any] | None:
    """This rank's share of a features job; rank 0 writes the ``--features`` folder and returns a summary."""
    from train.image.features import (
        BACKBONES,
        FeatureSpec,
        FeatureStore,
        encode_missing,
        missing,
        write_folder,
    )
    from train.image.photokeys import UNREADABLE, photo_keys
    from train.image.runtime import pick_runtime

    started = time.monotonic()
    photos = read_image_list(job.images)
    if not photos:
        raise ValueError(f"{job.images} lists no images")
    fingerprint = "none"
    if job.weights is not None and (job.weights / "SHA256SUMS").is_file():
        from train.image.googlenet import weights_fingerprint

        fingerprint = weights_fingerprint(job.weights)
    spec = FeatureSpec.of(BACKBONES.get(job.backbone, job.backbone), fingerprint, job.encode.crops,
                          job.feature_levels, job.encode.framing)
    job.out.mkdir(parents=True, exist_ok=True)
    with process_group(backend="gloo") as ctx:
        keys = photo_keys(photos, job.out / "photo-sha256.sqlite") if ctx.is_main else None
        keys = broadcast_object(keys, ctx)
        assert keys is not None
        store = FeatureStore(job.out / "store", spec)
        onnx_path: Path | None = None
        if ctx.is_main and pick_runtime(job.encode.runtime, job.encode.device) == "onnx" and missing(
                store.index(), keys).positions:
            from train.image.export import export_features

            onnx_path = job.out / f"features-{spec.key()}.onnx"
            if not onnx_path.is_file():
                export_features(job.backbone, job.weights, onnx_path, photos[:8], spec.levels)
        onnx_path = broadcast_object(onnx_path, ctx)
        barrier(ctx)

        def module() -> Any:
            from train.image.export import features_module

            return features_module(job.backbone, job.weights, spec.levels)

        todo = encode_missing(store, photos, keys, job.encode, rank=ctx.rank, world=ctx.world_size,
                              onnx_path=onnx_path, module=module)
        wait_for_all(ctx, job.barrier_hours)
        if not ctx.is_main:
            return None
        # One row per distinct readable photo the store holds (a photo no rank could read has none: `train
        # all --features` encodes it, or finds it unreadable, itself).
        seen: set[bytes] = set()
        firsts = []
        for i, k in enumerate(keys):
            key = bytes(k)
            if key != UNREADABLE and key not in seen:
                seen.add(key)
                firsts.append(i)
        wanted = keys[firsts]
        vectors, absent = store.gather(wanted)
        have = np.setdiff1d(np.arange(len(wanted)), np.asarray(absent, np.int64))
        write_folder(job.out, wanted[have], vectors[have], spec)
        total = time.monotonic() - started
        summary = {
            "photos": len(photos), "distinct": todo.distinct, "already": todo.already,
            "encoded": len(todo.positions), "rows": len(have),
            "unreadable": int((~keys.any(axis=1)).sum()) + len(absent), "world_size": ctx.world_size,
            "seconds": round(total, 3), "photos_per_s": round(len(todo.positions) / total, 2),
            "spec": asdict(spec), "encode": asdict(job.encode),
        }
        _write_json(job.out / SUMMARY_NAME, summary)
        log.info("wrote %d photos' features to %s (%s)", len(have), job.out, spec.describe())
        return summary


def build_parser() -> Parser:
    """The command line (run it under torchrun, or plainly for one process)."""
    p = Parser("train.image.encode_dist", (__doc__ or "").splitlines()[0])
    p.add_argument("--onnx", type=Path, default=None,
                   help="a bundle's exported image encoder: write its vectors and an index (else: features)")
    p.add_argument("--weights", type=Path, default=None, help="features: the BVLC GoogLeNet weights folder")
    p.add_argument("--backbone", choices=("bvlc", "torchvision"), default="bvlc",
                   help="features: the backbone")
    p.add_argument("--encode-crops", type=int, choices=CROPS, default=None,
                   help="views averaged per photo, as train all's --encode-crops (1; 2: the framed view and "
                   "its mirror; 10: the centre framing's crops and corners, mirrored). Default: features 2, "
                   "as train all's default; --onnx its bundle's")
    p.add_argument("--encode-framing", choices=FRAMINGS, default=None,
                   help="how a photo meets the network, as train all's --encode-framing: whole or centre "
                   "(default: features whole, the joint recipe's; --onnx the framing its bundle's manifest "
                   "records, for a vector must be framed as the bundle frames it)")
    p.add_argument("--image-levels", default=None, metavar="LEVELS",
                   help="features: the GoogLeNet levels whose means are concatenated, as train all's "
                   "--image-levels (default: pool4,5a,5b with bvlc, 5b with torchvision)")
    p.add_argument("--runtime", choices=("auto", "onnx", "torch"), default="auto",
                   help="features: torch on a GPU (auto), ONNX Runtime on the CPU")
    p.add_argument("--images", type=Path, required=True, help="text file, one image path per line")
    p.add_argument("--out", type=Path, required=True, help="output folder (shared by every node)")
    p.add_argument("--batch-size", type=int, default=32, help="images per encoder call")
    p.add_argument("--chunk-size", type=int, default=EncodeConfig.chunk_size,
                   help="images per chunk written (a killed run resumes at its last chunk)")
    p.add_argument("--threads", type=int, default=None,
                   help="ONNX Runtime threads per rank (default: the node's cores / ranks on the node)")
    p.add_argument("--decode-workers", type=int, default=None, help="decode threads per rank (same default)")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                   help="where ONNX Runtime encodes (auto: CUDA when it sees a GPU)")
    p.add_argument("--index-dtype", choices=("f32", "f16", "i8"), default="f16",
                   help="usearch index precision")
    p.add_argument("--barrier-hours", type=float, default=24.0,
                   help="how long a rank waits for the others before giving up")
    return p


def job_views(args: argparse.Namespace) -> tuple[int, str]:
    """(crops, framing): as asked; else a bundle encoder's own (its manifest beside it), or the features'
    default (train all's: 2 views, whole)."""
    if args.onnx is None:
        return args.encode_crops or JOINT_CROPS, args.encode_framing or JOINT_FRAMING
    if args.encode_crops is not None and args.encode_framing is not None:
        return args.encode_crops, args.encode_framing
    try:
        manifest = read_manifest(args.onnx.parent)
    except BundleInvalid:
        raise SettingError(f"{args.onnx} is not inside a bundle (no readable manifest beside it): "
                           "say how it frames photos with --encode-framing whole|centre and "
                           "--encode-crops N") from None
    return args.encode_crops or manifest_crops(manifest), args.encode_framing or manifest_framing(manifest)


def encode_config(args: argparse.Namespace) -> EncodeConfig:
    """Per-rank encoder settings; the defaults share the node's cores between its ranks."""
    ranks_here = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    share = max(1, (os.cpu_count() or 1) // ranks_here)
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    crops, framing = job_views(args)
    try:
        check_views(crops, framing)
    except ValueError as exc:
        raise SettingError(f"--encode-crops {crops} --encode-framing {framing}: {exc}") from None
    return EncodeConfig(
        batch_size=args.batch_size, chunk_size=args.chunk_size, threads=args.threads or share,
        decode_workers=args.decode_workers or share, device=args.device,
        device_id=local_rank % gpus if gpus else 0, crops=crops, framing=framing,
        runtime=args.runtime,
    )


def config_from_args(args: argparse.Namespace) -> DistEncodeConfig | FeaturesJob:
    """The job's frozen config: a bundle encoder's vectors (``--onnx``) or features."""
    encode = encode_config(args)
    if args.onnx is None:
        from train.image.features import normalise_levels

        levels = None
        if args.image_levels is not None:
            try:
                levels = normalise_levels([x.strip() for x in args.image_levels.split(",") if x.strip()])
            except ValueError as exc:
                raise SettingError(f"--image-levels {args.image_levels!r}: {exc}") from None
            if levels != ("5b",) and args.backbone != "bvlc":
                raise SettingError("--image-levels beyond 5b needs --backbone bvlc")
        return FeaturesJob(images=args.images, out=args.out, backbone=args.backbone, weights=args.weights,
                           encode=encode, barrier_hours=args.barrier_hours, levels=levels)
    return DistEncodeConfig(onnx=args.onnx, images=args.images, out=args.out, encode=encode,
                            index_dtype=args.index_dtype, barrier_hours=args.barrier_hours)


def main(argv: list[str] | None = None) -> int:
    """Entry point: ``python -m train.image.encode_dist`` (usually under torchrun)."""
    parser = build_parser()
    args = parser.parse(argv)
    rank = os.environ.get("RANK", "0")
    setup_logging(parser.log_settings(args), env_secrets(parser.env),
                  fmt=f"%(asctime)s rank{rank} %(levelname)s %(name)s: %(message)s")
    try:
        cfg = config_from_args(args)
    except SettingError as exc:
        fail(parser.prog, str(exc))
    summary = run(cfg) if isinstance(cfg, DistEncodeConfig) else run_features(cfg)
    if summary is not None:
        print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
