"""The engine serves a centred bundle as the trainer evaluated it: centred images, queries and photos."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from engine import service
from engine.model import load_model
from engine.service import ImageLimits
from space import bundle
from space.centering import Centering
from space.query import parse_query
from space.textspace import unit
from space.vectorindex import load_index, search

LIMITS = ImageLimits(max_bytes=10 << 20, max_pixels=50_000_000)


def _centred(path: Path) -> tuple[Centering, np.ndarray]:
    centering = Centering.load(path)
    assert centering is not None, "seed-recipe bundles are built centred (ImageConfig.centre)"
    return centering, unit(centering.images(np.load(path / bundle.IMAGE_VECTORS)))


def test_text_query_ranks_centred_images(seed_bundle: Path) -> None:
    model = load_model(seed_bundle)
    centering, images = _centred(seed_bundle)
    query = parse_query("dog -grass")
    answer = json.loads(service.images(model, [service.ImageJob(query, 8)])[0])
    vec, _ = centering.embed_query(model.space, query)
    expected = [model.ids[i] for i in np.argsort(-(images @ vec), kind="stable")[:8]]
    assert [hit["id"] for hit in answer["images"]] == expected
    raw_vec, _ = model.space.embed_query(query)
    raw_order = np.argsort(-(unit(np.load(seed_bundle / bundle.IMAGE_VECTORS)) @ raw_vec))[:8]
    # Centring changes the answer (else this test could not tell the two apart).
    assert expected != [model.ids[i] for i in raw_order]


def test_photo_finds_itself_and_hashtags_stay_raw(seed_bundle: Path) -> None:
    model = load_model(seed_bundle)
    items = json.loads((seed_bundle / bundle.IMAGE_META).read_text(encoding="utf-8"))["items"]
    path = Path(items[0]["path"])
    raw = service.encode_image(model, path.read_bytes(), LIMITS)
    assert model.centering is not None
    hits = json.loads(service.similar(model, raw, 3))["images"]
    assert hits[0]["id"] == model.ids[0] and hits[0]["score"] > 0.99
    words = json.loads(service.hashtags(model, raw, 5))["hashtags"]
    sims = model.space.unit_vectors @ unit(raw)
    assert words[0]["word"] == model.space.words[int(np.argmax(sims))]


def test_image_index_holds_centred_vectors(seed_bundle: Path) -> None:
    manifest = json.loads((seed_bundle / bundle.MANIFEST).read_text(encoding="utf-8"))
    assert manifest["image_index_centred"] is True
    _, images = _centred(seed_bundle)
    index = load_index(seed_bundle / bundle.IMAGE_INDEX)
    for row in (0, len(images) // 2, len(images) - 1):
        keys, sims = search(index, images[row], 1, exact=True)
        assert keys[0] == row and sims[0] == pytest.approx(1.0, abs=1e-3)


def test_uncentred_index_of_a_centred_bundle_is_rebuilt(seed_bundle: Path, tmp_path: Path) -> None:
    copy = tmp_path / seed_bundle.name
    shutil.copytree(seed_bundle, copy)
    # As a trainer older than centred indexes wrote it: an index of the raw vectors, no flag.
    bundle.update_manifest(copy, image_index_centred=False)
    model = load_model(copy)
    _, images = _centred(copy)
    keys, _ = search(model.images_index, images[5], 1, exact=True)
    assert keys[0] == 5

