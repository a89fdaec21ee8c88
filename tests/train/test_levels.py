"""Pooled features of several GoogLeNet levels (train.image.levels): what they hold, and that the exported
bundle encoder gives the image vectors the joint space learned from them."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch

from train.__main__ import build_parser, check_weights, pipeline_config
from train.config import IngestConfig, TextConfig
from train.corpus.ingest import IngestStats, read_corpus
from train.image.activations import Lower, Upper
from train.image.encode import encode_images
from train.image.export import export_features, export_level_joint, features_module
from train.image.googlenet import BVLCGoogLeNet, load_bvlc_googlenet
from train.image.levels import (
    DEFAULT_LEVELS,
    LevelFeatures,
    feature_width,
)
from train.recipes.joint.model import JointConfig, train_joint
from train.text.word2vec import build_text_space


@pytest.fixture(scope="module")
def net(weights_dir: Path) -> BVLCGoogLeNet:
    return load_bvlc_googlenet(weights_dir)


def test_the_levels_are_the_blocks_means_in_network_order(net: BVLCGoogLeNet) -> None:
    x = torch.randn(2, 3, 224, 224) * 50
    with torch.no_grad():
        got = LevelFeatures(net)(x)
        pool4 = Lower(net)(x)
        y5a = Upper(net).block_5a(pool4)
        expected = torch.cat([pool4.mean(dim=(2, 3)), y5a.mean(dim=(2, 3)), net.features(x)], dim=1)
        deep = LevelFeatures(net, ("5b", "4d", "3b"))(x)
    assert got.shape == (2, feature_width(DEFAULT_LEVELS)) == (2, 2688)
    assert torch.allclose(got, expected, atol=1e-4)
    # Asked in any order, the levels come in network order; 5b is still last.
    assert deep.shape == (2, 480 + 528 + 1024)
    assert torch.allclose(deep[:, -1024:], expected[:, -1024:], atol=1e-4)


def test_unknown_levels_and_other_backbones_are_refused(net: BVLCGoogLeNet) -> None:
    with pytest.raises(ValueError, match="unknown levels"):
        LevelFeatures(net, ("5c",))
    with pytest.raises(ValueError, match="bvlc"):
        LevelFeatures(torch.nn.Linear(2, 2))


def test_the_bundle_encoder_gives_the_vectors_the_joint_space_learned(flickr8k_dir: Path, weights_dir: Path,
                                                                       tmp_path: Path) -> None:
    posts = list(read_corpus(IngestConfig(flickr8k_dir, "flickr8k", limit=40), IngestStats()))
    posts = [dataclasses.replace(p, lang="en", split="train" if i < 32 else "val")
             for i, p in enumerate(posts)]
    text = build_text_space(posts, TextConfig.quick())
    images = [Path(p.image) for p in text.posts]
    info = export_features("bvlc", weights_dir, tmp_path / "features.onnx", images[:2], DEFAULT_LEVELS)
    assert info["max_abs_diff"] <= 1e-4
    # The features stage's way: each image the mean of its two views' level features.
    features, failed = encode_images(tmp_path / "features.onnx", images, crops=2)
    assert failed == [] and features.shape == (len(images), 2688)
    model = train_joint(JointConfig(epochs=2, batch_size=16, num_threads=2), features, text.posts, text.space,
                        np.ones(len(images), bool))
    export_level_joint("bvlc", weights_dir, model, tmp_path / "encoder.onnx", images[:2])
    served, failed = encode_images(tmp_path / "encoder.onnx", images[:6], crops=2)
    assert failed == []
    # A linear map commutes with the mean over views: the bundle's vectors are the served ones.
    np.testing.assert_allclose(served, model.images(features[:6]), atol=1e-3)
    with pytest.raises(ValueError, match="takes 2688 features"):
        export_level_joint("bvlc", weights_dir, model, tmp_path / "bad.onnx", images[:2], levels=("5b",))


def test_the_levels_are_the_default_and_5b_alone_is_a_flag_away(tmp_path: Path,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    base = ["all", "--corpus", str(tmp_path), "--format", "flickr8k", "--models", str(tmp_path / "m")]
    parse = build_parser().parse_args
    default = pipeline_config(parse(base))
    assert default.levels == DEFAULT_LEVELS and default.joint == JointConfig()
    # the default views: the whole photo and its mirror; one whole view under --quick; the seed
    # recipe's centre crop
    assert (default.crops, default.framing) == (2, "whole")
    quick = pipeline_config(parse([*base, "--quick"]))
    assert (quick.crops, quick.framing) == (1, "whole")
    seed = pipeline_config(parse([*base, "--recipe", "seed"]))
    assert (seed.crops, seed.framing) == (1, "centre")
    assert (JointConfig().dropout, JointConfig().temperature) == (0.4, 0.05)
    before = pipeline_config(parse([*base, "--image-levels", "5b", "--joint-set", "dropout=0.2"]))
    assert before.levels == ("5b",) and (before.joint.dropout, before.joint.temperature) == (0.2, 0.05)
    assert pipeline_config(parse([*base, "--image-levels", "5b,pool4"])).levels == ("pool4", "5b")
    assert pipeline_config(parse([*base, "--backbone", "torchvision"])).levels == ("5b",)
    with pytest.raises(SystemExit) as exit_info:
        parse([*base, "--image-levels", "5c"])
    assert exit_info.value.code == 2 and "unknown feature levels ['5c']" in capsys.readouterr().err
    with pytest.raises(ValueError, match="needs --backbone bvlc"):
        check_weights(pipeline_config(parse([*base, "--backbone", "torchvision", "--image-levels", "5a,5b"])))


def test_features_module_and_export_take_the_levels(weights_dir: Path) -> None:
    x = torch.randn(1, 3, 224, 224) * 50
    with torch.no_grad():
        levels = features_module("bvlc", weights_dir, DEFAULT_LEVELS)(x)
        pool5 = features_module("bvlc", weights_dir)(x)
    assert levels.shape == (1, 2688) and pool5.shape == (1, 1024)
    assert torch.allclose(levels[:, -1024:], pool5, atol=1e-4)
