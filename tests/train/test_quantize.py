"""int8 quantisation of a real exported encoder: faithful on held-out real images, or refused."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest

from space.ort import open_session
from train.image.quantize import (
    DISABLED_OPTIMIZERS,
    QuantizeConfig,
    float_nodes,
    load_inputs,
    quantize_encoder,
    run_batches,
)

CFG = replace(QuantizeConfig.quick_preset(), calibration_images=16, check_images=32)


def split_images(flickr8k_dir: Path) -> tuple[list[Path], list[Path]]:
    """Calibration images from Flickr8k's train list, check images from its test list."""
    def names(split: str) -> list[Path]:
        listed = (flickr8k_dir / f"Flickr_8k.{split}Images.txt").read_text(encoding="utf-8").split()
        return [flickr8k_dir / "images" / n for n in listed]

    return names("train")[:CFG.calibration_images], names("test")[:CFG.check_images]


@pytest.fixture(scope="module")
def quantized(tmp_path_factory: pytest.TempPathFactory, small_bundle: Path,
              flickr8k_dir: Path) -> tuple[Path, Path, dict[str, Any], list[Path]]:
    """The trainer's own exported encoder (the shared small bundle, read only) and its int8 version."""
    calib, check = split_images(flickr8k_dir)
    fp32 = small_bundle / "image_encoder.onnx"
    int8 = tmp_path_factory.mktemp("quantize") / "image_encoder.int8.onnx"
    return fp32, int8, quantize_encoder(fp32, int8, calib, check, CFG), check


def test_int8_is_faithful_on_held_out_real_images(quantized) -> None:
    fp32, int8, report, check = quantized
    assert report["published"] and report["file"] == int8.name and int8.is_file()
    assert report["calibration_images"] == CFG.calibration_images
    assert report["check_images"] == CFG.check_images
    fid = report["fidelity"]
    assert fid["n_images"] == CFG.check_images
    assert fid["mean_cosine"] >= 0.99 and fid["min_cosine"] >= 0.97
    assert fid["centred_mean_cosine"] >= 0.98
    # Independently of the report: served the way the engine opens it, int8 tracks fp32 on other real images.
    x = load_inputs(check[-8:])
    ref = run_batches(open_session(fp32, 1), x, 8)
    got = run_batches(open_session(int8, 1, DISABLED_OPTIMIZERS), x, 8)
    cos = np.sum(ref * got, 1) / np.linalg.norm(ref, axis=1) / np.linalg.norm(got, axis=1)
    assert cos.min() >= 0.97
    assert not int8.with_name(int8.name + ".partial").exists()


def test_int8_graph_keeps_the_contract_and_is_int8(quantized) -> None:
    fp32, int8, _, _ = quantized
    model = onnx.load(str(int8))
    assert [i.name for i in model.graph.input] == ["images"]
    assert [o.name for o in model.graph.output] == ["vectors"]
    ops = [n.op_type for n in model.graph.node]
    assert ops.count("QuantizeLinear") > 10 and ops.count("DequantizeLinear") > 10
    int8_weights = [t for t in model.graph.initializer if t.data_type == onnx.TensorProto.INT8]
    assert len(int8_weights) >= 55  # GoogLeNet's 54 inception convolutions and the projection
    assert int8.stat().st_size < fp32.stat().st_size / 2


def test_float_nodes_keep_the_stem_float(quantized) -> None:
    fp32, _, _, _ = quantized
    model = onnx.load(str(fp32))
    kept = float_nodes(model)
    convs = [n.name for n in model.graph.node if n.op_type == "Conv"]
    # Conv 1 and conv 2 (reduce + 3×3) feed the LRNs; pool 2 and inception 3a's pool branch follow them.
    assert [c for c in convs if c in kept] == convs[:3]
    assert sum(1 for n in kept if n.endswith("MaxPool")) == 3


def test_refused_below_the_fidelity_bar(tmp_path: Path, quantized, flickr8k_dir: Path) -> None:
    fp32, _, _, _ = quantized
    calib, check = split_images(flickr8k_dir)
    out = tmp_path / "image_encoder.int8.onnx"
    out.write_bytes(b"stale")  # an old int8 file must not survive a refusal
    strict = replace(CFG, calibration_images=4, check_images=4, min_cosine=1.01)
    report = quantize_encoder(fp32, out, calib, check, strict)
    assert not report["published"] and report["file"] is None
    assert "mean cosine" in report["reason"] and report["fidelity"]["mean_cosine"] < 1.01
    assert not out.exists() and not out.with_name(out.name + ".partial").exists()
