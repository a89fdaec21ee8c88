"""`train all`: ingest → filter → split → text → image → export → encode → index → eval → report → publish.

Each stage writes into the work dir under a name keyed by a hash of its inputs and config, and is
skipped (with a log line) when that output already exists: changing a filter re-runs the filter and
everything after it, never the ingest. The bundle is staged under ``<models>/.tmp-*`` and published
atomically (``space.bundle``); an empty corpus, or one the filters empty, raises before anything is staged.
"""

from __future__ import annotations

import importlib
import inspect
import json
import logging
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from space import bundle as bundle_format
from space.announce import announce_from_env
from space.errors import BundleInvalid, SpaceError
from train.config import PipelineConfig, config_hash, to_jsonable
from train.corpus import Post
from train.filters import FilterResult, run_filters
from train.ingest import IngestStats, ingest, load_posts, save_posts
from train.progress import ProgressReporter
from train.split import assign_splits
from train.text import TextResult, build_text_space

if TYPE_CHECKING:
    from train.distributed import DistContext

log = logging.getLogger(__name__)

DONE = "DONE.json"
PARITY_IMAGES = 8


class EmptyCorpus(SpaceError):
    """Nothing to train on: the corpus is empty or the filters dropped every post."""

    code = "empty_corpus"


class MissingStage(SpaceError):
    """A stage's implementation (owned by another module) is not installed or not importable."""

    code = "missing_stage"
    status = 500


def _need(module: str, name: str) -> Any:
    """Import ``module.name`` lazily, with a clear error when that part of the trainer is missing."""
    try:
        return getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as exc:
        raise MissingStage(f"the pipeline needs {module}.{name}, which is not available: {exc}") from exc


def corpus_fingerprint(path: Path) -> str:
    """A cheap fingerprint of the corpus files (names, sizes, mtimes): a changed corpus re-ingests."""
    path = path.resolve()
    if path.is_file():
        st = path.stat()
        return config_hash([path.name, st.st_size, st.st_mtime_ns])
    entries = []
    for p in sorted(path.rglob("*")):
        if p.is_file():
            st = p.stat()
            entries.append([p.relative_to(path).as_posix(), st.st_size, st.st_mtime_ns])
    return config_hash(entries)


@dataclass
class Stage:
    """One cached stage output directory."""

    name: str
    key: str
    dir: Path

    @property
    def done(self) -> bool:
        """Whether a previous run completed this exact stage."""
        return (self.dir / DONE).is_file()

    def mark_done(self, info: dict[str, Any]) -> None:
        """Record completion (written last, so a killed stage is redone)."""
        (self.dir / DONE).write_text(json.dumps(info, ensure_ascii=False, default=str), encoding="utf-8")

    def info(self) -> dict[str, Any]:
        """What :meth:`mark_done` recorded."""
        payload: dict[str, Any] = json.loads((self.dir / DONE).read_text(encoding="utf-8"))
        return payload


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
        key = config_hash(name, *parts)
        d = self.work / f"{name}-{key}"
        d.mkdir(parents=True, exist_ok=True)
        return Stage(name, key, d)

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

    # -- image side (other modules' functions, imported lazily) ------------------------------------
    def image_config(self) -> Any:
        """The image stage's config (quick preset under ``--quick``)."""
        if self.cfg.image is not None:
            return self.cfg.image
        image_config = _need("train.image_model", "ImageConfig")
        return image_config.quick_preset() if self.cfg.quick else image_config()

    def image(self, prev: Stage, text: TextResult, image_cfg: Any) -> tuple[Stage, Path]:
        """Train the GoogLeNet regressor onto the caption vectors (cached)."""
        train_regressor = _need("train.image_model", "train_regressor")
        weights = self.cfg.weights
        st = self.stage("image", prev.key, to_jsonable(image_cfg), str(weights))

        def run() -> dict[str, Any]:
            if weights is None:
                raise MissingStage("the image stage needs --weights (the BVLC GoogLeNet folder)")
            extra: dict[str, Any] = {}
            if "cache_dir" in inspect.signature(train_regressor).parameters:
                # Trunk activations depend on the images and views only: share them across image configs.
                extra["cache_dir"] = self.work / "trunk-cache"
            ckpt = train_regressor(
                image_cfg,
                [p.image for p in text.posts],
                text.vectors,
                [str(p.split) for p in text.posts],
                weights,
                st.dir,
                progress=self.progress.callback,
                **extra,
            )
            return {"checkpoint": str(ckpt)}

        info = self.run_stage(st, run)
        return st, Path(info["checkpoint"])

    def export(self, prev: Stage, checkpoint: Path, text: TextResult) -> tuple[Stage, Path, dict[str, Any]]:
        """Export the checkpoint to ONNX with a parity check on a few real images (cached)."""
        export_onnx = _need("train.export", "export_onnx")
        st = self.stage("export", prev.key)
        onnx_path = st.dir / bundle_format.ENCODER

        def run() -> dict[str, Any]:
            check = [p.image for p in text.posts[:PARITY_IMAGES]]
            return {"parity": export_onnx(checkpoint, onnx_path, check)}

        info = self.run_stage(st, run)
        return st, onnx_path, info["parity"]

    def quantize(self, prev: Stage, onnx_path: Path, text: TextResult) -> tuple[Path | None, dict[str, Any]]:
        """A static int8 copy of the encoder, published only when faithful to fp32 (cached)."""
        quantize_encoder = _need("train.quantize", "quantize_encoder")
        quantize_config = _need("train.quantize", "QuantizeConfig")
        qcfg = quantize_config.quick_preset() if self.cfg.quick else quantize_config(speed_seconds=0.0)
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
        encode_images = _need("train.encode", "encode_images")
        crops = self.cfg.encode_crops
        # One crop keeps the key it had before crops existed (cached encodings stay valid).
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
            shutil.rmtree(st.dir / "chunks", ignore_errors=True)  # images.npy now holds them all
            return {"failed": [int(i) for i in failed]}

        info = self.run_stage(st, run)
        return np.load(st.dir / bundle_format.IMAGE_VECTORS), list(info["failed"])

    # -- under torchrun -----------------------------------------------------------------------------
    def _sync(self) -> None:
        """Under torchrun, wait for every rank: rank 0 has then cached the text stages the others reuse."""
        if self.dist is not None and self.dist.enabled:
            from train.distributed import barrier

            barrier(self.dist)

    def _through_text(self) -> tuple[int, dict[str, Any], dict[str, Any], str, Stage, TextResult]:
        """Ingest, filter, split and text: posts read, their reports (ingest, filter, split method), text."""
        ingest_st, posts, ingest_stats = self.ingest()
        filter_st, kept, filter_report = self.filter(ingest_st, posts)
        split_st, kept, split_method = self.split(filter_st, kept)
        text_st, text = self.text(split_st, kept)
        return len(posts), ingest_stats, filter_report, split_method, text_st, text

    def follow(self) -> Path:
        """A torchrun rank other than 0: the text stages from rank 0's cache, then its share of the CNN."""
        self._sync()
        *_, text_st, text = self._through_text()
        return self.image(text_st, text, self.image_config())[1]

    # -- the whole run -----------------------------------------------------------------------------
    def run(self) -> Path:
        """Run every stage and publish the bundle; return its path."""
        cfg = self.cfg
        removed = bundle_format.clean_staging(cfg.models)
        if removed:
            log.info("removed %d stale staging folders in %s", removed, cfg.models)
        n_posts, ingest_stats, filter_report, split_method, text_st, text = self._through_text()
        self._sync()
        image_cfg = self.image_config()
        image_st, checkpoint = self.image(text_st, text, image_cfg)
        export_st, onnx_path, parity = self.export(image_st, checkpoint, text)
        int8_path, int8_report = (self.quantize(export_st, onnx_path, text) if cfg.encoder_int8
                                  else (None, {"published": False, "reason": "disabled"}))
        vectors, failed = self.encode(export_st, onnx_path, text)

        failed_set = set(failed)
        final_posts = [p for i, p in enumerate(text.posts) if i not in failed_set]
        final_vectors = vectors[[i for i in range(len(text.posts)) if i not in failed_set]]
        if not final_posts:
            raise EmptyCorpus("No kept image could be encoded: nothing to publish.")
        report = _final_filter_report(filter_report, ingest_stats, text, failed, split_method, final_posts)
        centering = None
        if getattr(image_cfg, "centre", False):
            # Retrieval-time centring (space.centering): the means of the training split's vectors.
            mean_vectors = _need("train.evaluate", "mean_vectors")
            final_targets = text.vectors[[i for i in range(len(text.posts)) if i not in failed_set]]
            train_rows = [i for i, p in enumerate(final_posts) if p.split == "train"] or list(
                range(len(final_posts)))
            centering = mean_vectors(final_vectors[train_rows], final_targets[train_rows])

        build_indexes = _need("space.vectorindex", "build_bundle_indexes")
        evaluate_bundle = _need("train.evaluate", "evaluate_bundle")
        write_report = _need("train.report", "write_report")
        report_config = _need("train.report", "ReportConfig")
        rcfg = report_config(mosaic_sizes=(1024,), show_progress=False) if cfg.quick else report_config()

        with bundle_format.staging(cfg.models) as tmp:
            self.progress.start("stage-bundle")
            text.space.save(tmp)
            np.save(tmp / bundle_format.IMAGE_VECTORS, final_vectors.astype(np.float32))
            shutil.copyfile(onnx_path, tmp / bundle_format.ENCODER)
            if int8_path is not None:
                shutil.copyfile(int8_path, tmp / int8_path.name)
            _write_items(tmp / bundle_format.IMAGE_META, cfg.ingest.corpus, final_posts)
            centering_file = centering.save(tmp) if centering is not None else None
            self.progress.end()

            self.progress.start("index")
            build_indexes(tmp, dtype=cfg.index_dtype)
            self.progress.end()

            self.progress.start("eval")
            try:
                metrics: dict[str, Any] = evaluate_bundle(tmp)
            except BundleInvalid as exc:
                log.warning("no evaluation: %s", exc)
                metrics = {"error": str(exc)}
            self.progress.end()
            log.info("eval: %s", json.dumps(metrics)[:400])

            self.progress.start("report")
            write_report(
                tmp / bundle_format.REPORT_DIR,
                final_posts,
                text.space,
                final_vectors,
                report,
                rcfg,
                progress=None,
            )
            self.progress.end()

            self.progress.start("publish")
            manifest = {
                "config": {
                    "ingest": to_jsonable(cfg.ingest),
                    "filters": to_jsonable(cfg.filters),
                    "split": to_jsonable(cfg.split),
                    "text": to_jsonable(cfg.text),
                    "image": to_jsonable(image_cfg),
                    "report": to_jsonable(rcfg),
                    "quick": cfg.quick,
                    "index_dtype": cfg.index_dtype,
                    "encode_crops": cfg.encode_crops,
                },
                "filter_report": report,
                "metrics": metrics,
                "corpus": {
                    "path": str(cfg.ingest.corpus.resolve()),
                    "format": cfg.ingest.format,
                    "n_posts": n_posts,
                    "n_kept": len(final_posts),
                },
                "encoder": parity,
                "encoder_int8": int8_report,
                "centering": centering_file,
                # build_bundle_indexes put centred vectors in images.usearch (what the engine checks).
                "image_index_centred": centering_file is not None,
                "text": text.stats,
                "timings": self.timings,
            }
            final = bundle_format.publish(tmp, cfg.models, manifest, activate_it=cfg.activate)
            self.progress.end()
        if cfg.activate:
            # Engine replicas sharing REDIS_URL switch now instead of at their next ACTIVE poll.
            announce_from_env(final.name)
        return final


def _final_filter_report(
    filter_report: dict[str, Any],
    ingest_stats: dict[str, Any],
    text: TextResult,
    failed: Sequence[int],
    split_method: str,
    final_posts: Sequence[Post],
) -> dict[str, Any]:
    """The filter report as published: later drops (no known word, encode failures) included."""
    report = json.loads(json.dumps(filter_report))
    report["dropped"]["no_known_words"] = len(text.dropped_ids)
    report["dropped"]["encode_failed"] = len(failed)
    report["kept"] = len(final_posts)
    langs: dict[str, int] = {}
    for p in final_posts:
        langs[p.lang or "unknown"] = langs.get(p.lang or "unknown", 0) + 1
    report["languages"] = dict(sorted(langs.items(), key=lambda kv: -kv[1]))
    report["ingest"] = ingest_stats
    report["split_method"] = split_method
    return report


def _write_items(path: Path, corpus: Path, posts: Sequence[Post]) -> None:
    """``images.json``: row i of images.npy is key i."""
    root = corpus.resolve()
    items = [
        {
            "key": i,
            "post_id": p.id,
            "path": str(Path(p.image).resolve()),
            "caption": p.caption,
            "captions": list(p.reference_captions),
            "split": p.split,
            "lang": p.lang,
            "user": p.user,
        }
        for i, p in enumerate(posts)
    ]
    payload = {"corpus_root": str(root if root.is_dir() else root.parent), "items": items}
    path.write_text(json.dumps(payload, ensure_ascii=False), encoding="utf-8")


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
