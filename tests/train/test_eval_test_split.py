"""`train eval` scores every test image of a corpus that names its split, whatever the filters kept."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from space import bundle
from train.evaluate import evaluation_set


def test_all_1000_flickr8k_test_images_are_scored(small_bundle: Path, flickr8k_dir: Path) -> None:
    manifest = json.loads((small_bundle / bundle.MANIFEST).read_text(encoding="utf-8"))
    items = json.loads((small_bundle / bundle.IMAGE_META).read_text(encoding="utf-8"))["items"]
    vectors = np.load(small_bundle / bundle.IMAGE_VECTORS)
    # The small bundle read 300 posts; scored against the whole corpus it must encode the other test images.
    manifest["config"]["ingest"]["limit"] = None
    manifest["config"]["ingest"]["corpus"] = str(flickr8k_dir)
    image_vecs, captions, owner, encoded = evaluation_set(small_bundle, manifest, items, vectors)
    standard = (flickr8k_dir / "Flickr_8k.testImages.txt").read_text().split()
    assert len(image_vecs) == len(standard) == 1000
    in_bundle = sum(1 for it in items if it.get("split") == "test")
    assert encoded == 1000 - in_bundle
    assert len(captions) == len(owner) == 5000 and max(owner) == 999
    # The vectors of images the bundle holds are its own rows, not re-encodings.
    row = next(i for i, it in enumerate(items) if it.get("split") == "test")
    assert any(np.array_equal(v, vectors[row]) for v in image_vecs)
