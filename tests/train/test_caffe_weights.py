"""`python -m train weights`: a .caffemodel (current V2 and legacy V1 form) back to the blob folder.

The test writes Caffe models from ../shared's blobs with the same schema (Caffe's blob order and shapes,
the auxiliary classifiers and layers without weights included), converts them, and gets the very same
files and checksums, and the README's known ImageNet answers from the converted folder.
"""

from __future__ import annotations

import functools
import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from train.__main__ import build_parser, main
from train.image.caffe import CLASSIFIER, CaffeModelInvalid, blob_names, message_classes, read_layers

AUX = ("loss1/conv", "loss1/fc", "loss1/classifier")  # in the zoo file, not on the main path


@functools.cache
def _kernels(deploy: Path) -> dict[str, int]:
    """Layer name → kernel size, from Caffe's own deploy.prototxt."""
    kernels: dict[str, int] = {}
    name = None
    for line in deploy.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if line.startswith("name:"):
            name = line.split('"')[1]
        elif line.startswith("kernel_size:") and name is not None:
            kernels.setdefault(name, int(line.split(":")[1]))
    return kernels


def _caffe_blobs(weights: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Each layer's (weights, bias) in Caffe's order: conv (out, in, kh, kw), InnerProduct (out, in)."""
    out = {}
    for name in blob_names():
        filt = np.fromfile(weights / f"{name}_filter.bin", dtype="<f4")
        bias = np.fromfile(weights / f"{name}_bias.bin", dtype="<f4")
        if name == CLASSIFIER:
            w = filt.reshape(bias.size, -1)
        else:  # the blob file's (out, kh, kw, in) → Caffe's (out, in, kh, kw)
            k = _kernels(weights / "deploy.prototxt")[name]
            w = filt.reshape(bias.size, k, k, -1).transpose(0, 3, 1, 2)
        out[name] = (w, bias)
    return out


def _blob(cls: dict[str, Any], arr: np.ndarray, legacy: bool) -> Any:
    blob = cls["BlobProto"]()
    if legacy:  # V1 files: 4-D num/channels/height/width, an InnerProduct as (1, 1, out, in)
        dims = (1,) * (4 - arr.ndim) + arr.shape
        blob.num, blob.channels, blob.height, blob.width = dims
    else:
        blob.shape.dim.extend(arr.shape)
    blob.data.extend(arr.ravel().tolist())
    return blob


def write_caffemodel(path: Path, weights: Path, form: str) -> None:
    """A .caffemodel holding ../shared's GoogLeNet, in the ``form`` "v2" (layer) or "v1" (layers)."""
    cls = message_classes()
    net = cls["NetParameter"](name="GoogleNet")
    rng = np.random.default_rng(0)
    layers: list[tuple[str, str, tuple[np.ndarray, ...]]] = [("data", "Input", ())]
    for name, (w, b) in _caffe_blobs(weights).items():
        kind = "InnerProduct" if name == CLASSIFIER else "Convolution"
        layers += [(name, kind, (w, b)), (name.replace("/", "/relu_"), "ReLU", ())]
    layers += [(AUX[0], "Convolution", (rng.normal(size=(128, 512, 1, 1)).astype("f4"), np.zeros(128, "f4"))),
               (AUX[1], "InnerProduct", (rng.normal(size=(8, 16)).astype("f4"), np.zeros(8, "f4")))]
    v1_types = {"Convolution": 4, "InnerProduct": 14, "ReLU": 18, "Input": 0}
    for name, kind, blobs in layers:
        if form == "v2":
            layer = net.layer.add(name=name, type=kind)
        else:
            layer = net.layers.add(name=name, type=v1_types[kind])
        for arr in blobs:
            layer.blobs.append(_blob(cls, arr, legacy=form == "v1"))
    path.write_bytes(net.SerializeToString())


@pytest.fixture(scope="module")
def caffemodels(tmp_path_factory: pytest.TempPathFactory, weights_dir: Path) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("caffe")
    out = {}
    for form in ("v2", "v1"):
        out[form] = root / f"bvlc_googlenet_{form}.caffemodel"
        write_caffemodel(out[form], weights_dir, form)
    return out


@pytest.mark.parametrize("form", ["v2", "v1"])
def test_a_caffemodel_converts_back_to_the_very_same_blobs(
    form: str, caffemodels: dict[str, Path], weights_dir: Path, tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    out = tmp_path / "bvlc_googlenet"
    rc = main(["weights", "--caffemodel", str(caffemodels[form]), "--out", str(out), "--prototxt",
               str(weights_dir / "deploy.prototxt"), "--synsets", str(weights_dir / "synset_words.txt")])
    assert rc == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["blobs"] == 116 and summary["parameters"] == 6_998_552 and summary["missing"] == []
    assert summary["model_zoo_file"] is False  # not the zoo's bytes: converted after a warning
    # Byte for byte: the checksum list, and so every blob, is ../shared's.
    assert (out / "SHA256SUMS").read_text() == (weights_dir / "SHA256SUMS").read_text()
    for line in (weights_dir / "SHA256SUMS").read_text().splitlines():
        name = line.split("  ", 1)[1]
        assert (out / name).read_bytes() == (weights_dir / name).read_bytes(), name
    assert not (out / "loss1").exists()  # the auxiliary classifiers stay out


def test_the_converted_folder_gives_the_known_answers(caffemodels: dict[str, Path], weights_dir: Path,
                                                      tmp_path: Path, flickr8k_dir: Path) -> None:
    import torch

    from tests.train.test_googlenet import _known_images
    from train.image.googlenet import load_bvlc_googlenet, synset_words

    out = tmp_path / "w"
    assert main(["weights", "--caffemodel", str(caffemodels["v1"]), "--out", str(out),
                 "--synsets", str(weights_dir / "synset_words.txt")]) == 0
    net = load_bvlc_googlenet(out)  # checksums verified first
    names = synset_words(out)
    with torch.no_grad():
        top = net(torch.from_numpy(_known_images(flickr8k_dir))).argmax(dim=1).tolist()
    assert [names[i] for i in top] == ["palace", "chickadee"]


def test_shape_forms_and_foreign_files(tmp_path: Path, caffemodels: dict[str, Path],
                                       capsys: pytest.CaptureFixture[str]) -> None:
    layers = read_layers(caffemodels["v1"].read_bytes())
    conv = layers["inception_4a/5x5"].blobs[0]
    assert conv.shape == (48, 16, 5, 5) and layers[CLASSIFIER].blobs[0].shape == (1, 1, 1000, 1024)
    assert read_layers(caffemodels["v2"].read_bytes())[CLASSIFIER].blobs[0].shape == (1000, 1024)
    with pytest.raises(CaffeModelInvalid, match="not a Caffe model"):
        read_layers(b"\x00\x01 this is no protocol buffer \xff" * 10)
    bad = tmp_path / "bad.caffemodel"
    bad.write_bytes(b"PK\x03\x04 a zip, not a caffemodel")
    assert main(["weights", "--caffemodel", str(bad), "--out", str(tmp_path / "o")]) == 1
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if "error: " in line]  # log lines (warnings) aside
    assert len(errors) == 1 and errors[0].startswith("error: not a Caffe model") and "Traceback" not in err
    missing = tmp_path / "none.caffemodel"
    assert main(["weights", "--caffemodel", str(missing), "--out", str(tmp_path / "o")]) == 1
    assert "bvlc_googlenet.caffemodel" in capsys.readouterr().err
    # Another network: its layers are not GoogLeNet's.
    cls = message_classes()
    other = cls["NetParameter"]()
    layer = other.layer.add(name="conv1", type="Convolution")
    layer.blobs.append(_blob(cls, np.zeros((2, 3, 3, 3), "f4"), legacy=False))
    with pytest.raises(CaffeModelInvalid, match="conv1/7x7_s2"):
        from train.image.caffe import googlenet_blobs

        googlenet_blobs(read_layers(other.SerializeToString()))


def _torchvision_flags() -> list[str]:
    """How this command line picks torchvision's GoogLeNet (a --backbone flag, or an --image-set field)."""
    try:
        build_parser().parse_args(["all", "--corpus", "c", "--format", "jsonl", "--backbone", "torchvision"])
    except SystemExit:
        return ["--image-set", "backbone=torchvision"]
    return ["--backbone", "torchvision"]


def test_train_all_without_weights_names_both_ways(tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    corpus = tmp_path / "c"
    corpus.mkdir()
    (corpus / "posts.jsonl").write_text("", encoding="utf-8")
    progress = tmp_path / "progress.jsonl"
    flags = _torchvision_flags()
    capsys.readouterr()
    base = ["all", "--corpus", str(corpus), "--format", "jsonl", "--models", str(tmp_path / "m"),
            "--progress-file", str(progress)]
    assert main(base) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--weights" in err[0] and "python -m train weights --caffemodel" in err[0]
    assert "backbone=torchvision" in err[0]
    # /retrain reads the reason from the progress file.
    assert "--weights" in json.loads(progress.read_text().splitlines()[-1])["error"]
    assert main([*base, "--weights", str(tmp_path)]) == 1
    assert "no SHA256SUMS" in capsys.readouterr().err
    # The torchvision backbone needs no folder: the run gets past the check (to the empty corpus).
    assert main([*base, *flags]) == 1
    assert "holds no post" in capsys.readouterr().err
    shutil.rmtree(tmp_path / "m", ignore_errors=True)
