"""The word map: a 2-D t-SNE of the most frequent words' vectors."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from space.textspace import TextSpace
from train.progress import ProgressCallback
from train.report.mosaic import tsne_2d


def word_map_layout(
    space: TextSpace, n_words: int, *, seed: int, counts: Mapping[str, int] | None = None,
    progress: ProgressCallback | None = None,
) -> dict[str, Any]:
    """t-SNE of the ``n_words`` most frequent words the space knows: words, points, counts, trustworthiness.

    ``counts`` are what the posts' own captions use (:func:`train.report.text_analyses.count_words`);
    without them, the space's training counts (which include every reference caption).
    """
    from sklearn.manifold import trustworthiness

    if counts is None:
        order = np.argsort(-space.counts, kind="stable")[: max(0, n_words)]
        chosen_counts = [int(space.counts[i]) for i in order]
    else:
        known = sorted(((c, w) for w, c in counts.items() if w in space.index and c > 0),
                       key=lambda cw: (-cw[0], cw[1]))[: max(0, n_words)]
        order = np.array([space.index[w] for _, w in known], dtype=np.int64)
        chosen_counts = [c for c, _ in known]
    chosen = [space.words[i] for i in order]
    vectors = space.unit_vectors[order]
    if len(chosen) == 0:
        return {"words": [], "points": np.zeros((0, 2)), "counts": [], "method": "none",
                "trustworthiness": None}
    points, method = tsne_2d(vectors, seed=seed, perplexity=min(30.0, max(2.0, len(chosen) / 10)),
                             progress=progress, stage="word_map")
    k = min(10, (len(chosen) - 1) // 2)
    trust = float(trustworthiness(vectors, points, n_neighbors=k, metric="cosine")) if k >= 1 else None
    return {
        "words": chosen,
        "points": points,
        "counts": chosen_counts,
        "method": method,
        "trustworthiness": trust,
    }
