"""ONNX export: dynamic batch, word-space output, parity with torch on real Flickr8k images."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from space.ort import open_session
from train.image.export import ExportMismatch, export_onnx
from train.recipes.seed.config import ImageConfig
from train.recipes.seed.regressor import build_regressor, read_checkpoint

DIM = 24


def write_checkpoint(path: Path, weights_dir: Path, seed: int = 0) -> Path:
    """A checkpoint of a real-weight regressor with a random new layer (no training needed for parity)."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    tmin = rng.normal(-1, 0.1, DIM).astype(np.float32)
    tmax = tmin + rng.uniform(0.5, 2.0, DIM).astype(np.float32)
    cfg = ImageConfig.quick_preset()
    model = build_regressor(cfg, weights_dir, DIM, tmin, tmax)
    with torch.no_grad():
        model.proj.weight.normal_(0, 0.05)  # make the sigmoid leave its flat middle
    torch.save({"config": cfg.to_dict(), "model": model.state_dict(), "dim": DIM, "target_min": tmin,
                "target_max": tmax}, path)
    return path


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory, weights_dir: Path, flickr8k_dir: Path):
    tmp = tmp_path_factory.mktemp("export")
    ckpt = write_checkpoint(tmp / "ckpt.pt", weights_dir)
    images = sorted((flickr8k_dir / "images").glob("*.jpg"))[:6]
    out = tmp / "image_encoder.onnx"
    info = export_onnx(ckpt, out, images)
    return out, info, images, ckpt


def test_parity_on_real_images_is_recorded(exported) -> None:
    out, info, images, _ = exported
    assert info["n_images"] == len(images) and info["opset"] >= 17
    assert 0 <= info["max_abs_diff"] <= 1e-4
    assert not out.with_name(out.name + ".partial").exists()


def test_graph_contract_and_dynamic_batch(exported) -> None:
    out, _, _, ckpt_path = exported
    model = onnx.load(str(out))
    assert [i.name for i in model.graph.input] == ["images"]
    assert [o.name for o in model.graph.output] == ["vectors"]
    sess = open_session(out)
    ckpt = read_checkpoint(ckpt_path)
    for batch in (1, 5):
        x = np.random.default_rng(batch).normal(0, 50, (batch, 3, 224, 224)).astype(np.float32)
        y = sess.run(["vectors"], {"images": x})[0]
        assert y.shape == (batch, DIM)
        # Word space, not [0, 1]: the scaling is undone inside the graph.
        assert np.all(y >= ckpt["target_min"] - 1e-5) and np.all(y <= ckpt["target_max"] + 1e-5)


def test_mismatch_refuses_to_publish(exported, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _, _, images, ckpt = exported
    import train.image.export as export

    monkeypatch.setattr(export, "parity", lambda *a: 3e-3)
    out = tmp_path / "enc.onnx"
    with pytest.raises(ExportMismatch, match="not published"):
        export_onnx(ckpt, out, images[:1])
    assert not out.exists() and not list(tmp_path.glob("*.partial"))
