"""ONNX export of the image encoders, refused unless ONNX Runtime matches torch on real images.

The graph takes ``images`` float32 (B, 3, 224, 224) — :func:`space.images.preprocess` output — with a
dynamic batch axis and returns ``vectors`` (B, D) in the space: for the joint recipe the frozen
GoogLeNet and its learned linear map (:func:`export_joint`; :func:`export_features` is the same network
without the map, for the trainer's feature cache); for the seed recipe's regressor the [0, 1] target
scaling is undone inside the graph (sigmoid, then the per-dimension affine map). Serving needs no extra
metadata either way.

Each ``nn.LocalResponseNorm`` is exported as a short fixed chain (square, 3-D average pool over channels,
two square roots for beta = 0.75). PyTorch's own spelling adds shape checks (``If``) and a scalar
``Pow`` that cost about a fifth of the fp32 encoder's time, and ONNX Runtime's native ``LRN`` kernel is
slower still (half the encoder's time on this CPU). The parity check below holds the graph to torch.
"""

from __future__ import annotations

import copy
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from space.errors import SpaceError
from space.images import load_for_network
from space.ort import INPUT_NAME, OUTPUT_NAME, open_session
from train.image.features import DEFAULT_LEVELS, POOL5, feature_width
from train.image.levels import LevelFeatures
from train.recipes.joint.model import JointModel
from train.recipes.seed.regressor import load_checkpoint

log = logging.getLogger(__name__)

OPSET = 17
MAX_ABS_DIFF = 1e-4


class ExportMismatch(SpaceError):
    """ONNX Runtime and torch disagree on the exported encoder: it must not be published."""

    code = "export_mismatch"
    status = 500


class _LRNFunction(torch.autograd.Function):
    """Torch's local response norm, written to ONNX as a cheap fixed chain instead of torch's own spelling."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, size: int, alpha: float, beta: float, k: float) -> torch.Tensor:
        """The same computation as ``nn.LocalResponseNorm``."""
        return nn.functional.local_response_norm(x, size, alpha, beta, k)

    @staticmethod
    def symbolic(g: Any, x: Any, size: int, alpha: float, beta: float, k: float) -> Any:
        """x / (k + alpha·mean_window(x²))^beta, the window sum as a 3-D average pool over channels."""
        def const(value: Any, dtype: torch.dtype) -> Any:
            return g.op("Constant", value_t=torch.tensor(value, dtype=dtype))

        sq = g.op("Unsqueeze", g.op("Mul", x, x), const([1], torch.int64))  # (B, 1, C, H, W)
        pads = [0, 0, size // 2, 0, 0, 0, 0, (size - 1) // 2, 0, 0]
        padded = g.op("Pad", sq, const(pads, torch.int64))
        mean = g.op("AveragePool", padded, kernel_shape_i=[size, 1, 1], strides_i=[1, 1, 1])
        window = g.op("Squeeze", mean, const([1], torch.int64))
        base = g.op("Add", g.op("Mul", window, const(alpha, torch.float32)), const(k, torch.float32))
        if beta == 0.75:  # Caffe's and GoogLeNet's value: two square roots are far cheaper than Pow
            root = g.op("Sqrt", base)
            denom = g.op("Mul", root, g.op("Sqrt", root))
        else:
            denom = g.op("Pow", base, const(beta, torch.float32))
        return g.op("Div", x, denom)


class _OnnxLRN(nn.Module):
    """Drop-in for ``nn.LocalResponseNorm`` during export only."""

    def __init__(self, lrn: nn.LocalResponseNorm) -> None:
        super().__init__()
        self.size, self.alpha, self.beta, self.k = lrn.size, lrn.alpha, lrn.beta, lrn.k

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Local response norm across channels."""
        out: torch.Tensor = _LRNFunction.apply(x, self.size, self.alpha, self.beta, self.k)
        return out


def with_onnx_lrn(model: nn.Module) -> nn.Module:
    """A copy of ``model`` whose LRN layers export as the fixed chain above (the original is untouched)."""
    model = copy.deepcopy(model)
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, nn.LocalResponseNorm):
                setattr(parent, name, _OnnxLRN(child))
    return model


def export_model(model: torch.nn.Module, out_path: Path, opset: int = OPSET, lrn_chain: bool = True) -> None:
    """Write ``model`` (eval mode) as ONNX with a dynamic batch axis (``lrn_chain=False``: torch's LRN)."""
    model = (with_onnx_lrn(model) if lrn_chain else model).eval()
    dummy = torch.zeros(2, 3, 224, 224)
    with torch.no_grad():
        torch.onnx.export(
            model, (dummy,), str(out_path), input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
            dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}}, opset_version=opset,
            do_constant_folding=True, dynamo=False,
        )


def parity(model: torch.nn.Module, onnx_path: Path, check_images: Sequence[Path]) -> float:
    """Max |ONNX Runtime − torch| over the word-space vectors of ``check_images`` (one batch)."""
    x = np.stack([load_for_network(p) for p in check_images]).astype(np.float32)
    with torch.no_grad():
        expected = model.eval()(torch.from_numpy(x)).numpy()
    got = open_session(onnx_path).run([OUTPUT_NAME], {INPUT_NAME: x})[0]
    return float(np.max(np.abs(got - expected)))


def export_verified(model: torch.nn.Module, out_path: Path, check_images: Sequence[Path]) -> dict[str, Any]:
    """Export ``model`` to ``out_path`` and verify it; raise :class:`ExportMismatch` over 1e-4."""
    if not check_images:
        raise ExportMismatch("export needs at least one real image to check ONNX against torch")
    out_path = Path(out_path)
    tmp = out_path.with_name(out_path.name + ".partial")
    export_model(model, tmp)
    diff = parity(model, tmp, check_images)
    if not diff <= MAX_ABS_DIFF:  # also catches NaN
        tmp.unlink(missing_ok=True)
        raise ExportMismatch(
            f"ONNX Runtime differs from torch by {diff:.3g} (limit {MAX_ABS_DIFF:g}) on {len(check_images)} "
            "images: the encoder was not published"
        )
    os.replace(tmp, out_path)
    log.info("exported %s (opset %d), parity max |diff| %.2e on %d images", out_path, OPSET, diff,
             len(check_images))
    return {"max_abs_diff": diff, "n_images": len(check_images), "opset": OPSET}


def export_onnx(checkpoint: Path, out_path: Path, check_images: Sequence[Path]) -> dict[str, Any]:
    """Export the regressor ``checkpoint`` to ``out_path`` (:func:`export_verified`)."""
    model, _ = load_checkpoint(checkpoint)
    return export_verified(model, out_path, check_images)


class _Features(nn.Module):
    """A backbone's pooled 1,024-d features, optionally through a linear map."""

    def __init__(self, backbone: nn.Module, linear: nn.Linear | None = None) -> None:
        super().__init__()
        self.backbone = backbone
        self.linear = linear

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, 224, 224) network inputs → (B, 1024) features, or their image vectors."""
        feats = self.backbone.head(self.backbone.trunk(images))  # type: ignore[operator]
        return feats if self.linear is None else self.linear(feats)


def features_module(backbone: str, weights: Path | None, levels: Sequence[str] = POOL5) -> nn.Module:
    """The frozen backbone's pooled features (``levels``' means, :mod:`train.image.levels`, when more than
    5b) as a torch module (eval mode): what torch encodes with."""
    from train.image.googlenet import build_backbone

    if tuple(levels) != POOL5:
        return LevelFeatures(build_backbone(backbone, weights), levels).eval()
    return _Features(build_backbone(backbone, weights)).eval()


def export_features(backbone: str, weights: Path | None, out_path: Path,
                    check_images: Sequence[Path], levels: Sequence[str] = POOL5) -> dict[str, Any]:
    """The frozen backbone's pooled features as an ONNX graph (:func:`export_verified`)."""
    return export_verified(features_module(backbone, weights, levels), out_path, check_images)


def export_joint(backbone: str, weights: Path | None, model: JointModel, out_path: Path,
                 check_images: Sequence[Path], levels: Sequence[str] = POOL5) -> dict[str, Any]:
    """The bundle encoder of the joint recipe: the frozen backbone and the learned linear map (of
    ``levels``' means when more than 5b: :func:`train.image.levels.export_level_joint`)."""
    from train.image.googlenet import build_backbone

    if tuple(levels) != POOL5:
        return export_level_joint(backbone, weights, model, out_path, check_images, levels)
    linear = nn.Linear(model.weight.shape[0], model.weight.shape[1])
    with torch.no_grad():
        linear.weight.copy_(torch.from_numpy(np.ascontiguousarray(model.weight.T)))
        linear.bias.copy_(torch.from_numpy(model.bias))
    encoder = _Features(build_backbone(backbone, weights), linear).eval()
    return export_verified(encoder, out_path, check_images)


class _LevelsMapped(nn.Module):
    """Level features through the learned linear map: the bundle encoder."""

    def __init__(self, features: LevelFeatures, linear: nn.Linear) -> None:
        super().__init__()
        self.features = features
        self.linear = linear

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Network inputs → joint-space vectors."""
        out: torch.Tensor = self.linear(self.features(images))
        return out


def export_level_joint(backbone: str, weights: Path | None, model: JointModel, out_path: Path,
                       check_images: Sequence[Path],
                       levels: Sequence[str] = DEFAULT_LEVELS) -> dict[str, Any]:
    """The bundle encoder: the frozen network's level features and the learned linear map, parity-checked."""
    from train.image.googlenet import build_backbone

    features = LevelFeatures(build_backbone(backbone, weights), levels)
    if model.weight.shape[0] != feature_width(features.levels):
        raise ValueError(f"the map takes {model.weight.shape[0]} features; levels {features.levels} give "
                         f"{feature_width(features.levels)}")
    linear = nn.Linear(model.weight.shape[0], model.weight.shape[1])
    with torch.no_grad():
        linear.weight.copy_(torch.from_numpy(np.ascontiguousarray(model.weight.T)))
        linear.bias.copy_(torch.from_numpy(model.bias))
    return export_verified(_LevelsMapped(features, linear).eval(), out_path, check_images)
