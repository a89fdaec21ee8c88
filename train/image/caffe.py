"""``python -m train weights``: the Caffe model zoo's ``bvlc_googlenet.caffemodel`` to the blob folder.

A ``.caffemodel`` is Caffe's ``NetParameter`` protocol buffer. It is parsed here with the ``protobuf``
package against the subset of ``caffe.proto`` the weights need (field numbers as in BVLC Caffe), built as a
descriptor at run time: the current ``layer`` list (``LayerParameter``, type as a string) and the legacy V1
``layers`` list (``V1LayerParameter``, type as an enum, the form of the 2014 model zoo files), and both blob
shape forms (``shape.dim`` and the legacy ``num``/``channels``/``height``/``width``). Fields outside the
subset are kept as unknown fields and ignored.

The output is the layout :func:`train.image.googlenet.load_bvlc_googlenet` reads:
``<layer>/<name>_filter.bin`` (little-endian float32, (out, kh, kw, in)), ``<layer>/<name>_bias.bin``,
``loss3/classifier_*.bin`` in ``nn.Linear`` order, and ``SHA256SUMS``; the auxiliary classifiers are left
out. ``deploy.prototxt`` and ``synset_words.txt`` are not in a ``.caffemodel``: ``--prototxt`` and
``--synsets`` copy them in (BVLC Caffe's ``models/bvlc_googlenet/deploy.prototxt`` and
``data/ilsvrc12/synset_words.txt``). """

from __future__ import annotations

import hashlib
import logging
import shutil
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

# The model zoo's file (models/bvlc_googlenet/readme.md in BVLC Caffe): where it comes from, and its SHA-1.
CAFFEMODEL_URL = "http://dl.caffe.berkeleyvision.org/bvlc_googlenet.caffemodel"
CAFFEMODEL_SHA1 = "405fc5acd08a3bb12de8ee5e23a96bec22f08204"
PARAMETERS = 6_998_552  # the main path's weights and biases (the blob folder's README)
INCEPTION_BLOCKS = ("3a", "3b", "4a", "4b", "4c", "4d", "4e", "5a", "5b")
INCEPTION_BRANCHES = ("1x1", "3x3_reduce", "3x3", "5x5_reduce", "5x5", "pool_proj")
CLASSIFIER = "loss3/classifier"
V1_CONVOLUTION, V1_INNER_PRODUCT = 4, 14  # V1LayerParameter.LayerType values

# message -> (field, number, label, type): the subset of caffe.proto (proto2) a .caffemodel's weights need.
_SCHEMA: dict[str, list[tuple[str, int, str, str]]] = {
    "BlobShape": [("dim", 1, "repeated", "int64")],
    "BlobProto": [
        ("num", 1, "optional", "int64"), ("channels", 2, "optional", "int64"),
        ("height", 3, "optional", "int64"), ("width", 4, "optional", "int64"),
        ("data", 5, "repeated", "float"), ("shape", 7, "optional", ".caffe.BlobShape"),
        ("double_data", 8, "repeated", "double"),
    ],
    "LayerParameter": [
        ("name", 1, "optional", "string"), ("type", 2, "optional", "string"),
        ("blobs", 7, "repeated", ".caffe.BlobProto"),
    ],
    "V1LayerParameter": [
        ("name", 4, "optional", "string"), ("type", 5, "optional", "int32"),
        ("blobs", 6, "repeated", ".caffe.BlobProto"),
    ],
    "NetParameter": [
        ("name", 1, "optional", "string"), ("layers", 2, "repeated", ".caffe.V1LayerParameter"),
        ("layer", 100, "repeated", ".caffe.LayerParameter"),
    ],
}


class CaffeModelInvalid(ValueError):
    """The file is not a Caffe NetParameter, or not the BVLC GoogLeNet."""


def message_classes() -> dict[str, Any]:
    """The schema's message classes, by name (built once per call; cheap)."""
    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

    fdp = descriptor_pb2.FileDescriptorProto(name="topicspace_caffe_subset.proto", package="caffe",
                                             syntax="proto2")
    field_proto = descriptor_pb2.FieldDescriptorProto
    for name, fields in _SCHEMA.items():
        msg = fdp.message_type.add(name=name)
        for fname, number, label, kind in fields:
            f = msg.field.add(name=fname, number=number,
                              label=getattr(field_proto, f"LABEL_{label.upper()}"))
            if kind.startswith("."):
                f.type, f.type_name = field_proto.TYPE_MESSAGE, kind
            else:
                f.type = getattr(field_proto, f"TYPE_{kind.upper()}")
                if label == "repeated" and kind in ("int64", "float", "double"):
                    f.options.packed = True  # as caffe.proto declares them (parsers read either form)
    pool = descriptor_pool.DescriptorPool()
    pool.Add(fdp)
    return {name: message_factory.GetMessageClass(pool.FindMessageTypeByName(f"caffe.{name}"))
            for name in _SCHEMA}


def blob_names() -> list[str]:
    """The main path's parameter layers, in network order (no auxiliary classifiers)."""
    names = ["conv1/7x7_s2", "conv2/3x3_reduce", "conv2/3x3"]
    names += [f"inception_{b}/{branch}" for b in INCEPTION_BLOCKS for branch in INCEPTION_BRANCHES]
    return [*names, CLASSIFIER]


def blob_array(blob: Any) -> np.ndarray:
    """A BlobProto's values as float32, shaped by ``shape`` or by the legacy 4-D fields."""
    values = np.asarray(blob.data if len(blob.data) else blob.double_data, dtype=np.float32)
    if blob.HasField("shape"):
        shape = tuple(int(d) for d in blob.shape.dim)
    else:
        shape = tuple(int(d) for d in (blob.num, blob.channels, blob.height, blob.width))
    if int(np.prod(shape)) != values.size:
        raise CaffeModelInvalid(f"a blob holds {values.size} values, its shape says {shape}")
    return values.reshape(shape)


@dataclass(frozen=True)
class Layer:
    """One parameter layer of the file: its name, kind and blobs (weights, bias)."""

    name: str
    kind: str  # "Convolution", "InnerProduct" or another Caffe layer type
    blobs: tuple[np.ndarray, ...]


def read_layers(data: bytes) -> dict[str, Layer]:
    """The layers with blobs of a serialized NetParameter, V2 (``layer``) and V1 (``layers``) alike."""
    from google.protobuf.message import DecodeError

    net = message_classes()["NetParameter"]()
    try:
        net.ParseFromString(data)
    except DecodeError as exc:
        raise CaffeModelInvalid(f"not a Caffe model (NetParameter): {exc}") from None
    v1_kinds = {V1_CONVOLUTION: "Convolution", V1_INNER_PRODUCT: "InnerProduct"}
    layers: dict[str, Layer] = {}
    for entry, kind in [*((x, x.type) for x in net.layer), *((x, v1_kinds.get(x.type, str(x.type)))
                                                          for x in net.layers)]:
        if len(entry.blobs):
            layers[entry.name] = Layer(entry.name, kind, tuple(blob_array(b) for b in entry.blobs))
    if not layers:
        raise CaffeModelInvalid("not a Caffe model: no layer with weights (an empty or foreign file?)")
    return layers


def _squeeze(arr: np.ndarray, dims: int) -> np.ndarray:
    """Drop the legacy 4-D form's leading ones: (1, 1, out, in) → (out, in), (1, 1, 1, out) → (out,)."""
    while arr.ndim > dims and arr.shape[0] == 1:
        arr = arr[0]
    return arr


def googlenet_blobs(layers: dict[str, Layer]) -> dict[str, np.ndarray]:
    """``<layer>/<name>_{filter,bias}.bin`` → array in the blob folder's layout."""
    out: dict[str, np.ndarray] = {}
    for name in blob_names():
        layer = layers.get(name)
        if layer is None or len(layer.blobs) != 2:
            raise CaffeModelInvalid(f"no layer {name!r} with weights and bias (not bvlc_googlenet?)")
        weights, bias = layer.blobs
        bias = _squeeze(bias, 1)
        if name == CLASSIFIER:
            filt = _squeeze(weights, 2)  # InnerProduct: (out, in), nn.Linear's order already
        else:
            if weights.ndim != 4:
                raise CaffeModelInvalid(f"{name}: a convolution's weights are 4-D, got {weights.shape}")
            filt = weights.transpose(0, 2, 3, 1)  # Caffe (out, in, kh, kw) → (out, kh, kw, in)
        if bias.shape != (filt.shape[0],):
            raise CaffeModelInvalid(f"{name}: bias {bias.shape} does not match {filt.shape[0]} outputs")
        out[f"{name}_filter.bin"] = np.ascontiguousarray(filt, dtype="<f4")
        out[f"{name}_bias.bin"] = np.ascontiguousarray(bias, dtype="<f4")
    total = sum(a.size for a in out.values())
    if total != PARAMETERS:
        raise CaffeModelInvalid(f"{total:,} parameters on the main path, BVLC GoogLeNet has {PARAMETERS:,}")
    return out


def write_blob_folder(blobs: dict[str, np.ndarray], out: Path, extras: Iterable[Path] = ()) -> Path:
    """Write the blobs, copy ``extras`` beside them and write ``SHA256SUMS``; atomically (a temp folder)."""
    out = Path(out)
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    lines = []
    for rel, arr in sorted(blobs.items()):
        path = tmp / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        raw = arr.tobytes()
        path.write_bytes(raw)
        lines.append(f"{hashlib.sha256(raw).hexdigest()}  ./{rel}\n")
    for extra in extras:
        shutil.copyfile(extra, tmp / extra.name)
    (tmp / "SHA256SUMS").write_text("".join(lines), encoding="utf-8")
    if out.exists():
        shutil.rmtree(out)
    tmp.rename(out)
    return out


def convert(caffemodel: Path, out: Path, prototxt: Path | None = None,
            synsets: Path | None = None) -> dict[str, Any]:
    """Convert a ``bvlc_googlenet.caffemodel``; a summary (blob count, parameters, sha1, what was copied)."""
    caffemodel = Path(caffemodel)
    if not caffemodel.is_file():
        raise FileNotFoundError(f"{caffemodel} not found: download the Caffe model zoo's {CAFFEMODEL_URL}")
    extras = [p for p in (prototxt, synsets) if p is not None]
    for extra in extras:
        if not extra.is_file():
            raise FileNotFoundError(f"{extra} not found")
    data = caffemodel.read_bytes()
    sha1 = hashlib.sha1(data).hexdigest()
    if sha1 != CAFFEMODEL_SHA1:
        log.warning("%s is not the model zoo's file (sha1 %s, expected %s): converting it all the same, "
                    "its layers and shapes are checked", caffemodel, sha1, CAFFEMODEL_SHA1)
    blobs = googlenet_blobs(read_layers(data))
    write_blob_folder(blobs, out, extras)
    return {"out": str(out), "blobs": len(blobs), "parameters": int(sum(a.size for a in blobs.values())),
            "sha1": sha1, "model_zoo_file": sha1 == CAFFEMODEL_SHA1, "copied": [p.name for p in extras],
            "missing": [n for n in ("deploy.prototxt", "synset_words.txt")
                        if n not in {p.name for p in extras}]}
