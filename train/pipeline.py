"""`train all`: ingest → filter → split → text → image → export → encode → index → eval → report → publish.

Each stage writes into the work dir under a name keyed by a hash of its inputs and config, and is
skipped (with a log line) when that output already exists: changing a filter re-runs the filter and
everything after it, never the ingest. The bundle is staged under ``<models>/.tmp-*`` and published
atomically (``space.bundle``); an empty corpus, or one the filters empty, raises before anything is staged.
"""

from __future__ import annotations

import logging
import shutil
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from space import bundle as bundle_format
from space.announce import announce_from_env
from space.errors import SpaceError
from train.assemble import (
    ImageSide,
    Kept,
    TextSide,
    bundle_manifest,
    centering_for,
    evaluate_staged,
    published_filter_report,
    stage_files,
)
from train.config import PipelineConfig, to_jsonable
from train.corpus import EmptyCorpus, Post
from train.encode import encode_images
from train.filters import FilterResult, run_filters
from train.image_config import ImageConfig
from train.ingest import IngestStats, ingest, load_posts, save_posts
from train.progress import ProgressReporter
from train.split import assign_splits
from train.stages import Stage, corpus_fingerprint
from train.text import TextResult, build_text_space

if TYPE_CHECKING:
    # Imported where they run: torch (distributed) and matplotlib (report) are slow to import, and the
    # text stages (`train ingest|filter|split|text`) need neither.
    from train.distributed import DistContext
    from train.report import ReportConfig

log = logging.getLogger(__name__)

PARITY_IMAGES = 8


class MissingStage(SpaceError):
    """A stage cannot run: an input it needs was not given (the image stage's GoogLeNet weights)."""

    code = "missing_stage"
    status = 500


class Pipeline:
    """The stages of one run, sharing a work dir, a progress reporter and the previous stage's key."""

    def __init__(self, cfg: PipelineConfig, progress: ProgressReporter | None = None,
                 dist: DistContext | None = None) -> None:
        self.cfg = cfg
        self.progress = progress or ProgressReporter(cfg.progress_file)
        self.work = cfg.work_dir
        self.work.mkdir(parents=True, exist_ok=True)
        self.timings: dict[str, float] = {}
        self.dist = dist  # under torchrun: this rank's place; rank 0 runs every stage, the others the CNN

    def stage(self, name: str, *parts: Any) -> Stage:
        """The cache directory of ``name`` for these inputs/config parts."""
        return Stage.under(self.work, name, *parts)

    def run_stage(self, stage: Stage, fn: Callable[[], dict[str, Any]]) -> dict[str, Any]:
        """Run ``fn`` unless ``stage`` is already done; log timing either way."""
        self.progress.start(stage.name)
        t0 = time.monotonic()
        if stage.done:
            log.info("%s: inputs and config unchanged, reusing %s", stage.name, stage.dir)
            info = stage.info()
        else:
            info = fn()
            if self.dist is None or self.dist.is_main:
                stage.mark_done(info)
        self.progress.end()
        self.timings[stage.name] = round(time.monotonic() - t0, 2)
        log.info("%s: %.1fs", stage.name, self.timings[stage.name])
        return info

    # -- text side ---------------------------------------------------------------------------------
    def ingest(self) -> tuple[Stage, list[Post], dict[str, Any]]:
        """Read the corpus (cached)."""
        icfg = self.cfg.ingest
        st = self.stage("ingest", icfg, corpus_fingerprint(icfg.corpus))

        def run() -> dict[str, Any]:
            posts, stats = ingest(icfg, self.progress.callback)
            save_posts(posts, st.dir / "posts.jsonl")
            return {"stats": stats.as_dict()}

        info = self.run_stage(st, run)
        posts = load_posts(st.dir / "posts.jsonl")
        if not posts:
            # Say what was skipped: "holds no post" alone hides 5,000 broken lines or missing images.
            bad = info["stats"].get("bad") or {}
            skipped = f" (skipped records: {bad})" if bad else ""
            raise EmptyCorpus(
                f"The corpus at {icfg.corpus} ({icfg.format}) holds no post{skipped}: nothing to train on."
            )
        return st, posts, info["stats"]

    def filter(self, prev: Stage, posts: list[Post]) -> tuple[Stage, list[Post], dict[str, Any]]:
        """Apply the filters (cached)."""
        st = self.stage("filter", prev.key, self.cfg.filters)

        def run() -> dict[str, Any]:
            result: FilterResult = run_filters(posts, self.cfg.filters, self.progress.callback)
            save_posts(result.kept, st.dir / "kept.jsonl")
            result.save(st.dir / "filter_report.json")
            print(result.summary(), flush=True)
            return {"report": result.report}

        info = self.run_stage(st, run)
        kept = load_posts(st.dir / "kept.jsonl")
        if not kept:
            raise EmptyCorpus(
                f"The filters dropped all {len(posts)} posts ({info['report']['dropped']}): "
                "nothing to train on."
            )
        return st, kept, info["report"]

    def split(self, prev: Stage, posts: list[Post]) -> tuple[Stage, list[Post], str]:
        """Assign train/val/test (cached)."""
        st = self.stage("split", prev.key, self.cfg.split)

        def run() -> dict[str, Any]:
            out, method = assign_splits(posts, self.cfg.split)
            save_posts(out, st.dir / "posts.jsonl")
            return {"method": method}

        info = self.run_stage(st, run)
        return st, load_posts(st.dir / "posts.jsonl"), str(info["method"])

    def text(self, prev: Stage, posts: list[Post]) -> tuple[Stage, TextResult]:
        """Word2Vec + TF-IDF + caption vectors (cached; the worker count is not part of the key)."""
        st = self.stage("text", prev.key, replace(self.cfg.text, workers=0))

        def run() -> dict[str, Any]:
            result = build_text_space(posts, self.cfg.text, self.progress.callback)
            result.save(st.dir)
            return {"stats": result.stats}

        self.run_stage(st, run)
        result = TextResult.load(st.dir, posts)
        if not result.posts:
            raise EmptyCorpus("No kept post has a caption word in the vocabulary: nothing to train on.")
        return st, result

    # -- image side --------------------------------------------------------------------------------------
    def image_config(self) -> ImageConfig:
        """The image stage's config (quick preset under ``--quick``)."""
        if self.cfg.image is not None:
            return self.cfg.image
        return ImageConfig.quick_preset() if self.cfg.quick else ImageConfig()

    def image(self, prev: Stage, text: TextResult, image_cfg: ImageConfig) -> tuple[Stage, Path]:
        """Train the GoogLeNet regressor onto the caption vectors (cached)."""
        weights = self.cfg.weights
        st = self.stage("image", prev.key, to_jsonable(image_cfg), str(weights))

        def run() -> dict[str, Any]:
            if weights is None and image_cfg.backbone == "bvlc":  # torchvision's downloads its own
                raise MissingStage("the image stage needs --weights (the BVLC GoogLeNet folder)")
            from train.image_model import train_regressor

            ckpt = train_regressor(
                image_cfg,
                [p.image for p in text.posts],
                text.vectors,
                [str(p.split) for p in text.posts],
                weights,
                st.dir,
                progress=self.progress.callback,
                # Trunk activations depend on the images and views only: share them across image configs.
                cache_dir=self.work / "trunk-cache",
            )
            return {"checkpoint": str(ckpt)}

        info = self.run_stage(st, run)
        return st, Path(info["checkpoint"])

    def export(self, prev: Stage, checkpoint: Path, text: TextResult) -> tuple[Stage, Path, dict[str, Any]]:
        """Export the checkpoint to ONNX with a parity check on a few real images (cached)."""
        st = self.stage("export", prev.key)
        onnx_path = st.dir / bundle_format.ENCODER

        def run() -> dict[str, Any]:
            from train.export import export_onnx

            check = [p.image for p in text.posts[:PARITY_IMAGES]]
            return {"parity": export_onnx(checkpoint, onnx_path, check)}

        info = self.run_stage(st, run)
        return st, onnx_path, info["parity"]

    def quantize(self, prev: Stage, onnx_path: Path, text: TextResult) -> tuple[Path | None, dict[str, Any]]:
        """A static int8 copy of the encoder, published only when faithful to fp32 (cached)."""
        from train.quantize import QuantizeConfig, quantize_encoder

        qcfg = QuantizeConfig.quick_preset() if self.cfg.quick else QuantizeConfig(speed_seconds=0.0)
        st = self.stage("quantize", prev.key, to_jsonable(qcfg))
        out = st.dir / bundle_format.INT8_ENCODER

        def run() -> dict[str, Any]:
            calibration = [p.image for p in text.posts if p.split == "train"]
            check = [p.image for p in text.posts if p.split != "train"] or calibration[-qcfg.check_images:]
            return {"report": quantize_encoder(onnx_path, out, calibration, check, qcfg)}

        report = dict(self.run_stage(st, run)["report"])
        return (out if report.get("published") and out.is_file() else None), report

    def encode(self, prev: Stage, onnx_path: Path, text: TextResult) -> tuple[np.ndarray, list[int]]:
        """Every kept image through the exported encoder (cached)."""
        crops = self.cfg.crops
        # With one crop the key leaves crops out, so encodings cached before the option existed stay valid.
        st = self.stage("encode", prev.key, self.cfg.encode_batch_size, *([crops] if crops != 1 else []))

        def run() -> dict[str, Any]:
            vectors, failed = encode_images(
                onnx_path,
                [p.image for p in text.posts],
                self.cfg.encode_batch_size,
                progress=self.progress.callback,
                work_dir=st.dir / "chunks",  # a killed run resumes from its last finished chunk
                crops=crops,
            )
            np.save(st.dir / bundle_format.IMAGE_VECTORS, np.asarray(vectors, dtype=np.float32))
            shutil.rmtree(st.dir / "chunks", ignore_errors=True)  # images.npy holds them all
            return {"failed": [int(i) for i in failed]}

        info = self.run_stage(st, run)
        return np.load(st.dir / bundle_format.IMAGE_VECTORS), list(info["failed"])

    # -- under torchrun -----------------------------------------------------------------------------
    def _sync(self) -> None:
        """Under torchrun, wait for every rank: rank 0 has then cached the text stages the others reuse."""
        if self.dist is not None and self.dist.enabled:
            from train.distributed import barrier

            barrier(self.dist)

    def _through_text(self) -> TextSide:
        """Ingest, filter, split and text, with what the published bundle reports of them."""
        ingest_st, posts, ingest_stats = self.ingest()
        filter_st, kept, filter_report = self.filter(ingest_st, posts)
        split_st, kept, split_method = self.split(filter_st, kept)
        text_st, text = self.text(split_st, kept)
        return TextSide(len(posts), ingest_stats, filter_report, split_method, text_st, text)

    def follow(self) -> Path:
        """A torchrun rank other than 0: the text stages from rank 0's cache, then its share of the CNN
        (the seed recipe's; the joint recipe trains no CNN, so rank 0 does all of it)."""
        self._sync()
        side = self._through_text()
        if self.cfg.recipe != "seed":
            return side.stage.dir
        return self.image(side.stage, side.text, self.image_config())[1]

    # -- the whole run -----------------------------------------------------------------------------
    def run(self) -> Path:
        """Run every stage and publish the bundle; return its path."""
        cfg = self.cfg
        removed = bundle_format.clean_staging(cfg.models)
        if removed:
            log.info("removed %d stale staging folders in %s", removed, cfg.models)
        side = self._through_text()
        self._sync()
        if cfg.recipe == "seed":
            image_side, export_st = self.train_image_side(side)
            kept = self.encode_kept(export_st, image_side, side.text)
            space, hashtags = side.text.space, None
            centering = centering_for(self.image_config().centre, kept)
        else:
            from train.joint_recipe import JointRecipe

            built = JointRecipe(self).build(side)
            image_side, kept, space, hashtags = built.image_side, built.kept, built.space, built.hashtags
            centering = None  # the joint space is trained on normalised vectors: centring measured no gain
        report = published_filter_report(side.filter_report, side.ingest_stats, len(side.text.dropped_ids),
                                         kept.failed, side.split_method, kept.posts)
        with bundle_format.staging(cfg.models) as tmp:
            with self.progress.phase("stage-bundle"):
                centering_file = stage_files(tmp, space, image_side, kept, cfg.ingest.corpus, centering,
                                             hashtags)
            with self.progress.phase("index"):
                from space.vectorindex import build_bundle_indexes

                build_bundle_indexes(tmp, dtype=cfg.index_dtype)
            with self.progress.phase("eval"):
                metrics = evaluate_staged(tmp, cfg)
            with self.progress.phase("report"):
                rcfg = self.report(tmp, side.text, kept, report)
            with self.progress.phase("publish"):
                manifest = bundle_manifest(cfg, side, image_side, kept, report, rcfg, metrics, centering_file,
                                           self.timings)
                published = bundle_format.publish(tmp, cfg.models, manifest, activate_it=cfg.activate)
        if cfg.activate:
            # Engine replicas sharing REDIS_URL switch now instead of at their next ACTIVE poll.
            announce_from_env(published.name)
        return published

    def train_image_side(self, side: TextSide) -> tuple[ImageSide, Stage]:
        """Train the regressor, export it (and its int8 copy); the encoder and the export stage."""
        image_cfg = self.image_config()
        image_st, checkpoint = self.image(side.stage, side.text, image_cfg)
        export_st, onnx_path, parity = self.export(image_st, checkpoint, side.text)
        int8_path, int8_report = (self.quantize(export_st, onnx_path, side.text) if self.cfg.encoder_int8
                                  else (None, {"published": False, "reason": "disabled"}))
        config = {"recipe": "seed", **to_jsonable(image_cfg)}
        return ImageSide(config, onnx_path, parity, int8_path, int8_report), export_st

    def encode_kept(self, export_st: Stage, image_side: ImageSide, text: TextResult) -> Kept:
        """Encode every text-side post; those whose image fails to encode leave the bundle."""
        vectors, failed = self.encode(export_st, image_side.onnx, text)
        failed_set = set(failed)
        rows = [i for i in range(len(text.posts)) if i not in failed_set]
        if not rows:
            raise EmptyCorpus("No kept image could be encoded: nothing to publish.")
        return Kept([text.posts[i] for i in rows], vectors[rows], text.vectors[rows], failed)

    def report(self, tmp: Path, text: TextResult, kept: Kept, filter_report: dict[str, Any]) -> ReportConfig:
        """The staged bundle's ``report/``; returns the report config used (one mosaic size when quick)."""
        from train.report import ReportConfig, write_report

        places = self.cfg.topic.report_places() if self.cfg.topic is not None else {}  # its attractions
        rcfg = (ReportConfig(mosaic_sizes=(1024,), show_progress=False, **places) if self.cfg.quick
                else ReportConfig(**places))
        write_report(tmp / bundle_format.REPORT_DIR, kept.posts, text.space, kept.vectors, filter_report,
                     rcfg, progress=None)
        return rcfg


def run_text_stages(
    cfg: PipelineConfig, until: str, progress: ProgressReporter | None = None
) -> dict[str, Any]:
    """Run ingest … ``until`` (one of ingest, filter, split, text) with caching; return a summary."""
    pipe = Pipeline(cfg, progress)
    ingest_st, posts, stats = pipe.ingest()
    summary: dict[str, Any] = {"work": str(pipe.work), "ingest": {"posts": len(posts), **stats}}
    if until == "ingest":
        return summary
    filter_st, kept, report = pipe.filter(ingest_st, posts)
    summary["filter"] = report
    if until == "filter":
        return summary
    split_st, kept, method = pipe.split(filter_st, kept)
    counts: dict[str, int] = {}
    for p in kept:
        counts[str(p.split)] = counts.get(str(p.split), 0) + 1
    summary["split"] = {"method": method, "counts": counts}
    if until == "split":
        return summary
    text_st, text = pipe.text(split_st, kept)
    summary["text"] = {**text.stats, "dir": str(text_st.dir)}
    return summary


def build_bundle(cfg: PipelineConfig, progress: ProgressReporter | None = None,
                 dist: DistContext | None = None) -> Path:
    """The whole chain; returns the published bundle's path (under torchrun: on rank 0)."""
    return Pipeline(cfg, progress, dist).run()


def train_cnn_share(cfg: PipelineConfig, dist: DistContext) -> Path:
    """`train all` on a torchrun rank other than 0 (rank 0 runs :func:`build_bundle` and publishes)."""
    return Pipeline(cfg, ProgressReporter(None, bars=False), dist).follow()


__all__ = ["EmptyCorpus", "IngestStats", "MissingStage", "Pipeline", "build_bundle", "run_text_stages",
           "train_cnn_share"]
