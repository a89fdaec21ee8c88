"""Full Flickr8k retrieval benchmark: train the regressor on the 6,000 train images, validate on dev,
evaluate on the 1K test images, and print the table beside the published rows and a ridge baseline.

    nice -n 10 python scripts/bench_retrieval.py --flickr8k ../shared/data/flickr8k \
        --weights ../shared/weights/bvlc_googlenet --work /work/bench-work [--configs seed,cosine] [--quick]

Word2Vec and TF-IDF learn from the train + dev captions only (test captions are queries, never training
text). Test captions are embedded one at a time, as a user's query would be. Heavy: run it in the background.

Every model is scored twice: on raw vectors, and centred (``space.centering``: the mean training caption
vector subtracted from queries, the mean of the model's outputs on 2,000 training images, one cached view
each, from image vectors), the way a centred bundle is served. The text space is saved under
``<work>/text`` (Word2Vec on two threads is not reproducible run to run, and a trained encoder only
makes sense in the space it was trained for); pooled frozen features for the ridge baseline are cached.
``--rescore seed,ridge-cosine`` re-scores already-trained checkpoints raw and centred, without training.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from train.config import TextConfig
from train.corpus.ingest import IngestStats, read_flickr8k
from train.evaluate import embed_captions, format_table, mean_vectors, retrieval_metrics, ridge_baseline
from train.image.encode import encode_images
from train.image.export import export_onnx
from train.image.googlenet import BVLCGoogLeNet, load_bvlc_googlenet
from train.recipes.seed.config import ImageConfig
from train.recipes.seed.regressor import load_checkpoint, read_checkpoint
from train.recipes.seed.training import train_regressor
from train.recipes.seed.trunk_cache import cache_key_parts, cache_trunk_features
from train.text.word2vec import TextResult, build_text_space

log = logging.getLogger("bench_retrieval")

CONFIGS: dict[str, ImageConfig] = {
    # The seed-faithful recipe (layers, sigmoid cross-entropy on [0,1] targets, SGD 0.001/0.9/2e-4, batch
    # 120, crops + mirrors), its new layer started from the ridge map (the default; the recipe names no
    # initialisation) or from N(0, 0.01) noise, after which 4 epochs leave the outputs at the mean vector.
    "seed": ImageConfig(),
    "seed-ridge": ImageConfig(init="ridge"),
    "seed-gaussian": ImageConfig(init="gaussian"),
    # Same recipe, word-space cosine loss with a 10× learning rate decayed on a cosine schedule.
    "cosine": ImageConfig(loss="cosine", lr=0.01, schedule="cosine"),
    # Ridge-initialised new layer, then the same cosine fine-tuning.
    "ridge-cosine": ImageConfig(loss="cosine", lr=0.01, schedule="cosine", init="ridge"),
    # Ridge start, symmetric in-batch InfoNCE on centred vectors (its gradients are ~1/temperature larger
    # than the cosine loss's, hence the 10× smaller learning rate).
    "contrastive": ImageConfig(loss="contrastive", temperature=0.05, lr=0.001, schedule="cosine",
                               init="ridge"),
    # The same, but each cached view's target is one of the image's reference captions (queries are
    # single captions; validation keeps the post's all-caption vector).
    "contrastive-captions": ImageConfig(loss="contrastive", temperature=0.05, lr=0.001, schedule="cosine",
                                        init="ridge"),
    # Small-data presets (use with --quick).
    "quick": ImageConfig.quick_preset(),
    "quick-seed": ImageConfig.quick_preset(init="gaussian", loss="bce"),
}


def caption_view_targets(text: TextResult, views: int) -> np.ndarray:
    """Posts × views × D: view ``v`` of post ``i`` targets reference caption ``(i + v) mod n`` (0 → post)."""
    out = np.repeat(text.vectors[:, None, :], views, axis=1).astype(np.float32)
    for i, post in enumerate(text.posts):
        refs = list(post.reference_captions)
        if not refs:
            continue
        vecs, _ = embed_captions(text.space, [refs[(i + v) % len(refs)] for v in range(views)])
        for v in range(views):
            if vecs[v].any():
                out[i, v] = vecs[v]
    return out


def pooled(net: BVLCGoogLeNet, feats: np.memmap, batch: int = 256) -> np.ndarray:
    """Frozen-head pooled 1,024-d features of cached trunk activations."""
    out = []
    with torch.no_grad():
        for s in range(0, len(feats), batch):
            out.append(net.head(torch.from_numpy(np.asarray(feats[s : s + batch], np.float32))).numpy())
    return np.concatenate(out)


def pooled_cached(net: BVLCGoogLeNet, feats: np.memmap, path: Path) -> np.ndarray:
    """:func:`pooled`, saved to ``path`` the first time (the frozen head is a fixed function)."""
    if path.is_file():
        return np.load(path)
    out = pooled(net, feats)
    np.save(path, out)
    return out


def pooled_rows(net: BVLCGoogLeNet, feats: np.memmap, rows: np.ndarray, path: Path,
                batch: int = 64) -> np.ndarray:
    """Frozen-head pooled features of the cached trunk ``rows``, saved to ``path`` the first time."""
    if path.is_file():
        return np.load(path)
    out = []
    with torch.no_grad():
        for s in range(0, len(rows), batch):
            x = torch.from_numpy(np.asarray(feats[rows[s : s + batch]], np.float32))
            out.append(net.head(x).numpy())
    result = np.concatenate(out)
    np.save(path, result)
    return result


def linear_contrastive(train_f: np.ndarray, train_tgts: np.ndarray, test_f: np.ndarray,
                       temperature: float = 0.05, epochs: int = 10, batch: int = 256,
                       seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A linear map from frozen pooled features, trained with symmetric in-batch InfoNCE against the
    centred caption vectors (AdamW lr 1e-3, weight decay 1e-4, input dropout 0.2); (train, test) outputs.
    """
    torch.manual_seed(seed)
    mu, sd = train_f.mean(0), train_f.std(0) + 1e-6
    x = torch.from_numpy(((train_f - mu) / sd).astype(np.float32))
    x_test = torch.from_numpy(((test_f - mu) / sd).astype(np.float32))
    y = nn.functional.normalize(torch.from_numpy(train_tgts - train_tgts.mean(0)), dim=1)
    lin = nn.Linear(x.shape[1], y.shape[1])
    opt = torch.optim.AdamW(lin.parameters(), lr=1e-3, weight_decay=1e-4)
    gen = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        perm = torch.randperm(len(x), generator=gen)
        for s in range(0, len(x), batch):
            b = perm[s : s + batch]
            out = nn.functional.normalize(lin(nn.functional.dropout(x[b], 0.2)), dim=1)
            sims = out @ y[b].T / temperature
            labels = torch.arange(len(b))
            ce = nn.functional.cross_entropy
            loss = (ce(sims, labels) + ce(sims.T, labels)) / 2
            opt.zero_grad()
            loss.backward()
            opt.step()
    with torch.no_grad():
        return lin(x).numpy(), lin(x_test).numpy()


def model_outputs(ckpt: Path, feats: np.memmap, rows: np.ndarray, batch: int = 100) -> np.ndarray:
    """A trained regressor's word-space outputs for cached trunk rows (no image decoding)."""
    model, _ = load_checkpoint(ckpt)
    out = []
    with torch.no_grad():
        for s in range(0, len(rows), batch):
            x = torch.from_numpy(np.asarray(feats[rows[s : s + batch]], np.float32))
            out.append(model.to_word_space(model.logits_from_trunk(x)).numpy())
    return np.concatenate(out)


def centred_metrics(image_vecs: np.ndarray, caption_vecs: np.ndarray, owner: list[int],
                    train_image_vecs: np.ndarray, train_targets: np.ndarray) -> dict[str, Any]:
    """Retrieval metrics with both sides centred by their training means."""
    c = mean_vectors(train_image_vecs, train_targets)
    return retrieval_metrics(c.images(image_vecs), c.texts(caption_vecs), owner)


def main() -> int:
    """Run the benchmark; print and save the table and the raw numbers."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--flickr8k", type=Path, required=True)
    ap.add_argument("--weights", type=Path, required=True)
    ap.add_argument("--work", type=Path, required=True)
    ap.add_argument("--configs", default="seed")
    ap.add_argument("--epochs", type=int, default=None)
    ap.add_argument("--quick", action="store_true", help="a few hundred images, for a smoke run")
    ap.add_argument("--ridge-alpha", type=float, default=1.0)
    ap.add_argument("--skip-baseline", action="store_true", help="no ridge baseline (saves the pooling pass)")
    ap.add_argument("--rescore", default=None, metavar="NAMES",
                    help="no training: score the checkpoints <work>/<name>/image_best.pt raw and centred, "
                         "from the cached trunk activations, in the saved text space <work>/text")
    ap.add_argument("--crops", type=int, choices=(2, 10), default=None,
                    help="also score each trained config with test images encoded as the mean of this many "
                         "views (train all --encode-crops)")
    ap.add_argument("--linear-contrastive", action="store_true",
                    help="also a linear InfoNCE map on frozen pooled features (one view per train image)")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    torch.set_num_threads(max(1, torch.get_num_threads()))
    t_start = time.monotonic()
    args.work.mkdir(parents=True, exist_ok=True)

    posts = sorted(read_flickr8k(args.flickr8k, IngestStats()), key=lambda p: p.id)
    by_split = {s: [p for p in posts if p.split == s] for s in ("train", "val", "test")}
    if args.quick:
        sizes = {"train": 300, "val": 100, "test": 200}
        by_split = {k: v[: sizes[k]] for k, v in by_split.items()}
    log.info("posts: %s", {k: len(v) for k, v in by_split.items()})

    t0 = time.monotonic()
    text_cfg = TextConfig.quick() if args.quick else TextConfig()
    text_dir = args.work / ("text-quick" if args.quick else "text")
    if args.rescore and (text_dir / "caption_vectors.npy").is_file():
        text = TextResult.load(text_dir, by_split["train"] + by_split["val"])
    else:
        text = build_text_space(by_split["train"] + by_split["val"], text_cfg)
        text.save(text_dir)
    log.info("text space: %d words, dim %d, %.0fs", len(text.space.words), text.space.dim,
             time.monotonic() - t0)
    images = [p.image for p in text.posts]
    splits = [str(p.split) for p in text.posts]
    test = by_split["test"]
    captions = [c for p in test for c in p.reference_captions]
    owner = [i for i, p in enumerate(test) for _ in p.reference_captions]
    caption_vecs, empty = embed_captions(text.space, captions)
    log.info("%d test captions, %d with no known word", len(captions), empty)

    results: dict[str, dict[str, Any]] = {}
    timings: dict[str, Any] = {}
    net = load_bvlc_googlenet(args.weights)

    # Ridge baseline on the frozen network; its train features reuse the regressor's trunk cache.
    base_cfg = CONFIGS["seed"] if not args.quick else ImageConfig.quick_preset()
    train_imgs = [im for im, s in zip(images, splits, strict=True) if s == "train"]
    train_tgts = text.vectors[[i for i, s in enumerate(splits) if s == "train"]]
    t0 = time.monotonic()
    cache = cache_trunk_features(net, train_imgs, base_cfg.train_views, args.work,
                                 key_parts=cache_key_parts(base_cfg, args.weights), random_views=True,
                                 view_seed=base_cfg.view_seed, batch_size=base_cfg.feature_batch)
    timings["trunk_cache_train_s"] = round(time.monotonic() - t0, 1)
    test_cache = cache_trunk_features(net, [p.image for p in test], 1, args.work,
                                      key_parts=cache_key_parts(base_cfg, args.weights), random_views=False)
    # Centring means: a fixed sample of training images (one cached view each) and all training targets.
    n_mean = min(2000, len(train_imgs))
    mean_rows = np.sort(np.random.default_rng(0).choice(len(train_imgs), n_mean, replace=False))
    mean_rows = mean_rows * base_cfg.train_views
    if args.rescore:
        for name in args.rescore.split(","):
            ckpt = args.work / name / "image_best.pt"
            own = args.work / name / "text"  # the text space this checkpoint was trained for, when saved
            space_text = (TextResult.load(own, by_split["train"] + by_split["val"])
                          if (own / "caption_vectors.npy").is_file() else text)
            caption_vecs, _ = embed_captions(space_text.space, captions)
            train_tgts = space_text.vectors[[i for i, s in enumerate(splits) if s == "train"]]
            vecs = model_outputs(ckpt, test_cache.open(), np.arange(len(test)))
            train_out = model_outputs(ckpt, cache.open(), mean_rows)
            results[f"{name} (rescored, raw)"] = retrieval_metrics(vecs, caption_vecs, owner)
            results[f"{name} (rescored, centred)"] = centred_metrics(vecs, caption_vecs, owner, train_out,
                                                                    train_tgts)
            if args.crops:
                multi, _ = encode_images(args.work / name / "image_encoder.onnx", [p.image for p in test],
                                         crops=args.crops)
                results[f"{name} (rescored, centred, {args.crops}-crop images)"] = centred_metrics(
                    multi, caption_vecs, owner, train_out, train_tgts)
            print(format_table(results), flush=True)
        out = args.work / f"bench_rescore-{args.rescore.replace(',', '+')}.json"
        out.write_text(json.dumps({"results": results}, indent=1))
        return 0
    if args.linear_contrastive:
        n_train = len(train_imgs)
        train_v0 = pooled_rows(net, cache.open(), np.arange(n_train) * base_cfg.train_views,
                               args.work / f"pooled-{cache.path.stem}-v0.npy")
        test_v0 = pooled_rows(net, test_cache.open(), np.arange(len(test)),
                              args.work / f"pooled-{test_cache.path.stem}-v0.npy")
        train_out, test_out = linear_contrastive(train_v0, train_tgts, test_v0)
        results["linear InfoNCE on frozen features (this run)"] = retrieval_metrics(test_out, caption_vecs,
                                                                                     owner)
        results["linear InfoNCE on frozen features, centred (this run)"] = centred_metrics(
            test_out, caption_vecs, owner, train_out, train_tgts)
        ridge_v0 = ridge_baseline(train_v0, train_tgts, test_v0, caption_vecs, owner, alpha=args.ridge_alpha,
                                  centre=True)
        results["ridge on frozen features, one view, centred (this run)"] = ridge_v0
        print(format_table(results), flush=True)
    if not args.skip_baseline:
        train_f = pooled_cached(net, cache.open(), args.work / f"pooled-{cache.path.stem}.npy")
        test_f = pooled_cached(net, test_cache.open(), args.work / f"pooled-{test_cache.path.stem}.npy")
        targets = np.repeat(train_tgts, base_cfg.train_views, axis=0)
        ridge = ridge_baseline(train_f, targets, test_f, caption_vecs, owner, alpha=args.ridge_alpha)
        results["ridge on frozen GoogLeNet features (this run)"] = ridge
        log.info("ridge baseline: %s", json.dumps(ridge))
        # The same ridge map, scored centred: its training outputs' mean is the mean training target.
        ridge_c = ridge_baseline(train_f, targets, test_f, caption_vecs, owner, alpha=args.ridge_alpha,
                                 centre=True)
        results["ridge on frozen GoogLeNet features, centred (this run)"] = ridge_c
        log.info("ridge baseline, centred: %s", json.dumps(ridge_c))
        print(format_table(results), flush=True)

    for name in [n for n in args.configs.split(",") if n]:
        cfg = CONFIGS[name]
        if args.epochs is not None:
            cfg = replace(cfg, epochs=args.epochs)
        t0 = time.monotonic()
        view_targets = caption_view_targets(text, cfg.train_views) if name.endswith("-captions") else None
        ckpt = train_regressor(cfg, images, text.vectors, splits, args.weights, args.work / name,
                               cache_dir=args.work, view_targets=view_targets)
        t_train = time.monotonic() - t0
        parity = export_onnx(ckpt, args.work / name / "image_encoder.onnx", [p.image for p in test[:8]])
        t0 = time.monotonic()
        vecs, failed = encode_images(args.work / name / "image_encoder.onnx", [p.image for p in test])
        t_enc = time.monotonic() - t0
        m = retrieval_metrics(vecs, caption_vecs, owner)
        history = read_checkpoint(ckpt)["history"]
        results[f"GoogLeNet regressor, {name} config (this run)"] = m
        train_out = model_outputs(ckpt, cache.open(), mean_rows)
        mc = centred_metrics(vecs, caption_vecs, owner, train_out, train_tgts)
        results[f"GoogLeNet regressor, {name} config, centred (this run)"] = mc
        if args.crops:
            multi, _ = encode_images(args.work / name / "image_encoder.onnx", [p.image for p in test],
                                     crops=args.crops)
            results[f"GoogLeNet regressor, {name} config, centred, {args.crops}-crop images (this run)"] = (
                centred_metrics(multi, caption_vecs, owner, train_out, train_tgts))
        np.save(args.work / name / "test_vectors.npy", vecs)
        text.save(args.work / name / "text")  # --rescore NAME scores in this space (the next run retrains)
        np.save(args.work / name / "train_mean_image.npy", train_out.mean(axis=0))
        timings[name] = {"train_s": round(t_train, 1), "encode_s": round(t_enc, 1), "parity": parity,
                         "failed": failed, "history": history}
        log.info("%s: %s; centred: %s; %s", name, json.dumps(m), json.dumps(mc), json.dumps(timings[name]))
        print(format_table(results), flush=True)

    timings["total_s"] = round(time.monotonic() - t_start, 1)
    summary = {"results": results, "timings": timings}
    tag = args.configs or "extra"
    out_name = "bench_retrieval.json" if tag == "seed" else f"bench_retrieval-{tag}.json"
    (args.work / out_name.replace(",", "+")).write_text(json.dumps(summary, indent=1))
    print(format_table(results))
    print(json.dumps(timings))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
