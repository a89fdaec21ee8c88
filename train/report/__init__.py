"""The corpus report: text analyses, language shares, attraction ranking, t-SNE photo mosaics, word map.

``write_report`` is the pipeline's entry point (kept posts + text space + image vectors → ``report/``);
``write_image_maps`` redraws only the mosaics, e.g. from a published bundle; ``report_from_bundle`` rebuilds
the whole report from a bundle. Every figure is a PNG with its data as JSON beside it, and ``stats.json``
indexes them all.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from space.textspace import TextSpace, unit
from train.corpus.posts import Post
from train.corpus.topic import Attraction
from train.progress import ProgressCallback
from train.report import mosaic, plots, text_analyses
from train.report.word_map import word_map_layout

__all__ = [
    "Attraction",
    "ReportConfig",
    "report_from_bundle",
    "write_image_maps",
    "write_report",
]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ReportConfig:
    """What the report computes and draws."""

    top_words: int = 30  # bars in top_words.png
    stats_top_words: int = 50  # words listed in stats.json
    language_top_words: int = 20  # bars per language panel
    # The topic's places (train.corpus.topic: the topic file's [[attractions]]); empty: none ranked, and the
    # report says no attractions are configured.
    attractions: tuple[Attraction, ...] = ()
    # Attraction names, most popular first (e.g. a travel site's ranking); empty: no comparison.
    reference_ranking: tuple[str, ...] = ()
    mosaic_sizes: tuple[int, ...] = (1024, 2048, 4096)
    # 64×64 = 4096 tiles: 64-pixel tiles at 4096 px; bigger corpora are sampled down to this.
    mosaic_max_grid: int = 64
    # Exact grid assignment up to this many images (4096 would take ~40 s); beyond, exact per strip of
    # about ``assignment_strip`` cells (2 s at 4096, trustworthiness 0.995 of the exact 0.996).
    max_exact_assignment: int = 1024
    assignment_strip: int = 1024
    tsne_perplexity: float = 30.0
    tsne_iterations: int = 500
    # Above this many photos t-SNE fits a seeded sample of this many and places the others into it
    # (openTSNE transform): docs/benchmarks.md, Maps, gives both costs at 325,000 photos.
    tsne_max_fit: int = 100_000
    # The zoomable map of every photo (train.report.mosaic.draw_pyramid): pixels a photo at the deepest
    # level and a tile side; pyramid False draws the mosaics only.
    pyramid: bool = True
    map_cell: int = 64
    map_tile: int = 256
    # Trustworthiness is O(n²): measured on at most this many laid-out images.
    trust_sample: int = 2000
    word_map_words: int = 300
    seed: int = 0
    show_progress: bool = True


def _write_json(path: Path, payload: Any) -> None:
    path.write_text(json.dumps(payload, ensure_ascii=False, indent=1), encoding="utf-8")


def _pairs(counts: Sequence[tuple[str, int]]) -> list[dict[str, Any]]:
    return [{"word": w, "count": c} for w, c in counts]


def _trust(x: np.ndarray, y: np.ndarray, sample: int, seed: int) -> dict[str, Any]:
    """scikit-learn trustworthiness (k=10, euclidean) of ``y`` for the rows of ``x``, on ≤ ``sample`` rows."""
    from sklearn.manifold import trustworthiness

    n = len(x)
    idx = np.arange(n)
    if n > sample:
        idx = np.sort(np.random.default_rng(seed).choice(n, size=sample, replace=False))
    k = min(10, (len(idx) - 1) // 2)
    xs, ys = x[idx].astype(np.float64), y[idx].astype(np.float64)
    value = round(float(trustworthiness(xs, ys, n_neighbors=k)), 6) if k >= 1 else None
    return {"value": value, "n": len(idx), "n_neighbors": k}


def _tqdm_progress(progress: ProgressCallback | None, show: bool) -> ProgressCallback | None:
    """Wrap ``progress`` so that t-SNE iterations also advance a tqdm bar when ``show``."""
    if not show:
        return progress
    from tqdm import tqdm

    bars: dict[str, Any] = {}

    def report(stage: str, done: int, total: int | None, message: str) -> None:
        bar = bars.get(stage)
        if bar is None:
            bar = bars[stage] = tqdm(total=total, desc=stage, leave=False)
        bar.update(done - bar.n)
        if total is not None and done >= total:
            bar.close()
            bars.pop(stage, None)
        if progress is not None:
            progress(stage, done, total, message)

    return report


def write_image_maps(
    report_dir: Path,
    image_paths: Sequence[str | Path],
    image_vectors: np.ndarray,
    cfg: ReportConfig | None = None,
    progress: ProgressCallback | None = None,
) -> dict[str, Any]:
    """t-SNE the image vectors, snap them to grids, draw the mosaics and the map's tile pyramid; write
    ``tsne_layout.json``."""
    cfg = cfg or ReportConfig()
    report_dir.mkdir(parents=True, exist_ok=True)
    # Placed by direction, as the engine's cosine search compares them; on unit vectors euclidean
    # neighbourhoods are cosine ones, so the trustworthiness below measures what users see.
    vectors = unit(np.asarray(image_vectors, dtype=np.float32))
    if len(vectors) != len(image_paths):
        raise ValueError(f"{len(image_paths)} image paths but {len(vectors)} image vectors")
    if len(vectors) == 0:
        return {"skipped": "no images", "files": {}}
    started = time.monotonic()
    tick = _tqdm_progress(progress, cfg.show_progress)
    layouts = mosaic.compute_layouts(
        vectors, max_grid=cfg.mosaic_max_grid, seed=cfg.seed, perplexity=cfg.tsne_perplexity,
        n_iter=cfg.tsne_iterations, max_exact=cfg.max_exact_assignment,
        strip_points=cfg.assignment_strip, max_fit=cfg.tsne_max_fit, progress=tick,
    )
    layout, method = layouts.mosaic, layouts.method
    tsne_s = round(time.monotonic() - started, 2)
    laid = vectors[layout.indices]
    trust = _trust(laid, layout.points, cfg.trust_sample, cfg.seed)
    trust_grid = _trust(laid, layout.cells.astype(float), cfg.trust_sample, cfg.seed)
    names = [f"tsne_mosaic_{s}.png" for s in cfg.mosaic_sizes]
    drawn = mosaic.draw_mosaics(
        layout, image_paths, cfg.mosaic_sizes, [report_dir / n for n in names],
        progress=progress, show_progress=cfg.show_progress,
    )
    pyramid: dict[str, Any] | None = None
    if cfg.pyramid:
        drawing = time.monotonic()
        full = layouts.full
        pyramid = mosaic.draw_pyramid(full, image_paths, report_dir,
                                      mosaic.PyramidConfig(cell=cfg.map_cell, tile=cfg.map_tile),
                                      progress=progress, show_progress=cfg.show_progress)
        pyramid = {k: v for k, v in pyramid.items() if k != "unreadable"}
        pyramid["trustworthiness_grid"] = _trust(vectors[full.indices], full.cells.astype(float),
                                                 cfg.trust_sample, cfg.seed)
        pyramid["assignment"] = full.assignment
        pyramid["seconds"] = round(time.monotonic() - drawing, 2)
    summary: dict[str, Any] = {
        "images": len(vectors),
        "laid_out": len(layout.indices),
        "sampling": (
            f"random sample (seed {cfg.seed}) of {len(layout.indices)} of {layout.sampled_from} images, "
            f"the capacity of a {layout.grid}×{layout.grid} grid"
            if len(layout.indices) < layout.sampled_from else "none: every image is laid out"
        ),
        "grid": layout.grid,
        "tsne": {"method": method, "perplexity": cfg.tsne_perplexity, "iterations": cfg.tsne_iterations,
                 "metric": "cosine", "seed": cfg.seed},
        "assignment": layout.assignment,
        # Of the t-SNE points and of the grid cells, for the unit-normalised vectors (scikit-learn).
        "trustworthiness": trust,
        "trustworthiness_grid": trust_grid,
        "mosaics": drawn["sizes"],
        "unreadable": drawn["unreadable"],
        # The zoomable map of every photo (report/map/), drawn from the same t-SNE.
        "pyramid": pyramid,
        "tsne_seconds": tsne_s,
        "seconds": round(time.monotonic() - started, 2),
    }
    _write_json(report_dir / "tsne_layout.json", {
        **summary,
        "items": [
            {"index": int(i), "path": str(image_paths[int(i)]),
             "x": round(float(x), 5), "y": round(float(y), 5), "col": int(c), "row": int(r)}
            for i, (x, y), (c, r) in zip(layout.indices, layout.points, layout.cells, strict=True)
        ],
    })
    log.info("image maps: %d images on a %d×%d grid, trustworthiness %.3f (%s), %.1fs",
             len(layout.indices), layout.grid, layout.grid, trust["value"] or float("nan"),
             layout.assignment, summary["seconds"])
    files = {f"tsne_mosaic_{s}": n for s, n in zip(cfg.mosaic_sizes, names, strict=True)}
    files["tsne_layout"] = "tsne_layout.json"
    if pyramid is not None:
        files["map_pyramid"] = mosaic.PYRAMID_JSON
    summary["files"] = files
    return summary


def write_report(
    report_dir: Path,
    posts: Sequence[Post],
    space: TextSpace,
    image_vectors: np.ndarray | None,
    filter_report: dict[str, Any],
    cfg: ReportConfig | None = None,
    progress: ProgressCallback | None = None,
) -> dict[str, Any]:
    """Write every analysis and figure into ``report_dir``; return (and save as stats.json) the stats."""
    cfg = cfg or ReportConfig()
    report_dir.mkdir(parents=True, exist_ok=True)
    files: dict[str, str] = {}

    def step(stage: str, done: int, total: int | None, message: str) -> None:
        log.info("report: %s", message)
        if progress is not None:
            progress(stage, done, total, message)

    text_steps = 4
    step("text", 0, text_steps, "counting words")
    own_counts = text_analyses.count_words(posts)
    overall = text_analyses.ranked(own_counts, max(cfg.top_words, cfg.stats_top_words))
    corpus_vocab = len(own_counts)
    plots.word_bars(overall[: cfg.top_words], f"top {cfg.top_words} words ({len(posts)} posts)",
                    report_dir / "top_words.png")
    _write_json(report_dir / "top_words.json", _pairs(overall[: cfg.top_words]))
    files["top_words"] = "top_words.png"

    step("text", 1, text_steps, "words per language")
    by_language = text_analyses.top_words_by_language(posts, cfg.language_top_words)
    plots.words_by_language(by_language, report_dir / "top_words_by_language.png")
    _write_json(report_dir / "top_words_by_language.json", {k: _pairs(v) for k, v in by_language.items()})
    files["top_words_by_language"] = "top_words_by_language.png"
    # One chart per language too: the bot's "/top <lang>" sends top_words_<lang>.png.
    for code, counts in by_language.items():
        if re.fullmatch(r"[A-Za-z0-9_-]{1,16}", code):
            plots.word_bars(counts, f"top {len(counts)} words: {code}", report_dir / f"top_words_{code}.png")
            _write_json(report_dir / f"top_words_{code}.json", _pairs(counts))
            files[f"top_words_{code}"] = f"top_words_{code}.png"

    step("text", 2, text_steps, "language shares")
    shares = text_analyses.language_shares(posts)
    unknown_only = set(shares) <= {text_analyses.UNKNOWN_LANGUAGE}
    note = "no post carries a language code" if unknown_only else None
    plots.language_bars(shares, report_dir / "languages.png", note)
    _write_json(report_dir / "languages.json", {"languages": shares, "note": note})
    files["languages"] = "languages.png"

    step("text", 3, text_steps, "attractions")
    ranked = text_analyses.count_attractions(posts, cfg.attractions)
    comparison = (text_analyses.compare_with_reference(ranked, cfg.reference_ranking)
                  if cfg.reference_ranking else None)
    total_mentions = sum(e["mentions"] for e in ranked)
    attractions = {
        "ranking": ranked,
        "total_mentions": total_mentions,
        "note": (None if total_mentions else "no mentions of any configured attraction" if cfg.attractions
                 else "no attractions configured (no --topic file)"),
        "reference": comparison,
        "aliases": {a.name: list(a.aliases) for a in cfg.attractions},
    }
    plots.attraction_bars(ranked, report_dir / "attractions.png",
                          comparison["spearman"] if comparison else None, comparison is not None)
    _write_json(report_dir / "attractions.json", attractions)
    files["attractions"] = "attractions.png"
    step("text", 4, text_steps, "text analyses done")

    wmap = word_map_layout(space, cfg.word_map_words, seed=cfg.seed, counts=own_counts,
                           progress=_tqdm_progress(progress, cfg.show_progress))
    plots.word_map(wmap["words"], wmap["points"], wmap["counts"], report_dir / "word_map.png")
    _write_json(report_dir / "word_map.json", {
        "method": wmap["method"],
        "trustworthiness": wmap["trustworthiness"],
        "words": [{"word": w, "count": c, "x": round(float(x), 5), "y": round(float(y), 5)}
                  for w, c, (x, y) in zip(wmap["words"], wmap["counts"], wmap["points"], strict=True)],
    })
    files["word_map"] = "word_map.png"

    if image_vectors is None:
        image_maps: dict[str, Any] = {"skipped": "the image stage was skipped: no image vectors"}
    else:
        image_maps = write_image_maps(report_dir, [p.image for p in posts], image_vectors, cfg, progress)
        files.update(image_maps.pop("files", {}))

    stats: dict[str, Any] = {
        "corpus": {
            "posts": len(posts),
            "images": 0 if image_vectors is None else len(image_vectors),
            "captions": sum(len(p.reference_captions) for p in posts),
        },
        "filter_report": filter_report,
        "vocabulary": {"space_words": len(space.words), "corpus_content_words": corpus_vocab},
        "languages": shares,
        "top_words": _pairs(overall[: cfg.stats_top_words]),
        "top_words_by_language": {k: _pairs(v) for k, v in by_language.items()},
        "attractions": {k: attractions[k] for k in ("ranking", "total_mentions", "note", "reference")},
        "word_map": {"words": len(wmap["words"]), "trustworthiness": wmap["trustworthiness"]},
        "image_maps": image_maps,
        "config": _config_dict(cfg),
        "files": files,
    }
    dates = sorted(p.taken_at for p in posts if p.taken_at)  # ISO 8601 strings sort by time
    if dates:
        stats["dates"] = {"first": dates[0], "last": dates[-1]}
    _write_json(report_dir / "stats.json", stats)
    return stats


def _config_dict(cfg: ReportConfig) -> dict[str, Any]:
    out = {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(cfg).items()}
    out["attractions"] = [a.name for a in cfg.attractions]
    return out


@dataclass(frozen=True)
class _BundleData:
    posts: list[Post]
    vectors: np.ndarray
    filter_report: dict[str, Any] = field(default_factory=dict)
    # The places the bundle's report was configured with (its topic's attractions), from the manifest.
    places: dict[str, Any] = field(default_factory=dict)


def _places(report_cfg: dict[str, Any]) -> dict[str, Any]:
    """ReportConfig's attraction fields from a manifest's ``config.report`` (empty when it has none)."""
    entries = [a for a in report_cfg.get("attractions") or () if isinstance(a, dict) and a.get("name")]
    if not entries:
        return {}
    return {"attractions": tuple(Attraction(str(a["name"]), tuple(a.get("aliases") or ())) for a in entries),
            "reference_ranking": tuple(report_cfg.get("reference_ranking") or ())}


def _read_bundle(bundle: Path) -> _BundleData:
    from space import bundle as bundle_format

    meta = json.loads((bundle / bundle_format.IMAGE_META).read_text(encoding="utf-8"))
    posts = [
        Post(id=str(it.get("post_id", it["key"])), image=Path(it["path"]), caption=it.get("caption", ""),
             user=it.get("user"), lang=it.get("lang"), split=it.get("split"),
             captions=tuple(it.get("captions") or ()), taken_at=it.get("taken_at"))
        for it in meta["items"]
    ]
    vectors = np.load(bundle / bundle_format.IMAGE_VECTORS)
    manifest_path = bundle / bundle_format.MANIFEST
    manifest = json.loads(manifest_path.read_text(encoding="utf-8")) if manifest_path.is_file() else {}
    report_cfg = (manifest.get("config") or {}).get("report") or {}
    return _BundleData(posts, vectors, manifest.get("filter_report", {}), _places(report_cfg))


def report_from_bundle(
    bundle: Path,
    out_dir: Path,
    cfg: ReportConfig | None = None,
    *,
    maps_only: bool = False,
    progress: ProgressCallback | None = None,
) -> dict[str, Any]:
    """Redraw a published bundle's report (or only its image maps) into ``out_dir``.

    A ``cfg`` without attractions ranks the places the bundle was trained with (its topic's).
    """
    data = _read_bundle(bundle)
    if data.places and not (cfg is not None and cfg.attractions):
        cfg = replace(cfg or ReportConfig(), **data.places)
    if maps_only:
        return write_image_maps(out_dir, [p.image for p in data.posts], data.vectors, cfg, progress)
    space = TextSpace.load(bundle)
    return write_report(out_dir, data.posts, space, data.vectors, data.filter_report, cfg, progress)
