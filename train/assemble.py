"""The staged bundle's contents, from the stage outputs (``train.pipeline`` stages and publishes it).

What reaches the bundle: the kept posts whose image encoded (:class:`Kept`), the exported encoder and its
int8 copy (:class:`ImageSide`), the text space, ``images.json``, the optional centring means, the filter
report as published and the evaluation of the staged folder.
"""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from space import bundle as bundle_format
from space.centering import Centering
from space.errors import BundleInvalid
from space.hashtags import Hashtagger
from space.textspace import TextSpace
from space.version import __version__
from train.config import PipelineConfig, to_jsonable
from train.corpus.posts import Post
from train.evaluate import evaluate_bundle, mean_vectors
from train.stages import Stage
from train.text.word2vec import TextResult

if TYPE_CHECKING:
    from train.report import ReportConfig  # matplotlib: imported where the report is drawn

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TextSide:
    """The text stages' results: posts read, the reports the bundle publishes, the text stage and space."""

    n_posts: int
    ingest_stats: dict[str, Any]
    filter_report: dict[str, Any]
    split_method: str
    stage: Stage
    text: TextResult


@dataclass(frozen=True)
class ImageSide:
    """The image stages' results: their config (as JSON), the exported encoder and its parity, the int8
    copy if kept."""

    config: dict[str, Any]
    onnx: Path
    parity: dict[str, Any]
    int8: Path | None
    int8_report: dict[str, Any]


@dataclass(frozen=True)
class Kept:
    """What the bundle holds: the encoded posts, their image vectors and caption vectors (rows aligned),
    and the text-side rows that failed to encode."""

    posts: list[Post]
    vectors: np.ndarray
    targets: np.ndarray
    failed: list[int]


@dataclass(frozen=True)
class RecipeBuild:
    """What a recipe hands the pipeline: the image side, the kept rows, the text space the bundle serves
    (joint: with its joint word vectors), the hashtag model (joint only) and the centring means (seed)."""

    image_side: ImageSide
    kept: Kept
    space: TextSpace
    hashtags: Hashtagger | None
    centering: Centering | None


def centering_for(centre: bool, kept: Kept) -> Centering | None:
    """Retrieval-time centring (``space.centering``) if asked for: the training split's means."""
    if not centre:
        return None
    train_rows = [i for i, p in enumerate(kept.posts) if p.split == "train"] or list(range(len(kept.posts)))
    return mean_vectors(kept.vectors[train_rows], kept.targets[train_rows])


def published_filter_report(
    filter_report: dict[str, Any],
    ingest_stats: dict[str, Any],
    dropped_no_known_words: int,
    failed: Sequence[int],
    split_method: str,
    final_posts: Sequence[Post],
) -> dict[str, Any]:
    """The filter report as published: later drops (no known word, encode failures) included."""
    report = json.loads(json.dumps(filter_report))
    report["dropped"]["no_known_words"] = dropped_no_known_words
    report["dropped"]["encode_failed"] = len(failed)
    report["kept"] = len(final_posts)
    langs: dict[str, int] = {}
    for p in final_posts:
        langs[p.lang or "unknown"] = langs.get(p.lang or "unknown", 0) + 1
    report["languages"] = dict(sorted(langs.items(), key=lambda kv: -kv[1]))
    report["ingest"] = ingest_stats
    report["split_method"] = split_method
    return report


def stage_files(tmp: Path, space: TextSpace, image_side: ImageSide, kept: Kept, corpus: Path,
                centering: Centering | None, hashtags: Hashtagger | None = None) -> str | None:
    """Write the bundle's files into the staging folder ``tmp``; the centring file's name, if any.

    With ``hashtags`` (the joint recipe) the bundle also holds the hashtag model and each post's caption
    vector in the joint space (``captions.npy``: the engine ranks a text query's images by both).
    """
    space.save(tmp)
    np.save(tmp / bundle_format.IMAGE_VECTORS, kept.vectors.astype(np.float32))
    if hashtags is not None:
        hashtags.save(tmp)
        np.save(tmp / bundle_format.CAPTION_VECTORS, kept.targets.astype(np.float32))
    shutil.copyfile(image_side.onnx, tmp / bundle_format.ENCODER)
    if image_side.int8 is not None:
        shutil.copyfile(image_side.int8, tmp / image_side.int8.name)
    write_items(tmp / bundle_format.IMAGE_META, corpus, kept.posts)
    return centering.save(tmp) if centering is not None else None


def write_items(path: Path, corpus: Path, posts: Sequence[Post]) -> None:
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
            "taken_at": p.taken_at,
        }
        for i, p in enumerate(posts)
    ]
    payload = {"corpus_root": str(root if root.is_dir() else root.parent), "items": items}
    path.write_text(json.dumps(payload, ensure_ascii=False), encoding="utf-8")


def evaluate_staged(tmp: Path, cfg: PipelineConfig) -> dict[str, Any]:
    """The staged bundle's retrieval metrics (an error entry when it cannot be evaluated)."""
    try:
        metrics: dict[str, Any] = evaluate_bundle(tmp, {"ingest": to_jsonable(cfg.ingest),
                                                        "encode_crops": cfg.crops,
                                                        "encode_framing": cfg.framing})
    except BundleInvalid as exc:
        log.warning("no evaluation: %s", exc)
        metrics = {"error": str(exc)}
    log.info("eval: %s", json.dumps(metrics)[:400])
    return metrics


def bundle_manifest(cfg: PipelineConfig, side: TextSide, image_side: ImageSide, kept: Kept,
                    filter_report: dict[str, Any], rcfg: ReportConfig, metrics: dict[str, Any],
                    centering_file: str | None, timings: dict[str, float]) -> dict[str, Any]:
    """What ``manifest.json`` records of this run (``space.bundle.publish`` adds the rest)."""
    return {
        "topicspace_version": __version__,
        "config": {
            "ingest": to_jsonable(cfg.ingest),
            "filters": to_jsonable(cfg.filters),
            "split": to_jsonable(cfg.split),
            "text": to_jsonable(cfg.text),
            "image": image_side.config,
            "report": to_jsonable(rcfg),
            "quick": cfg.quick,
            "index_dtype": cfg.index_dtype,
            "encode_crops": cfg.crops,
            "encode_framing": cfg.framing,
            "recipe": cfg.recipe,
        },
        "topic": cfg.topic.to_dict() if cfg.topic is not None else None,
        "filter_report": filter_report,
        "metrics": metrics,
        "corpus": {
            "path": str(cfg.ingest.corpus.resolve()),
            "format": cfg.ingest.format,
            "n_posts": side.n_posts,
            "n_kept": len(kept.posts),
        },
        "encoder": image_side.parity,
        "encoder_int8": image_side.int8_report,
        "centering": centering_file,
        # build_bundle_indexes put centred vectors in images.usearch (what the engine checks).
        "image_index_centred": centering_file is not None,
        "text": side.text.stats,
        "timings": timings,
    }
