"""Encoding with ONNX Runtime on real images, with a broken file among them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from space.images import load_for_network, network_views, open_image
from train.image.encode import encode_images
from train.image.export import export_model
from train.recipes.seed.config import ImageConfig
from train.recipes.seed.regressor import build_regressor


def test_encode_reports_broken_file_and_matches_torch(tmp_path: Path, weights_dir: Path,
                                                      flickr8k_dir: Path) -> None:
    dim = 16
    torch.manual_seed(0)
    tmin, tmax = np.full(dim, -1, np.float32), np.full(dim, 1, np.float32)
    model = build_regressor(ImageConfig(), weights_dir, dim, tmin, tmax).eval()
    with torch.no_grad():
        model.proj.weight.normal_(0, 0.05)
    onnx_path = tmp_path / "enc.onnx"
    export_model(model, onnx_path)
    real = sorted((flickr8k_dir / "images").glob("*.jpg"))[:5]
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(real[0].read_bytes()[:2000])  # truncated JPEG
    images = [real[0], real[1], broken, real[2], real[3], real[4]]
    calls: list[tuple[str, int, int | None, str]] = []
    vecs, failed = encode_images(onnx_path, images, batch_size=2, progress=lambda *a: calls.append(a))
    assert failed == [2]
    assert vecs.shape == (6, dim) and vecs.dtype == np.float32
    assert np.all(vecs[2] == 0)
    ok = [i for i in range(6) if i != 2]
    assert np.all(np.abs(vecs[ok]).sum(axis=1) > 0)
    with torch.no_grad():
        expected = model(torch.from_numpy(np.stack([load_for_network(images[i]) for i in ok]))).numpy()
    np.testing.assert_allclose(vecs[ok], expected, atol=1e-4)
    assert calls[-1] == ("encode", 6, 6, "images")
    # Multi-view encoding: each row is the mean of the model's outputs on the image's views, the broken file
    # still fails alone, and a batch smaller than the views still works.
    for crops in (2, 10):
        multi, failed = encode_images(onnx_path, images, batch_size=4, crops=crops)
        assert failed == [2] and np.all(multi[2] == 0)
        with torch.no_grad():
            views = [model(torch.from_numpy(network_views(open_image(images[i]), crops))).numpy().mean(axis=0)
                     for i in ok]
        np.testing.assert_allclose(multi[ok], np.stack(views), atol=1e-4)
        assert not np.allclose(multi[ok], vecs[ok], atol=1e-3)  # really other views than the centre crop
