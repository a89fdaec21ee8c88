"""The joint map's feature standardisation, written a chunk at a time, gives the whole-array result's bits."""

from __future__ import annotations

import numpy as np

from train.recipes.joint.model import _standardised


def test_chunked_standardisation_equals_the_whole_array_expression() -> None:
    rng = np.random.default_rng(3)
    scaled = rng.standard_normal((1001, 37)) * rng.uniform(0.1, 9, 37) + rng.uniform(-5, 5, 37)
    feats = scaled.astype(np.float32)
    rows = np.flatnonzero(rng.random(1001) < 0.8)
    out, mu, sd = _standardised(feats, rows, chunk=64)
    want_mu = feats[rows].mean(axis=0)
    want_sd = feats[rows].std(axis=0) + 1e-6
    assert np.array_equal(mu, want_mu) and np.array_equal(sd, want_sd)
    assert out.dtype == np.float32 and np.array_equal(out, (feats - want_mu) / want_sd)
