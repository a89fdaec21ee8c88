"""The word map: a 2-D t-SNE of the most frequent words' vectors."""

from __future__ import annotations

from typing import Any

import numpy as np

from space.textspace import TextSpace
from train.progress import ProgressCallback
from train.report.mosaic import tsne_2d


def word_map_layout(
    space: TextSpace, n_words: int, *, seed: int, progress: ProgressCallback | None = None
) -> dict[str, Any]:
    """t-SNE of the ``n_words`` most frequent words (by ``space.counts``): words, points, trustworthiness."""
    from sklearn.manifold import trustworthiness

    order = np.argsort(-space.counts, kind="stable")[: max(0, n_words)]
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
        "counts": [int(space.counts[i]) for i in order],
        "method": method,
        "trustworthiness": trust,
    }
