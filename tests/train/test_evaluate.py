"""Retrieval metrics: exact answers on hand-made vectors, well-formed numbers on a real bundle."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from space.errors import BundleInvalid
from train.evaluate import eval_main, evaluate_bundle, format_table, retrieval_metrics, ridge_baseline


def test_perfect_and_known_ranks() -> None:
    images = np.eye(4, dtype=np.float32)
    captions = np.repeat(images, 2, axis=0)
    owner = np.repeat(np.arange(4), 2)
    m = retrieval_metrics(images, captions, owner)
    assert m["image_search"] == {"r1": 100.0, "r5": 100.0, "r10": 100.0, "medr": 1.0}
    assert m["annotation"]["r1"] == 100.0 and m["n_queries"] == 8 and m["n_images"] == 4
    # Swap two images' vectors: their captions now rank their image 2nd (out of 4).
    swapped = images[[1, 0, 2, 3]]
    m = retrieval_metrics(swapped, captions, owner)
    assert m["image_search"]["r1"] == 50.0 and m["image_search"]["r5"] == 100.0
    # A zero caption ties with every image: it counts as rank 4, not 1.
    captions[0] = 0
    m = retrieval_metrics(images, captions, owner)
    assert m["image_search"]["r1"] == pytest.approx(87.5)


def test_ridge_baseline_recovers_a_linear_map() -> None:
    rng = np.random.default_rng(0)
    w = rng.normal(size=(20, 8))
    xtr, xte = rng.normal(size=(200, 20)), rng.normal(size=(30, 20))
    caps, owner = np.repeat(xte @ w, 2, axis=0), np.repeat(np.arange(30), 2)
    m = ridge_baseline(xtr, xtr @ w, xte, caps, owner, alpha=1e-4)
    assert m["image_search"]["r1"] >= 95.0


def test_evaluate_small_real_bundle(small_bundle: Path, capsys: pytest.CaptureFixture[str]) -> None:
    m = evaluate_bundle(small_bundle)
    items = json.loads((small_bundle / "images.json").read_text())["items"]
    n_test = sum(it["split"] == "test" for it in items)
    assert m["n_images"] == n_test and m["n_queries"] == sum(len(it["captions"]) for it in items
                                                          if it["split"] == "test")
    for side in ("image_search", "annotation"):
        r = m[side]
        assert 0 <= r["r1"] <= r["r5"] <= r["r10"] <= 100
        assert 1 <= r["medr"] <= max(m["n_images"], m["n_queries"])
    # Better than chance (R@10 by chance = 10/n_test; quick mode measured 38.2 vs 29.4 on 34 images).
    assert m["image_search"]["r10"] > 1.2 * 1000 / n_test
    assert capsys.readouterr().out == ""
    assert eval_main(small_bundle, as_json=True) == 0
    assert json.loads(capsys.readouterr().out)["n_queries"] == m["n_queries"]
    assert eval_main(small_bundle, as_json=False) == 0
    table = capsys.readouterr().out
    assert "Klein et al. 2015" in table and "this bundle" in table


def test_missing_bundle_is_a_domain_error(tmp_path: Path) -> None:
    with pytest.raises(BundleInvalid):
        evaluate_bundle(tmp_path)
    assert eval_main(tmp_path, as_json=True) == 1


def test_table_lists_published_rows() -> None:
    m = {"image_search": {"r1": 1.0, "r5": 2.0, "r10": 3.0, "medr": 50.0},
         "annotation": {"r1": 1.0, "r5": 2.0, "r10": 3.0, "medr": 60.0}, "n_images": 1000, "n_queries": 5000}
    t = format_table({"ours": m})
    assert t.count("\n") >= 6 and "DeViSE" in t and "50 / 60" in t


def test_multilingual_image_search_is_well_formed(small_bundle: Path, multilingual_tsv: Path) -> None:
    from train.evaluate import evaluate_multilingual

    m = evaluate_multilingual(small_bundle, multilingual_tsv)
    assert 0 < m["n_queries"] <= m["n_images"]
    for lang in ("en", "es", "ca"):
        r = m[lang]
        assert 0 <= r["r1"] <= r["r5"] <= r["r10"] <= 100 and 0 <= r["n_empty_queries"] <= m["n_queries"]
    # The small bundle's vocabulary is English: Spanish and Catalan queries lose far more words.
    assert m["es"]["n_empty_queries"] > m["en"]["n_empty_queries"]
    assert m["ca"]["n_empty_queries"] > m["en"]["n_empty_queries"]
    assert m["en"]["r10_vs_en"] == 1.0 or m["en"]["r10"] == 0
