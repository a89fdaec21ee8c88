"""`train all`: ingest → filter → split → text → image → export → encode → index → eval → report → publish.

Each stage writes into the work dir under a name keyed by a hash of its inputs and config, and is
skipped (with a log line) when that output already exists: changing a filter re-runs the filter and
everything after it, never the ingest. The bundle is staged under ``<models>/.tmp-*`` and published
atomically (``space.bundle``); an empty corpus, or one the filters empty, raises before anything is staged.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from space import bundle as bundle_format
from space.announce import announce_from_env
from train.assemble import (
    Kept,
    TextSide,
    bundle_manifest,
    evaluate_staged,
    published_filter_report,
    stage_files,
)
from train.config import PipelineConfig
from train.corpus.filters import SEED as LANGDETECT_SEED
from train.corpus.filters import FilterResult, LanguageDetector, run_filters
from train.corpus.ingest import IngestStats, ingest, load_posts, save_posts
from train.corpus.language_cache import cache_folder
from train.corpus.posts import EmptyCorpus, Post
from train.corpus.split import assign_splits
from train.progress import ProgressReporter
from train.stages import Stage, StageRunner, corpus_fingerprint
from train.text.word2vec import TextResult, build_text_space

if TYPE_CHECKING:
    # Imported where they run: torch (distributed), the recipes and matplotlib (report) are slow to import,
    # and the text stages (`train ingest|filter|split|text`) need none of them.
    from train.image.distributed import DistContext
    from train.recipes.joint.recipe import JointRecipe
    from train.recipes.seed.recipe import SeedRecipe
    from train.report import ReportConfig

log = logging.getLogger(__name__)


class Pipeline(StageRunner):
    """The stages of one run: the text side here, the image side in the configured recipe."""

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
            # Detections are cached apart from the stage (keyed by the text alone): a killed or changed
            # filter stage reuses every caption detected before.
            languages = self.cfg.filters.languages
            detector = LanguageDetector(cache_folder(self.work, LANGDETECT_SEED)) if languages else None
            result: FilterResult = run_filters(posts, self.cfg.filters, self.progress.callback, detector)
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

    # -- under torchrun -----------------------------------------------------------------------------
    def _sync(self) -> None:
        """Under torchrun, wait for every rank: rank 0 has then cached the text stages the others reuse."""
        if self.dist is not None and self.dist.enabled:
            from train.image.distributed import barrier

            barrier(self.dist)

    def _through_text(self) -> TextSide:
        """Ingest, filter, split and text, with what the published bundle reports of them."""
        ingest_st, posts, ingest_stats = self.ingest()
        filter_st, kept, filter_report = self.filter(ingest_st, posts)
        n_read = len(posts)
        del posts  # every post read (600,000 at the original's scale): only the kept ones go on
        split_st, kept, split_method = self.split(filter_st, kept)
        text_st, text = self.text(split_st, kept)
        return TextSide(n_read, ingest_stats, filter_report, split_method, text_st, text)

    def follow(self) -> Path:
        """A torchrun rank other than 0: the text stages from rank 0's cache, then its share of the image
        side's heavy stage (the seed recipe's CNN training; the joint recipe's features), rank 0 the rest."""
        self._sync()
        side = self._through_text()
        if self.cfg.recipe != "seed":
            from train.recipes.joint.recipe import JointRecipe

            JointRecipe(self).features_share(side.text.posts)
            return side.stage.dir
        from train.recipes.seed.recipe import SeedRecipe

        return SeedRecipe(self).train_share(side)

    # -- the whole run -----------------------------------------------------------------------------
    def run(self) -> Path:
        """Run every stage and publish the bundle; return its path."""
        cfg = self.cfg
        removed = bundle_format.clean_staging(cfg.models)
        if removed:
            log.info("removed %d stale staging folders in %s", removed, cfg.models)
        side = self._through_text()
        self._sync()
        built = self.recipe().build(side)
        image_side, kept, space, hashtags, centering = (built.image_side, built.kept, built.space,
                                                        built.hashtags, built.centering)
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

    def recipe(self) -> JointRecipe | SeedRecipe:
        """The configured recipe's image side (imported here: the text stages need neither)."""
        if self.cfg.recipe == "seed":
            from train.recipes.seed.recipe import SeedRecipe

            return SeedRecipe(self)
        from train.recipes.joint.recipe import JointRecipe

        return JointRecipe(self)

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
    with pipe.exclusive():
        return _text_stages(pipe, until)


def _text_stages(pipe: Pipeline, until: str) -> dict[str, Any]:
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
    pipe = Pipeline(cfg, progress, dist)
    with pipe.exclusive():
        return pipe.run()


def train_cnn_share(cfg: PipelineConfig, dist: DistContext) -> Path:
    """`train all` on a torchrun rank other than 0 (rank 0 runs :func:`build_bundle` and publishes)."""
    return Pipeline(cfg, ProgressReporter(None, bars=False), dist).follow()


__all__ = ["EmptyCorpus", "IngestStats", "Pipeline", "build_bundle", "run_text_stages",
           "train_cnn_share"]
