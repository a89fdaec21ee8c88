"""The pool4 activation cache holds what the bundle encoder computes, and a stopped fill resumes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

import train.image.activations as activations
from train.image.activations import POOL4_SHAPE, Lower, Upper, cache_pool4, upper_features
from train.image.encode import encode_images
from train.image.export import export_features
from train.image.googlenet import BVLCGoogLeNet, load_bvlc_googlenet


@pytest.fixture(scope="module")
def net(weights_dir: Path) -> BVLCGoogLeNet:
    return load_bvlc_googlenet(weights_dir)


@pytest.fixture(scope="module")
def images(flickr8k_dir: Path) -> list[Path]:
    return sorted((flickr8k_dir / "images").glob("*.jpg"))[:5]


def test_lower_then_upper_is_the_whole_network(net: BVLCGoogLeNet) -> None:
    x = torch.randn(2, 3, 224, 224) * 50
    with torch.no_grad():
        split = Upper(net)(Lower(net)(x)).mean(dim=(2, 3))
        whole = net.features(x)
    assert split.shape == (2, 1024)
    assert torch.allclose(split, whole, atol=1e-4)


def test_cached_views_give_the_bundle_encoders_features(net: BVLCGoogLeNet, images: list[Path],
                                                         weights_dir: Path, tmp_path: Path) -> None:
    cache = cache_pool4(net, images, 10, tmp_path, key_parts=["test"], select=(0, 1))
    maps = cache.open()
    assert maps.shape == (len(images), 2, *POOL4_SHAPE)
    pooled = upper_features(Upper(net), maps, np.arange(len(images)))
    # The features stage's own ONNX graph on the centre crop and its mirror, averaged as a bundle averages.
    export_features("bvlc", weights_dir, tmp_path / "features.onnx", images[:2])
    expected, failed = encode_images(tmp_path / "features.onnx", images, crops=2)
    assert failed == []
    got = pooled.mean(axis=1)
    # fp16 storage of the maps: a few thousandths on features of magnitude ~10.
    assert np.abs(got - expected).max() < 0.02
    # The two views differ (a mirror is not the centre crop).
    assert np.abs(pooled[:, 0] - pooled[:, 1]).max() > 0.1


def test_a_stopped_fill_resumes_where_it_stopped(net: BVLCGoogLeNet, images: list[Path], tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    whole = cache_pool4(net, images, 1, tmp_path / "whole", key_parts=["test"]).open()
    monkeypatch.setattr(activations, "SAVE_EVERY", 2)
    real_decode = activations._decode
    seen: list[Path] = []

    def failing(path: Path, views: int, select: tuple[int, ...] | None) -> np.ndarray | None:
        seen.append(path)
        if path == images[3]:
            raise KeyboardInterrupt  # the run is stopped while image 3 is read
        return real_decode(path, views, select)

    monkeypatch.setattr(activations, "_decode", failing)
    with pytest.raises(KeyboardInterrupt):
        cache_pool4(net, images, 1, tmp_path / "stopped", key_parts=["test"])
    seen.clear()
    monkeypatch.setattr(activations, "_decode", lambda p, v, s: (seen.append(p), real_decode(p, v, s))[1])
    resumed = cache_pool4(net, images, 1, tmp_path / "stopped", key_parts=["test"])
    # Images 0 and 1 were saved before the stop: only 2, 3, 4 are read again.
    assert seen == images[2:]
    np.testing.assert_array_equal(resumed.open(), whole)
    seen.clear()
    again = cache_pool4(net, images, 1, tmp_path / "stopped", key_parts=["test"])
    assert seen == []  # a finished cache is reused as it is
    assert again.path == resumed.path


def test_an_unreadable_image_is_listed_and_left_zero(net: BVLCGoogLeNet, images: list[Path],
                                                     tmp_path: Path) -> None:
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not a jpeg at all")
    cache = cache_pool4(net, [images[0], broken, images[1]], 1, tmp_path / "c", key_parts=["test"])
    maps = cache.open()
    assert cache.failed == (1,)
    assert not maps[1].any()
    assert maps[0].any() and maps[2].any()
