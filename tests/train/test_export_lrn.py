"""The LRN chain train.image.export writes: torch's LocalResponseNorm's numbers, without Pow or If."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from torch import nn

from space.images import load_for_network
from space.ort import open_session
from train.image.export import export_model


@pytest.mark.parametrize("beta", [0.75, 0.6])
def test_lrn_chain_matches_torch_on_a_real_image(tmp_path: Path, flickr8k_dir: Path, beta: float) -> None:
    torch.manual_seed(0)
    # Caffe GoogLeNet's LRN (size 5, alpha 1e-4, k 1) after a ReLU conv; beta 0.6 takes the Pow path.
    conv = nn.Conv2d(3, 32, 3, padding=1)
    with torch.no_grad():
        conv.weight.mul_(20)  # large activations, so the LRN term is far from 1
    model = nn.Sequential(conv, nn.ReLU(), nn.LocalResponseNorm(5, alpha=1e-4, beta=beta, k=1.0)).eval()
    chain, plain = tmp_path / "chain.onnx", tmp_path / "plain.onnx"
    export_model(model, chain)
    export_model(model, plain, lrn_chain=False)
    images = sorted((flickr8k_dir / "images").glob("*.jpg"))[:3]
    x = np.stack([load_for_network(p) for p in images]).astype(np.float32)
    with torch.no_grad():
        expected = model(torch.from_numpy(x)).numpy()
        no_lrn = model[:2](torch.from_numpy(x)).numpy()
    assert np.abs(expected - no_lrn).max() > 1e-2 * np.abs(no_lrn).max()  # the LRN really does something
    got = open_session(chain).run(["vectors"], {"images": x})[0]
    assert np.abs(got - expected).max() <= 1e-5 * max(1.0, float(np.abs(expected).max()))
    ops = {n.op_type for n in onnx.load(str(chain)).graph.node}
    assert "If" not in ops and ("Pow" in ops) == (beta != 0.75)
    assert "If" in {n.op_type for n in onnx.load(str(plain)).graph.node}  # torch's own spelling
