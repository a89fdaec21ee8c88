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
``default`` is the default recipe's own trainer (:func:`train.recipes.joint.model.train_joint` on the views'
mean features, :class:`JointConfig`'s defaults): ``default +levels`` is ``train all``'s recipe (pool4's,
5a's and 5b's means, dropout 0.4, τ 0.05), ``default dropout=0.2`` the 1,024-d recipe before it. For
``default`` variants the row also holds ``corpus_word_p10``: word → images P@10 over the whole corpus, as
``bench_answers.py`` measures it on a bundle (the same figure from the same arrays). Results are appended
to ``<work>/results.jsonl``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import re
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import torch

from space.errors import SpaceError
from space.textspace import TextSpace
from train.config import IngestConfig, PipelineConfig
from train.corpus.posts import Post
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


def parse_views(spec: str) -> list[tuple[int, ...] | None]:
    """The caches a run reads, side by side: 'all' → [None] (one cache of every one of the 10 views);
    '0,1' → [(0, 1)]; '0,1+2,3,4,5,6,7,8,9' → two caches, the views in that order."""
    if spec == "all":
        return [None]
    return [tuple(int(v) for v in part.split(",")) for part in spec.split("+")]


class ConcatViews:
    """Arrays (N, V_k, ...) side by side on the view axis, read like one (N, ΣV_k, ...) array (the ways
    :class:`ViewSource` reads: ``[rows]``, ``[rows, views]`` pairwise, ``[row_slice, :v]``)."""

    def __init__(self, parts: list[np.ndarray]) -> None:
        self.parts = parts
        widths = [p.shape[1] for p in parts]
        self.offsets = np.cumsum([0, *widths])
        self.shape = (parts[0].shape[0], int(self.offsets[-1]), *parts[0].shape[2:])

    def __getitem__(self, key: Any) -> np.ndarray:
        if not isinstance(key, tuple):
            return np.concatenate([np.asarray(p[key]) for p in self.parts], axis=1)
        rows, views = key
        if isinstance(views, slice):
            return np.concatenate([np.asarray(p[rows]) for p in self.parts], axis=1)[:, views]
        rows, views = np.asarray(rows), np.asarray(views)
        out = np.empty((len(rows), *self.shape[2:]), self.parts[0].dtype)
        for k, part in enumerate(self.parts):
            mine = (views >= self.offsets[k]) & (views < self.offsets[k + 1])
            if mine.any():
                out[mine] = part[rows[mine], views[mine] - self.offsets[k]]
        return out


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


def grid_extras(grid: np.ndarray, extras: list[str]) -> np.ndarray:
    """Pooled features the head's config cannot name, from the frozen grids (N, V, 1024, 7, 7): ``max``
    (the max over the grid, 1,024) and ``quad`` (the means of its four 4×4 corners, overlapping, 4,096)."""
    chunks: list[np.ndarray] = []
    for s in range(0, len(grid), 256):
        g = np.asarray(grid[s : s + 256], np.float32)
        row: list[np.ndarray] = []
        if "max" in extras:
            row.append(g.max(axis=(3, 4)))
        if "quad" in extras:
            row.extend(g[..., a : a + 4, b : b + 4].mean(axis=(3, 4)) for a in (0, 3) for b in (0, 3))
        if not row:
            raise ValueError(f"unknown extras {extras} (max, quad)")
        chunks.append(np.concatenate(row, axis=2))
    return np.concatenate(chunks, axis=0)


TRUNK_LEVELS = ("3b", "4a", "4b", "4c", "4d")


class TrunkLevels(torch.nn.Module):
    """The BVLC GoogLeNet's trunk, returning the global means of its inception blocks' outputs."""

    def __init__(self, net: torch.nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Network inputs → (B, 2544): the means of 3b, 4a, 4b, 4c and 4d, in that order."""
        net: Any = self.net
        b = net.blocks
        x = net.stem(x)
        x = b["3b"](b["3a"](x))
        out = [x.mean(dim=(2, 3))]
        x = net.pool3(x)
        for name in ("4a", "4b", "4c", "4d"):
            x = b[name](x)
            out.append(x.mean(dim=(2, 3)))
        return torch.cat(out, dim=1)


def trunk_levels(text: TextResult, weights: Path, work: Path, views: tuple[int, ...]) -> np.ndarray:
    """(N, len(views), 2544) pooled trunk levels of every post's image (computed once, ONNX Runtime)."""
    from space.images import network_views, open_image
    from space.ort import open_session
    from train.image.export import with_onnx_lrn

    path = work / "activations" / f"trunk-levels-{'-'.join(map(str, views))}.npy"
    if path.is_file():
        return np.load(path)
    onnx_path = path.with_suffix(".onnx")
    model = with_onnx_lrn(TrunkLevels(load_bvlc_googlenet(weights))).eval()
    with torch.no_grad():
        torch.onnx.export(model, (torch.zeros(1, 3, 224, 224),), str(onnx_path), input_names=["images"],
                          output_names=["levels"], opset_version=17, dynamo=False,
                          dynamic_axes={"images": {0: "batch"}, "levels": {0: "batch"}})
    session = open_session(onnx_path, 1, spin=False)
    out = np.zeros((len(text.posts), len(views), 2544), np.float32)
    from tqdm import tqdm

    step = 16
    for s in tqdm(range(0, len(text.posts), step), desc="trunk levels", mininterval=5.0):
        batch = [network_views(open_image(p.image), 10)[list(views)] for p in text.posts[s : s + step]]
        y = session.run(["levels"], {"images": np.concatenate(batch)})[0]
        out[s : s + len(batch)] = y.reshape(len(batch), len(views), -1)
    np.save(path, out)
    return out


def parse_variant(spec: str) -> tuple[str, FinetuneConfig | JointConfig]:
    """``"linear views=random head.hidden=1024"`` → (the spec, its config); ``"default dropout=0.4"`` → (…,
    a :class:`JointConfig`: the default recipe's own trainer).

    Words starting with ``+`` change the pooled input: ``+levels`` (pool4's and 5a's means beside 5b's,
    for ``default``; ``head.levels=true`` for the others), ``+trunk`` (3b … 4d's means), ``+sqrt``,
    ``+max``/``+quad`` (:func:`grid_extras`), ``+ensK`` (K members of different seeds side by side).
    """
    parts = [w for w in spec.split() if not w.startswith("+")]
    if not parts:
        raise ValueError("empty variant")
    if parts[0] == "default":
        joint = JointConfig()
        for item in parts[1:]:
            name, _, raw = item.partition("=")
            current = getattr(joint, name)
            joint = dataclasses.replace(joint, **{name: type(current)(raw)})
        return spec, joint
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


_LETTERS = re.compile(r"[^\W\d_]+")


def corpus_word_p10(posts: list[Post], space: TextSpace, images: np.ndarray, n_words: int = 100) -> float:
    """Word → images P@10 over the whole corpus as the engine answers it (``bench_answers.py``'s "whole
    corpus" figure, computed from the arrays a bundle would hold): the ``n_words`` content words in most
    reference captions, each asked as a query against every post's search vector (its image and its own
    caption, :func:`space.search.search_vectors`); a post counts when one of its captions holds the word
    (or it with a trailing s/es added or removed)."""
    from space.query import parse_query
    from space.search import search_vectors
    from space.tokenize import stop_words
    from train.recipes.joint.recipe import caption_vectors

    function_words = stop_words("en")
    words_of = [{w for c in p.reference_captions for w in _LETTERS.findall(c.lower())} for p in posts]
    df: Counter[str] = Counter()
    for p in posts:
        for c in p.reference_captions:
            df.update({w for w in _LETTERS.findall(c.lower()) if len(w) > 1} - function_words)
    search = search_vectors(images, caption_vectors(space, posts))
    hits = []
    for w, _ in df.most_common(n_words):
        try:
            q, _unknown = space.embed_query(parse_query(w), None, joint=True)
        except SpaceError:
            hits.append(0.0)
            continue
        top = np.argsort(-(search @ q))[:10]
        forms = {w, w + "s", w + "es", w.removesuffix("s"), w.removesuffix("es")}
        hits.append(float(np.mean([bool(forms & words_of[r]) for r in top])))
    return round(100 * float(np.mean(hits)), 1)


def run_variant(spec: str, config: FinetuneConfig | JointConfig, text: TextResult,
                caches: list[ActivationCache], parts: list[tuple[int, ...] | None],
                weights: Path) -> dict[str, Any]:
    """Train one variant and score it on the test images (the mean over every cached view)."""
    extras = [w[1:] for w in spec.split() if w.startswith("+")]
    trunk, sqrt, levels = "trunk" in extras, "sqrt" in extras, "levels" in extras
    members = next((int(e[3:]) for e in extras if e.startswith("ens")), 1)
    extras = [e for e in extras if e not in ("trunk", "sqrt", "levels") and not e.startswith("ens")]
    cfg = config if isinstance(config, FinetuneConfig) else None
    needs_grid = (cfg is not None and cfg.head.input_kind() == "grid") or bool(extras)
    outputs = [frozen_outputs(c, weights, needs_grid) for c in caches]
    pooled = np.concatenate([o[0] for o in outputs], axis=1)
    if levels or (cfg is not None and cfg.head.levels):
        pooled = np.concatenate([np.concatenate([o[1] for o in outputs], axis=1), pooled], axis=2)
    grids = [o[2] for o in outputs]
    grid: Any = None
    if needs_grid:
        grid = grids[0] if len(grids) == 1 else ConcatViews([g for g in grids if g is not None])
    if extras:
        assert cfg is None or cfg.head.input_kind() == "pooled"
        more = [grid_extras(g, extras) for g in grids if g is not None]
        pooled = np.concatenate([pooled, np.concatenate(more, axis=1)], axis=2)
    if trunk:
        assert cfg is None or cfg.head.input_kind() == "pooled"
        work = caches[0].path.parents[1]
        low = [trunk_levels(text, weights, work, part or tuple(range(10))) for part in parts]
        pooled = np.concatenate([np.concatenate(low, axis=1), pooled], axis=2)
    if sqrt:  # the pooled features are means of ReLU outputs: never negative
        pooled = np.sqrt(np.maximum(pooled, 0))
    usable = np.ones(len(text.posts), bool)
    usable[[i for c in caches for i in c.failed]] = False
    load_before = os.getloadavg()[0]
    started = time.monotonic()
    if cfg is None:
        assert isinstance(config, JointConfig) and members == 1
        model = train_joint(config, pooled.mean(axis=1), text.posts, text.space, usable)
        seconds = time.monotonic() - started
        rows, owner, caps = test_queries(text, model.words)
        images = model.images(pooled[rows].mean(axis=1))
        history = model.history
        base = text.space
        joint_space = TextSpace(base.words, base.vectors, base.idf, base.counts, model.words)
        kept = np.flatnonzero(usable)
        corpus_p10 = corpus_word_p10([text.posts[i] for i in kept], joint_space,
                                     model.images(pooled[kept].mean(axis=1)))
    else:
        splits = np.array([p.split for p in text.posts])
        mu, sd = standardisation(pooled[splits == "train"])
        net = load_bvlc_googlenet(weights)
        upper = Upper(net)
        dim = cfg.head.dim or text.space.dim
        head = build_head(cfg.head, upper.block_5a, upper.block_5b, dim, mu, sd, cfg.dropout)
        kind = cfg.head.input_kind()
        maps: Any = None
        if kind == "pool4":
            maps = caches[0].open() if len(caches) == 1 else ConcatViews([c.open() for c in caches])
        data = {"pooled": pooled, "grid": grid, "pool4": maps}[kind]
        assert data is not None
        source = ViewSource(data)
        # An ensemble is one wider space: each member's image vectors and word vectors side by side.
        image_parts: list[np.ndarray] = []
        word_parts: list[np.ndarray] = []
        history = []
        for k in range(members):
            member = dataclasses.replace(cfg, seed=cfg.seed + k)
            if k:
                head = build_head(cfg.head, upper.block_5a, upper.block_5b, dim, mu, sd, cfg.dropout)
            fmodel = train_finetune(member, source, head, text.posts, text.space, usable)
            rows = np.array([i for i, p in enumerate(text.posts) if p.split == "test"], np.int64)
            image_parts.append(fmodel.encode(source, rows))
            word_parts.append(fmodel.words)
            history.extend(fmodel.history)
        seconds = time.monotonic() - started
        rows, owner, caps = test_queries(text, np.concatenate(word_parts, axis=1))
        images = np.concatenate(image_parts, axis=1)
    metrics = retrieval_metrics(images, caps, owner)
    extra = {} if cfg is not None else {"corpus_word_p10": corpus_p10}
    return {**extra, "variant": spec, "views": sum(c.views for c in caches),
            "image_search": metrics["image_search"],
            "annotation": metrics["annotation"], "n_images": metrics["n_images"],
            "n_queries": metrics["n_queries"], "train_seconds": round(seconds, 1),
            "load": [round(load_before, 2), round(os.getloadavg()[0], 2)], "history": history,
            "config": config.to_dict()}


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
    p.add_argument("command", choices=["cache", "frozen", "trunk", "run", "table"])
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
    parts = parse_views(args.views)
    caches = [activation_cache(text, args.weights, args.work, part) for part in parts]
    if args.command == "cache":
        print(caches)
        return 0
    if args.command == "frozen":
        for cache in caches:
            frozen_outputs(cache, args.weights, args.grids)
        return 0
    if args.command == "trunk":
        for part in parts:
            trunk_levels(text, args.weights, args.work, part or tuple(range(10)))
        return 0
    done = []
    for spec, cfg in variants:
        result = run_variant(spec, cfg, text, caches, parts, args.weights)
        with results_path.open("a", encoding="utf-8") as fh:
            fh.write(json.dumps(result) + "\n")
        done.append(result)
        print(format_results([result]), flush=True)
    print(format_results(done))
    return 0


if __name__ == "__main__":
    sys.exit(main())
