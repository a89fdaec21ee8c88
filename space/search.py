"""What a text query is compared with: each post's image vector, and its own caption where it has one.

People search their posts: for "/images cerveza" a post whose caption says "cerveza" should come before
a photo that only looks like one. In a joint-space bundle each post has its caption's vector in the same
space as its image's (``captions.npy``); a post's search vector is the sum of the two unit vectors, the
caption weighted by ``CAPTION_WEIGHT``, normalised. Photos are still compared with image vectors only,
and the retrieval benchmarks score image vectors only (pixels).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from space import bundle
from space.textspace import unit

CAPTION_WEIGHT = 1.0
SEARCH_INDEX = "search.usearch"


def search_vectors(images: np.ndarray, captions: np.ndarray, weight: float = CAPTION_WEIGHT) -> np.ndarray:
    """Unit rows of ``unit(image) + weight · unit(caption)`` (the image alone where a caption is empty)."""
    caption_part = np.float32(weight) * unit(np.asarray(captions, np.float32))
    return unit(unit(np.asarray(images, np.float32)) + caption_part)


def load_search_vectors(bundle_dir: Path, images: np.ndarray,
                        weight: float = CAPTION_WEIGHT) -> np.ndarray | None:
    """The bundle's search vectors from its image vectors and ``captions.npy``; None without captions."""
    path = Path(bundle_dir) / bundle.CAPTION_VECTORS
    if not path.is_file():
        return None
    captions = np.load(path)
    if captions.shape != np.shape(images):
        raise bundle.BundleInvalid(
            f"{path.name} holds {captions.shape}, the image vectors {np.shape(images)}")
    return search_vectors(images, captions, weight)
