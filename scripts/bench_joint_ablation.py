"""Ablation of the joint recipe's image side on Flickr8k's 1K test: which idea lifts retrieval, at what cost.

Every variant learns from the default bundle's text stages (the kept posts, the corpus split, 300-d
Word2Vec on every kept caption, cached under ``--work``) and from cached GoogLeNet activations
(:mod:`train.image.activations`: pool4 maps of each view, computed once; the frozen top blocks' pooled
features and 7×7 grids from them). Each is scored like ``train eval`` scores a bundle: all 1,000 test
images (each the mean of its cached views' vectors), image search with each of their 5,000 captions alone
as a query, annotation; R@1/5/10 and median rank. Training time is the variant's own (caches excluded).

Commands (from the repository root, ``../shared`` beside it)::

    A="python scripts/bench_joint_ablation.py --flickr8k ../shared/data/flickr8k \\
        --weights ../shared/weights/bvlc_googlenet --work var/ablation"
    $A cache --views 0,1          # pool4 maps of the centre crop and its mirror (ranking runs)
    $A cache --views all          # all 10 views (the confirming runs)
    $A frozen --views 0,1         # the frozen 5a/5b's pooled features and grids of those views
    $A run --views 0,1 --configs "default; linear views=random; linear head.pooling=attention views=random"
    $A table                      # the results so far as a Markdown table

A variant is a preset name followed by ``field=value`` overrides of
:class:`train.recipes.joint.finetune.FinetuneConfig` (``head.FIELD`` for :class:`HeadConfig`);
``default`` is the default recipe itself (:func:`train.recipes.joint.model.train_joint` on the views'
mean features). Results are appended to ``<work>/results.jsonl``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from space.textspace import TextSpace
from train.config import IngestConfig, PipelineConfig
from train.evaluate import embed_captions, retrieval_metrics
from train.image.activations import LEVEL_DIMS, ActivationCache, Upper, cache_pool4, upper_features
from train.image.googlenet import load_bvlc_googlenet, weights_fingerprint
from train.pipeline import Pipeline
from train.recipes.joint.finetune import (
    FinetuneConfig,
    HeadConfig,
    ViewSource,
    build_head,
    standardisation,
    train_finetune,
)
from train.recipes.joint.model import JointConfig, train_joint
from train.text.word2vec import TextResult

log = logging.getLogger(__name__)

PRESETS: dict[str, FinetuneConfig] = {
    "linear": FinetuneConfig(),
    "tune": FinetuneConfig(head=HeadConfig(tune="5b"), views="random", epochs=4, passes=2),
}


def text_side(flickr8k: Path, work: Path) -> TextResult:
    """The default bundle's text stages (cached in ``work``): kept posts, split, 300-d Word2Vec."""
    cfg = PipelineConfig(ingest=IngestConfig(corpus=flickr8k, format="flickr8k"), models=work / "models",
                         work=work / "work")
    return Pipeline(cfg)._through_text().text


def parse_views(spec: str) -> tuple[int, ...] | None:
    """'all' → None (every one of the 10 views); '0,1' → (0, 1)."""
    return None if spec == "all" else tuple(int(v) for v in spec.split(","))


def activation_cache(text: TextResult, weights: Path, work: Path, views: tuple[int, ...] | None,
                     net: torch.nn.Module | None = None) -> ActivationCache:
    """The pool4 cache of the posts' images (computed on first use)."""
    net = net if net is not None else load_bvlc_googlenet(weights)
    images = [Path(p.image) for p in text.posts]
    return cache_pool4(net, images, 10, work / "activations", select=views,
                       key_parts=["bvlc", weights_fingerprint(weights)])


def frozen_paths(cache: ActivationCache) -> tuple[Path, Path, Path]:
    """Where the frozen top blocks' pooled features, the lower levels' and the grids of ``cache`` live."""
    stem = cache.path.with_suffix("")
    return (stem.with_name(stem.name + "-pooled.npy"), stem.with_name(stem.name + "-levels.npy"),
            stem.with_name(stem.name + "-grid.f16"))


def frozen_outputs(cache: ActivationCache, weights: Path,
                   grids: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """The frozen 5a/5b's pooled features (N, V, 1024), the pooled pool4 and 5a features (N, V, 1664)
    and, when ``grids``, the fp16 grids (memmap)."""
    pooled_path, levels_path, grid_path = frozen_paths(cache)
    shape = (cache.n_images, cache.views, 1024, 7, 7)
    if pooled_path.is_file() and (not grids or grid_path.is_file()):
        grid = np.memmap(grid_path, np.float16, "r", shape=shape) if grids else None
        return np.load(pooled_path), np.load(levels_path), grid
    net = load_bvlc_googlenet(weights)
    tmp_grid = grid_path.with_suffix(".partial")
    grid_out = np.memmap(tmp_grid, np.float16, "w+", shape=shape) if grids else None
    levels = np.zeros((cache.n_images, cache.views, sum(LEVEL_DIMS)), np.float32)
    pooled = upper_features(Upper(net), cache.open(), np.arange(cache.n_images), grid_out=grid_out,
                            levels_out=levels)
    if grid_out is not None:
        grid_out.flush()
        del grid_out
        os.replace(tmp_grid, grid_path)
    np.save(levels_path, levels)
    np.save(pooled_path, pooled)
    return frozen_outputs(cache, weights, grids)


def parse_variant(spec: str) -> tuple[str, FinetuneConfig | None]:
    """``"linear views=random head.hidden=1024"`` → (the spec, its config); ``"default"`` → (…, None)."""
    parts = spec.split()
    if not parts:
        raise ValueError("empty variant")
    if parts[0] == "default":
        if len(parts) > 1:
            raise ValueError("'default' takes no overrides")
        return spec, None
    if parts[0] not in PRESETS:
        raise ValueError(f"unknown preset {parts[0]!r} (one of default, {', '.join(PRESETS)})")
    cfg = PRESETS[parts[0]]
    for item in parts[1:]:
        name, _, raw = item.partition("=")
        target: Any = cfg.head if name.startswith("head.") else cfg
        field = name.removeprefix("head.")
        current = getattr(target, field)
        value: Any = raw
        if raw.lower() == "none":
            value = None
        elif isinstance(current, bool):
            value = raw.lower() in ("1", "true", "yes")
        elif isinstance(current, int) or field in ("dim", "passes"):
            value = int(raw)
        elif isinstance(current, float):
            value = float(raw)
        if name.startswith("head."):
            cfg = dataclasses.replace(cfg, head=dataclasses.replace(cfg.head, **{field: value}))
        else:
            cfg = dataclasses.replace(cfg, **{field: value})
    return spec, cfg


def test_queries(text: TextResult, words: np.ndarray) -> tuple[np.ndarray, list[int], np.ndarray]:
    """(test rows, caption owners, caption vectors): every test caption embedded alone, as `train eval`."""
    base = text.space
    space = TextSpace(base.words, base.vectors, base.idf, base.counts, words)
    rows = np.array([i for i, p in enumerate(text.posts) if p.split == "test"], np.int64)
    captions: list[str] = []
    owner: list[int] = []
    for k, r in enumerate(rows):
        caps = list(text.posts[r].reference_captions)
        captions.extend(caps)
        owner.extend([k] * len(caps))
    vecs, _ = embed_captions(space, captions)
    return rows, owner, vecs


def run_variant(spec: str, cfg: FinetuneConfig | None, text: TextResult, cache: ActivationCache,
                weights: Path) -> dict[str, Any]:
    """Train one variant and score it on the test images (the mean over every cached view)."""
    needs_grid = cfg is not None and cfg.head.input_kind() == "grid"
    pooled, levels, grid = frozen_outputs(cache, weights, needs_grid)
    if cfg is not None and cfg.head.levels:
        pooled = np.concatenate([levels, pooled], axis=2)
    usable = np.ones(len(text.posts), bool)
    usable[list(cache.failed)] = False
    load_before = os.getloadavg()[0]
    started = time.monotonic()
    if cfg is None:
        model = train_joint(JointConfig(), pooled.mean(axis=1), text.posts, text.space, usable)
        seconds = time.monotonic() - started
        rows, owner, caps = test_queries(text, model.words)
        images = model.images(pooled[rows].mean(axis=1))
        history = model.history
    else:
        splits = np.array([p.split for p in text.posts])
        mu, sd = standardisation(pooled[splits == "train"])
        net = load_bvlc_googlenet(weights)
        upper = Upper(net)
        dim = cfg.head.dim or text.space.dim
        head = build_head(cfg.head, upper.block_5a, upper.block_5b, dim, mu, sd, cfg.dropout)
        kind = cfg.head.input_kind()
        data = {"pooled": pooled, "grid": grid, "pool4": cache.open() if kind == "pool4" else None}[kind]
        assert data is not None
        source = ViewSource(data)
        fmodel = train_finetune(cfg, source, head, text.posts, text.space, usable)
        seconds = time.monotonic() - started
        rows, owner, caps = test_queries(text, fmodel.words)
        images = fmodel.encode(source, rows)
        history = fmodel.history
    metrics = retrieval_metrics(images, caps, owner)
    return {"variant": spec, "views": cache.views, "image_search": metrics["image_search"],
            "annotation": metrics["annotation"], "n_images": metrics["n_images"],
            "n_queries": metrics["n_queries"], "train_seconds": round(seconds, 1),
            "load": [round(load_before, 2), round(os.getloadavg()[0], 2)], "history": history,
            "config": None if cfg is None else cfg.to_dict()}


def format_results(results: list[dict[str, Any]]) -> str:
    """A Markdown table of ``results`` rows."""
    lines = ["| variant | views | image search R@1 / R@5 / R@10 (med r) "
             "| annotation R@1 / R@5 / R@10 (med r) | training | load |", "|---|---|---|---|---|---|"]
    for r in results:
        s, a = r["image_search"], r["annotation"]
        lines.append(
            f"| `{r['variant']}` | {r['views']} "
            f"| {s['r1']:.1f} / {s['r5']:.1f} / {s['r10']:.1f} ({s['medr']:g}) "
            f"| {a['r1']:.1f} / {a['r5']:.1f} / {a['r10']:.1f} ({a['medr']:g}) | {r['train_seconds']:.0f} s "
            f"| {r['load'][0]:.1f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit status."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("command", choices=["cache", "frozen", "run", "table"])
    p.add_argument("--flickr8k", type=Path, required=True)
    p.add_argument("--weights", type=Path, required=True)
    p.add_argument("--work", type=Path, required=True)
    p.add_argument("--views", default="0,1", help="which of the 10 views ('all': every one)")
    p.add_argument("--configs", default="default", help="variants separated by ';'")
    p.add_argument("--grids", action="store_true", help="frozen: also write the 7×7 grids")
    p.add_argument("--threads", type=int, default=None)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("gensim").setLevel(logging.WARNING)
    if args.threads:
        torch.set_num_threads(args.threads)
    results_path = args.work / "results.jsonl"
    if args.command == "table":
        rows = [json.loads(line) for line in results_path.read_text(encoding="utf-8").splitlines() if line]
        print(format_results(rows))
        return 0
    try:
        variants = [parse_variant(s.strip()) for s in args.configs.split(";") if s.strip()]
    except (ValueError, AttributeError, TypeError) as exc:
        print(f"error: bad --configs: {exc}", file=sys.stderr)
        return 2
    text = text_side(args.flickr8k, args.work)
    cache = activation_cache(text, args.weights, args.work, parse_views(args.views))
    if args.command == "cache":
        print(cache)
        return 0
    if args.command == "frozen":
        frozen_outputs(cache, args.weights, args.grids)
        return 0
    done = []
    for spec, cfg in variants:
        result = run_variant(spec, cfg, text, cache, args.weights)
        with results_path.open("a", encoding="utf-8") as fh:
            fh.write(json.dumps(result) + "\n")
        done.append(result)
        print(format_results([result]), flush=True)
    print(format_results(done))
    return 0


if __name__ == "__main__":
    sys.exit(main())
