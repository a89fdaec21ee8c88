"""The BVLC GoogLeNet loader gives the README's known ImageNet answers, and refuses corrupt weights."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from space.images import preprocess
from train.image.googlenet import (
    FEATURE_DIM,
    TRUNK_SHAPE,
    TorchvisionGoogLeNet,
    WeightsInvalid,
    load_bvlc_googlenet,
    synset_words,
)


@pytest.fixture(scope="module")
def net(weights_dir: Path) -> torch.nn.Module:
    return load_bvlc_googlenet(weights_dir)


# A Flickr8k photo of a black-and-white bird eating seeds from a hand (its captions say so).
CHICKADEE = "111766423_4522d36e56.jpg"


def _known_images(flickr8k_dir: Path) -> np.ndarray:
    from sklearn.datasets import load_sample_image

    china = Image.fromarray(load_sample_image("china.jpg"))
    bird = Image.open(flickr8k_dir / "images" / CHICKADEE).convert("RGB")
    return np.stack([preprocess(china), preprocess(bird)])


def test_known_answers(net: torch.nn.Module, weights_dir: Path, flickr8k_dir: Path) -> None:
    names = synset_words(weights_dir)
    assert len(names) == 1000
    with torch.no_grad():
        probs = net(torch.from_numpy(_known_images(flickr8k_dir))).softmax(dim=1)
    top = probs.argmax(dim=1).tolist()
    assert names[top[0]] == "palace"
    assert names[top[1]] == "chickadee"
    assert float(probs[1, top[1]]) > 0.9  # not a near-tie (0.9998 measured)


def test_trunk_head_split_matches_full_network(net: torch.nn.Module, flickr8k_dir: Path) -> None:
    x = torch.from_numpy(_known_images(flickr8k_dir)[:1])
    with torch.no_grad():
        trunk = net.trunk(x)
        assert tuple(trunk.shape[1:]) == TRUNK_SHAPE
        feats = net.head(trunk)
        assert feats.shape == (1, FEATURE_DIM)
        torch.testing.assert_close(net.classifier(feats), net(x))


def test_corrupt_weights_are_refused(weights_dir: Path, tmp_path: Path) -> None:
    copy = tmp_path / "w"
    shutil.copytree(weights_dir, copy)
    blob = copy / "inception_4a" / "1x1_bias.bin"
    blob.chmod(0o644)
    data = bytearray(blob.read_bytes())
    data[0] ^= 0xFF
    blob.write_bytes(bytes(data))
    with pytest.raises(WeightsInvalid, match=r"inception_4a/1x1_bias\.bin"):
        load_bvlc_googlenet(copy)
    with pytest.raises(WeightsInvalid, match="SHA256SUMS"):
        load_bvlc_googlenet(tmp_path)


def test_torchvision_option_builds_offline() -> None:
    # Only the architecture: the ImageNet weights need the internet, which tests never use.
    tv = TorchvisionGoogLeNet(pretrained=False).eval()
    with torch.no_grad():
        trunk = tv.trunk(torch.zeros(1, 3, 224, 224))
        assert tuple(trunk.shape[1:]) == TRUNK_SHAPE
        assert tv.head(trunk).shape == (1, FEATURE_DIM)
