"""Hubness correction (a query bank's normalisation) on a bundle: caption queries against word queries.

    python scripts/bench_hub_norm.py BUNDLE --flickr8k ../shared/data/flickr8k [--k 10] [--alpha 0.25 0.5]

A few photos of a space are near many queries ("hubs") and crowd the top of every ranking. The remedy
of cross-modal retrieval papers (CSLS; QB-Norm, Bogolin et al. 2022) scores an item as ``cos(q, x) -
alpha · h(x)``, where ``h(x)`` is the mean cosine of ``x`` to its ``k`` nearest queries of a bank: here
the training captions, each embedded as a query, for photos (image search); the training photos for
captions (annotation). No test item is used to correct any other.

This measures, on the bundle's test split and on the answers people see:

- caption → image and image → caption R@1/5/10 (the ``train eval`` protocol), raw and corrected;
- word → images P@10 over the 100 most frequent content words: over the whole corpus (each post's search
  vector, corrected by its own hub score) and on the 1,000 test photos from pixels only, as
  ``scripts/bench_answers.py`` scores them.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

from bench_answers import counts_as, frequent_content_words, read_flickr8k  # noqa: E402

from engine.model import load_model  # noqa: E402
from space.query import parse_query  # noqa: E402
from space.search import search_vectors  # noqa: E402
from space.textspace import unit  # noqa: E402
from space.tokenize import stop_words  # noqa: E402
from train.evaluate import embed_captions, retrieval_ranks, split_vectors  # noqa: E402

BLOCK = 2048


def hub_scores(items: np.ndarray, bank: np.ndarray, k: int) -> np.ndarray:
    """Each unit row's mean cosine to its ``k`` nearest unit rows of ``bank``, a block of rows at a time."""
    out = np.empty(len(items), np.float32)
    for s in range(0, len(items), BLOCK):
        sims = items[s:s + BLOCK] @ bank.T
        out[s:s + BLOCK] = np.partition(sims, -k, axis=1)[:, -k:].mean(axis=1)
    return out


def with_bias(items: np.ndarray, bias: np.ndarray) -> np.ndarray:
    """Rows whose cosine with a query row ``[q, 1, 0]`` is ``(q·x - bias) / constant``: ``[x, -bias, r]``,
    ``r`` making every row's norm the same, so a cosine ranking subtracts the bias exactly."""
    room = float(np.max(bias ** 2)) + 1.0
    return np.hstack([unit(items), -bias[:, None], np.sqrt(room - bias ** 2)[:, None]]).astype(np.float32)


def as_queries(vecs: np.ndarray) -> np.ndarray:
    """Query rows ``[q, 1, 0]`` for :func:`with_bias` (an empty query stays all zero)."""
    known = vecs.any(axis=1, keepdims=True).astype(np.float32)
    return np.hstack([unit(vecs), known, np.zeros((len(vecs), 1), np.float32)])


def summary(ranks: np.ndarray) -> list[float]:
    """R@1/5/10 in percent."""
    return [round(float(np.mean(ranks <= k) * 100), 1) for k in (1, 5, 10)]


def main() -> int:
    """Score the bundle raw and with each ``alpha``; print a Markdown table (and JSON with ``--json``)."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("bundle", type=Path)
    p.add_argument("--flickr8k", type=Path, required=True)
    p.add_argument("--k", type=int, default=10, help="bank neighbours per hub score")
    p.add_argument("--alpha", type=float, nargs="+", default=[0.25, 0.5])
    p.add_argument("--words", type=int, default=100)
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args()
    bundle = args.bundle.resolve()
    model = load_model(bundle, ort_threads=2)
    test = split_vectors(bundle)
    images, captions = (unit(v) for v in test.served())
    train = [i for i, it in enumerate(model.items) if it.get("split") == "train"]
    stored = np.load(bundle / "images.npy")
    bank_images = unit(stored[train])
    bank_captions = unit(embed_captions(model.space, [c for i in train
                                                      for c in model.items[i].get("captions") or []])[0])
    image_hub = hub_scores(images, bank_captions, args.k)
    caption_hub = hub_scores(captions, bank_images, args.k)

    ref = read_flickr8k(args.flickr8k)
    function_words = stop_words("en")
    words = frequent_content_words(ref, model, args.words, function_words)
    queries = np.stack([model.text_query(parse_query(w))[0] for w in words])
    names = [Path(str(it.get("path", ""))).name for it in model.items]
    hits = np.array([[counts_as(w, ref.words_of(n), function_words) for n in names] for w in words])
    search = unit(search_vectors(stored, np.load(bundle / "captions.npy")))
    search_hub = hub_scores(search, bank_captions, args.k)
    test_rows = [i for i, it in enumerate(model.items) if it.get("split") == "test"]
    pixels, pixels_hub = unit(stored[test_rows]), hub_scores(unit(stored[test_rows]), bank_captions, args.k)

    def p10(vectors: np.ndarray, bias: np.ndarray, truth: np.ndarray, alpha: float) -> float:
        top = np.argsort(-(queries @ vectors.T - alpha * bias[None, :]), axis=1, kind="stable")[:, :10]
        return round(100 * float(np.take_along_axis(truth, top, axis=1).mean()), 1)

    rows: list[dict[str, Any]] = []
    for alpha in [0.0, *args.alpha]:
        search_ranks, _ = retrieval_ranks(with_bias(images, alpha * image_hub), as_queries(captions),
                                          test.owner)
        _, annotation_ranks = retrieval_ranks(as_queries(images), with_bias(captions, alpha * caption_hub),
                                              test.owner)
        rows.append({"alpha": alpha, "image_search": summary(search_ranks),
                     "annotation": summary(annotation_ranks),
                     "words_corpus_p10": p10(search, search_hub, hits, alpha),
                     "words_pixels_p10": p10(pixels, pixels_hub, hits[:, test_rows], alpha)})
    print(f"| α (k = {args.k}) | image search R@1 / R@5 / R@10 | annotation R@1 / R@5 / R@10 | "
          "word → images P@10, whole corpus / pixels only |")
    print("|---|---|---|---|")
    for r in rows:
        search, annotation = (" / ".join(map(str, r[side])) for side in ("image_search", "annotation"))
        words = f"{r['words_corpus_p10']} / {r['words_pixels_p10']}"
        print(f"| {r['alpha']:g} | {search} | {annotation} | {words} |")
    if args.json:
        args.json.write_text(json.dumps({"bundle": model.version, "k": args.k, "rows": rows}, indent=1))
    model.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
