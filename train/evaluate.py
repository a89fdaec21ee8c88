"""Retrieval evaluation of a bundle on its test split (the standard Flickr8k 1K-test protocol).

Similarities are computed a block of captions at a time, so memory stays at one block (64 MB) however
large the test split. A test split of more than 5,000 images (a crawl's 15 %: 49,000 at the original's
scale) is also scored on samples drawn with a fixed seed, as on MSCOCO: five disjoint 1K folds (their
mean compares with published 1K tables) and one 5K set, under ``protocols``; the top-level figures stay
those of the whole split.

*Image search* ranks the test images for every test caption (each caption embedded alone, exactly as a
user query would be); *annotation* ranks all test captions for every test image, counting the first of its
own captions. Cosine similarity; R@K in percent; median rank 1-based. Ties count against the model (an
item ranks below every item scoring at least as high), so a caption with no known word scores no hit.

A bundle with ``centering.npz`` (``space.centering``) is scored centred, as it is meant to be served:
image vectors minus the mean training image vector, caption vectors minus the mean training caption
vector. Its metrics also carry ``uncentred``, the same protocol on the raw vectors.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from space import bundle
from space.centering import Centering
from space.errors import BundleInvalid, SpaceError
from space.textspace import TextSpace, unit
from space.tokenize import tokenize
from train.config import IngestConfig
from train.corpus.ingest import IngestStats, read_corpus
from train.corpus.posts import Post
from train.image.encode import encode_images

KS = (1, 5, 10)
BLOCK_BYTES = 64 << 20  # one block of caption × image similarities
SAMPLE_5K = 5_000  # a test split above this is also scored on samples: 5K, and five 1K folds
SAMPLE_SEED = 0
# Flickr8k, 1K test images, R@1/R@5/R@10 (image search, annotation).
PUBLISHED: tuple[tuple[str, tuple[float, float, float], tuple[float, float, float]], ...] = (
    ("DeViSE (Karpathy et al. 2014 re-run)", (5.9, 20.1, 29.6), (4.8, 16.5, 27.3)),
    ("Karpathy & Fei-Fei 2015, BRNN", (11.8, 32.1, 44.7), (16.5, 40.6, 54.2)),
    ("Kiros et al. 2014, VGG-19", (12.5, 37.0, 51.5), (18.0, 40.9, 55.0)),
    ("Klein et al. 2015, FV GMM+HGLMM", (21.2, 50.0, 64.8), (31.0, 59.3, 73.7)),
)


def _summary(ranks: np.ndarray) -> dict[str, float]:
    out = {f"r{k}": round(float(np.mean(ranks <= k) * 100), 2) for k in KS}
    out["medr"] = float(np.median(ranks))
    return out


def _blocks(n_rows: int, n_cols: int, block_bytes: int) -> list[slice]:
    """Row slices whose float32 similarity block (rows × ``n_cols``) fits ``block_bytes``."""
    rows = max(1, block_bytes // (4 * max(1, n_cols)))
    return [slice(s, min(n_rows, s + rows)) for s in range(0, n_rows, rows)]


def retrieval_metrics(image_vecs: np.ndarray, caption_vecs: np.ndarray,
                      caption_owner: Sequence[int] | np.ndarray,
                      block_bytes: int = BLOCK_BYTES) -> dict[str, Any]:
    """R@1/5/10 and median rank both ways; ``caption_owner[j]`` is the image row of caption ``j``
    (:func:`retrieval_ranks`)."""
    search_ranks, ann_ranks = retrieval_ranks(image_vecs, caption_vecs, caption_owner, block_bytes)
    return {
        "image_search": _summary(search_ranks),
        "annotation": _summary(ann_ranks),
        "n_images": len(ann_ranks),
        "n_queries": len(search_ranks),
    }


def retrieval_ranks(image_vecs: np.ndarray, caption_vecs: np.ndarray,
                    caption_owner: Sequence[int] | np.ndarray,
                    block_bytes: int = BLOCK_BYTES) -> tuple[np.ndarray, np.ndarray]:
    """(each caption's rank of its image, each image's rank of its best own caption), 1-based.

    The captions × images similarities are computed a block of captions at a time (at most
    ``block_bytes`` of them at once; the whole matrix of 49,000 test images was 12 GB), in two passes: the
    first ranks each caption's image and finds each image's best own caption, the second counts, for each
    image, the captions scoring at least that. Each similarity is the same float32 product either way.
    """
    owner = np.asarray(caption_owner, dtype=np.int64)
    images = unit(np.asarray(image_vecs, np.float32))
    captions = unit(np.asarray(caption_vecs, np.float32))
    n_images, blocks = len(images), _blocks(len(owner), len(images), block_bytes)
    search_ranks = np.empty(len(owner), dtype=np.int64)
    correct = np.empty(len(owner), dtype=np.float32)
    for rows in blocks:
        sims = captions[rows] @ images.T
        correct[rows] = sims[np.arange(len(sims)), owner[rows]]
        search_ranks[rows] = (sims >= correct[rows, None]).sum(axis=1)
    # Annotation: an image ranks its best own caption among all captions; its other captions never push it
    # down. (Own captions' similarities are the ``correct`` values: the same products.)
    has_caption = np.zeros(n_images, dtype=bool)
    has_caption[owner] = True
    best = np.full(n_images, np.inf, dtype=np.float32)  # no caption: nothing scores at least it
    if len(owner):
        best_found = np.full(n_images, -np.inf, dtype=np.float32)
        np.maximum.at(best_found, owner, correct)
        best = np.where(has_caption, best_found, best)
    at_least = np.zeros(n_images, dtype=np.int64)
    for rows in blocks:
        at_least += (captions[rows] @ images.T >= best[None, :]).sum(axis=0)
    own_at_least = np.bincount(owner, weights=correct >= best[owner], minlength=n_images).astype(np.int64)
    return search_ranks, np.where(has_caption, 1 + at_least - own_at_least, len(owner))


def _subset(image_rows: np.ndarray, image_vecs: np.ndarray, caption_vecs: np.ndarray,
            owner: np.ndarray) -> dict[str, Any]:
    """The metrics of a sample of the test images with their own captions."""
    new_row = np.full(len(image_vecs), -1, dtype=np.int64)
    new_row[image_rows] = np.arange(len(image_rows))
    keep = new_row[owner] >= 0
    return retrieval_metrics(image_vecs[image_rows], caption_vecs[keep], new_row[owner[keep]])


def _mean(results: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for side in ("image_search", "annotation"):
        out[side] = {k: round(float(np.mean([r[side][k] for r in results])), 2) for k in results[0][side]}
    out["n_images"] = results[0]["n_images"]
    out["n_queries"] = round(float(np.mean([r["n_queries"] for r in results])), 1)
    return out


def sampled_protocols(image_vecs: np.ndarray, caption_vecs: np.ndarray,
                      caption_owner: Sequence[int] | np.ndarray, seed: int = SAMPLE_SEED) -> dict[str, Any]:
    """The 1K and 5K protocols on a test split of more than 5,000 images, as on MSCOCO: 5,000 test images
    drawn with a fixed seed, scored as one 5K set and as five disjoint 1K folds (their mean)."""
    owner = np.asarray(caption_owner, dtype=np.int64)
    image_vecs, caption_vecs = np.asarray(image_vecs), np.asarray(caption_vecs)
    picked = np.random.default_rng(seed).permutation(len(image_vecs))[:SAMPLE_5K]
    folds = [_subset(np.sort(picked[k::5]), image_vecs, caption_vecs, owner) for k in range(5)]
    return {
        "about": (f"{len(image_vecs):,} test images: besides the whole split, {SAMPLE_5K:,} of them drawn "
                  f"with seed {seed}, scored as one 5K set and as five disjoint 1K folds (their mean: the 1K "
                  "figures compare with published 1K tables)"),
        "seed": seed,
        "1k": {**_mean(folds), "folds": len(folds)},
        "5k": _subset(np.sort(picked), image_vecs, caption_vecs, owner),
    }


def score_test_split(image_vecs: np.ndarray, caption_vecs: np.ndarray,
                       caption_owner: Sequence[int] | np.ndarray) -> dict[str, Any]:
    """:func:`retrieval_metrics` of the whole test split, with the sampled 1K and 5K protocols
    (``protocols``) when it holds more than 5,000 images."""
    metrics = retrieval_metrics(image_vecs, caption_vecs, caption_owner)
    if len(image_vecs) > SAMPLE_5K:
        metrics["protocols"] = sampled_protocols(image_vecs, caption_vecs, caption_owner)
    return metrics


def embed_captions(space: TextSpace, captions: Sequence[str]) -> tuple[np.ndarray, int]:
    """Each caption embedded alone as a text query is (the joint word vectors when the space has them;
    a zero vector when no word is known) and how many were empty."""
    out = np.zeros((len(captions), space.matrix(joint=True).shape[1]), dtype=np.float32)
    empty = 0
    for j, caption in enumerate(captions):
        vec, _ = space.embed_tokens(tokenize(caption), joint=True)
        if vec is None:
            empty += 1
        else:
            out[j] = vec
    return out, empty


@dataclass(frozen=True)
class SplitVectors:
    """A bundle's test split as ``train eval`` scores it: raw image and caption vectors, each caption's
    image row, the bundle's centring (None when served raw), empty queries and images encoded anew."""

    images: np.ndarray
    captions: np.ndarray
    owner: list[int]
    centering: Centering | None
    n_empty: int
    n_encoded: int

    def served(self) -> tuple[np.ndarray, np.ndarray]:
        """(images, captions) as the bundle is served: centred when it is centred."""
        if self.centering is None:
            return self.images, self.captions
        return self.centering.images(self.images), self.centering.texts(self.captions)


def split_vectors(bundle_dir: Path, config: dict[str, Any] | None = None) -> SplitVectors:
    """The vectors of ``bundle_dir``'s test split (:func:`evaluation_set`); ``config`` stands in for the
    manifest's (a staged bundle has no manifest yet)."""
    bundle_dir = Path(bundle_dir)
    try:
        space = TextSpace.load(bundle_dir)
        vectors = np.load(bundle_dir / bundle.IMAGE_VECTORS)
        items = json.loads((bundle_dir / bundle.IMAGE_META).read_text(encoding="utf-8"))["items"]
        manifest = ({"config": config} if config is not None else
                    json.loads((bundle_dir / bundle.MANIFEST).read_text(encoding="utf-8")))
    except (OSError, KeyError, ValueError) as exc:
        raise BundleInvalid(f"cannot read the bundle at {bundle_dir}: {exc}") from exc
    image_vecs, captions, owner, encoded = evaluation_set(bundle_dir, manifest, items, vectors)
    caption_vecs, empty = embed_captions(space, captions)
    return SplitVectors(image_vecs, caption_vecs, owner, Centering.load(bundle_dir), empty, encoded)


def evaluate_bundle(bundle_dir: Path, config: dict[str, Any] | None = None) -> dict[str, Any]:
    """Retrieval metrics of ``bundle_dir`` on its test split (:func:`split_vectors`)."""
    test = split_vectors(bundle_dir, config)
    metrics = score_test_split(*test.served(), test.owner)
    if test.centering is not None:
        metrics["centred"] = True
        metrics["uncentred"] = score_test_split(test.images, test.captions, test.owner)
    metrics["n_empty_queries"] = test.n_empty
    metrics["n_encoded_for_eval"] = test.n_encoded
    return metrics


def _corpus_test_posts(manifest: dict[str, Any]) -> list[Post] | None:
    """The test posts of the bundle's corpus as read (before any filter), when the corpus names its
    split (Flickr8k); None otherwise."""
    config = (manifest.get("config") or {}).get("ingest") or {}
    if config.get("format") != "flickr8k" or not config.get("corpus"):
        return None
    cfg = IngestConfig(corpus=Path(config["corpus"]), format="flickr8k", limit=config.get("limit"))
    try:
        posts = list(read_corpus(cfg, IngestStats()))
    except OSError:
        return None
    return [p for p in posts if p.split == "test"]


def evaluation_set(bundle_dir: Path, manifest: dict[str, Any], items: list[dict[str, Any]],
             vectors: np.ndarray) -> tuple[np.ndarray, list[str], list[int], int]:
    """(image vectors, captions, caption owner rows, images encoded anew) of the bundle's test split.

    When the corpus names its own split (Flickr8k's 1,000 test images), every test image of the corpus is
    scored, whatever the filters kept: an image the bundle left out is encoded by the bundle's encoder
    (with the bundle's crops and framing), so the figures compare with published ones on the same 1,000
    images.
    Otherwise the test split is the bundle's own ``split == "test"`` items.
    """
    row_of = {str(it.get("path")): int(it.get("key", row)) for row, it in enumerate(items)}
    corpus_test = _corpus_test_posts(manifest)
    if corpus_test:
        tests = [(str(Path(p.image).resolve()), list(p.reference_captions)) for p in corpus_test]
    else:
        tests = [(str(it.get("path")), it.get("captions") or [it.get("caption") or ""])
                 for it in items if it.get("split") == "test"]
    if not tests:
        raise BundleInvalid(f"the bundle at {bundle_dir} has no test items")
    missing = [path for path, _ in tests if path not in row_of]
    fresh: dict[str, np.ndarray] = {}
    if missing:
        encoded, failed = encode_images(Path(bundle_dir) / bundle.ENCODER, [Path(p) for p in missing],
                                        crops=bundle.manifest_crops(manifest),
                                        framing=bundle.manifest_framing(manifest))
        fresh = {p: encoded[i] for i, p in enumerate(missing) if i not in set(failed)}
    image_vecs: list[np.ndarray] = []
    captions: list[str] = []
    owner: list[int] = []
    for path, caps in tests:
        vec = vectors[row_of[path]] if path in row_of else fresh.get(path)
        if vec is None:
            continue
        owner.extend([len(image_vecs)] * len(caps))
        image_vecs.append(np.asarray(vec, np.float32))
        captions.extend(caps)
    return np.stack(image_vecs), captions, owner, len(fresh)


def mean_vectors(train_image_vecs: np.ndarray, train_caption_vecs: np.ndarray) -> Centering:
    """The centring of a space: mean training image vector and mean training caption vector.

    Rows that are all zero (unreadable images, captions with no known word) are left out of the means.
    """
    def mean(v: np.ndarray) -> np.ndarray:
        v = np.asarray(v, np.float64)
        keep = v.any(axis=1)
        if not keep.any():
            return np.zeros(v.shape[1], np.float32)
        return v[keep].mean(axis=0).astype(np.float32)

    return Centering(mean(train_image_vecs), mean(train_caption_vecs))


MULTILINGUAL_COLUMNS = {"en": "en_multi30k", "es": "es_nllb_from_en", "ca": "ca_apertium_from_es_en"}


def read_multilingual_rows(tsv: Path, images: set[str] | None = None) -> list[dict[str, str]]:
    """Rows of the multilingual TSV (quoting off), only those whose ``image`` is in ``images`` if given."""
    import csv

    csv.field_size_limit(1 << 24)
    with tsv.open(encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE))
    return rows if images is None else [r for r in rows if r["image"] in images]


def multilingual_search(space: TextSpace, image_vecs: np.ndarray, row_of: dict[str, int],
                        rows: Sequence[dict[str, str]], columns: dict[str, str] | None = None,
                        centering: Centering | None = None) -> dict[str, Any]:
    """Image search over ``image_vecs`` with each TSV row's caption in each language's column as a query.

    ``row_of`` maps an image file name to its row in ``image_vecs``; ``image_vecs`` are raw (centred here
    when ``centering`` is given, as a centred bundle is served). Each language gets R@1/5/10, median rank,
    its empty-query count and ``r10_vs_en`` (its R@10 over English's; target ≥ 0.8).
    """
    columns = columns or MULTILINGUAL_COLUMNS
    if centering is not None:
        image_vecs = centering.images(image_vecs)
    owner = [row_of[r["image"]] for r in rows]
    out: dict[str, Any] = {"n_images": len(image_vecs), "n_queries": len(rows),
                           "centred": centering is not None}
    for lang, col in columns.items():
        caption_vecs, empty = embed_captions(space, [r[col] for r in rows])
        if centering is not None:
            caption_vecs = centering.texts(caption_vecs)
        m = retrieval_metrics(image_vecs, caption_vecs, owner)
        out[lang] = {**m["image_search"], "n_empty_queries": empty}
    en_r10 = out.get("en", {}).get("r10")
    for lang in columns:
        if en_r10:
            out[lang]["r10_vs_en"] = round(out[lang]["r10"] / en_r10, 3)
    return out


def evaluate_multilingual(bundle_dir: Path, tsv: Path, columns: dict[str, str] | None = None,
                          centre: bool = True) -> dict[str, Any]:
    """Image search on the bundle's test images with one caption per image in each language as queries.

    Rows of ``tsv`` (the Flickr8k multilingual file) join the bundle's test items by image file name; each
    language's R@10 is also given relative to English (``r10_vs_en``, target ≥ 0.8). A centred bundle is
    scored centred unless ``centre`` is false.
    """
    bundle_dir = Path(bundle_dir)
    space = TextSpace.load(bundle_dir)
    vectors = np.load(bundle_dir / bundle.IMAGE_VECTORS)
    items = json.loads((bundle_dir / bundle.IMAGE_META).read_text(encoding="utf-8"))["items"]
    test = [it for it in items if it.get("split") == "test"]
    image_vecs = vectors[[int(it["key"]) for it in test]]
    centering = Centering.load(bundle_dir) if centre else None
    row_of = {Path(it.get("path") or it["post_id"]).name: i for i, it in enumerate(test)}
    rows = read_multilingual_rows(tsv, set(row_of))
    return multilingual_search(space, image_vecs, row_of, rows, columns, centering)


def ridge_baseline(train_features: np.ndarray, train_targets: np.ndarray, test_features: np.ndarray,
                   caption_vecs: np.ndarray, caption_owner: Sequence[int] | np.ndarray,
                   alpha: float = 1.0, centre: bool = False) -> dict[str, Any]:
    """Closed-form ridge map from frozen CNN features to caption vectors, scored like a bundle.

    With ``centre``, both sides are centred by their training means, which for a ridge map with an
    intercept are one vector: the mean training target.
    """
    mu, sd = train_features.mean(0), train_features.std(0) + 1e-6
    x = (train_features - mu) / sd
    ym = train_targets.mean(0)
    w = np.linalg.solve(x.T @ x + alpha * len(x) * np.eye(x.shape[1]), x.T @ (train_targets - ym))
    pred = ((test_features - mu) / sd) @ w + ym
    if centre:
        c = Centering(ym.astype(np.float32), ym.astype(np.float32))
        return retrieval_metrics(c.images(pred), c.texts(caption_vecs), caption_owner)
    return retrieval_metrics(pred.astype(np.float32), caption_vecs, caption_owner)


def _row(name: str, search: Sequence[float], ann: Sequence[float], medr: str = "") -> str:
    fmt = " / ".join(f"{v:4.1f}" for v in search), " / ".join(f"{v:4.1f}" for v in ann)
    return f"| {name:<38} | {fmt[0]:>18} | {fmt[1]:>18} | {medr:>9} |"


def format_table(results: dict[str, dict[str, Any]]) -> str:
    """A Markdown table of ``results`` (name → metrics) beside the published Flickr8k 1K-test rows."""
    lines = [
        "| method (Flickr8k, 1K test) | image search R@1/5/10 | annotation R@1/5/10 | med r s/a |",
        "|---|---|---|---|",
    ]
    for name, search, ann in PUBLISHED:
        lines.append(_row(name, search, ann))
    rows: dict[str, dict[str, Any]] = {}
    for name, m in results.items():
        protocols = m.get("protocols")
        if protocols is None:
            rows[name] = m
            continue
        rows[f"{name}, 1K (mean of {protocols['1k']['folds']} samples)"] = protocols["1k"]
        rows[f"{name}, 5K sample"] = protocols["5k"]
        rows[f"{name}, whole test split"] = m
    for name, m in rows.items():
        s, a = m["image_search"], m["annotation"]
        lines.append(_row(name, [s[f"r{k}"] for k in KS], [a[f"r{k}"] for k in KS],
                          f"{s['medr']:g} / {a['medr']:g}"))
    any_m = next(iter(results.values()), None)
    if any_m is not None:
        lines.append(f"({any_m['n_images']} test images, {any_m['n_queries']} caption queries)")
        if "protocols" in any_m:
            lines.append(f"({any_m['protocols']['about']})")
    return "\n".join(lines)


def eval_main(bundle: Path, as_json: bool) -> int:
    """``train eval``: print the bundle's metrics as JSON or as the human table; 0 on success."""
    try:
        metrics = evaluate_bundle(bundle)
    except SpaceError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if as_json:
        print(json.dumps(metrics))
    else:
        print(format_table({f"this bundle ({Path(bundle).name})": metrics}))
    return 0
