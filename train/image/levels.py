"""Pooled features from several depths of the BVLC GoogLeNet, not only its last block.

The classic pooled features are the global mean of inception 5b (1,024). The means of the levels below
it — pool4 (inception 4e, pooled) and inception 5a, and further down 3b … 4d — carry colours, textures
and parts that captions name and that 5b has partly abstracted away; concatenated beside 5b's mean
(2,688 features, the joint recipe's default) they lift Flickr8k retrieval by about 3 points of R@10 for
no extra network cost: the same forward pass, a wider feature vector (docs/benchmarks.md, "Joint recipe
ablation").

:class:`LevelFeatures` is that network (images → the concatenated means), the graph the features stage
exports and encodes; :func:`export_level_joint` adds the learned linear map, the bundle encoder. Both
are checked against torch on real images like every exported graph
(:func:`~train.image.export.export_verified`).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from train.image.features import DEFAULT_LEVELS, LEVEL_WIDTHS, feature_width
from train.recipes.joint.model import JointModel

__all__ = ["DEFAULT_LEVELS", "LEVEL_WIDTHS", "LevelFeatures", "export_level_features", "export_level_joint",
           "feature_width"]


class LevelFeatures(nn.Module):
    """Network inputs (B, 3, 224, 224) → the global means of ``levels``' outputs, concatenated in network
    order (B, :func:`feature_width`). Needs the BVLC GoogLeNet
    (:class:`~train.image.googlenet.BVLCGoogLeNet`)."""

    def __init__(self, backbone: nn.Module, levels: Sequence[str] = DEFAULT_LEVELS) -> None:
        super().__init__()
        unknown = [name for name in levels if name not in LEVEL_WIDTHS]
        if unknown:
            raise ValueError(f"unknown levels {unknown} (known: {', '.join(LEVEL_WIDTHS)})")
        if not isinstance(getattr(backbone, "blocks", None), nn.ModuleDict):
            raise ValueError("pooled levels need the bvlc backbone")
        self.backbone = backbone
        self.levels = tuple(name for name in LEVEL_WIDTHS if name in levels)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """The concatenated level means."""
        net: Any = self.backbone
        b = net.blocks
        out: list[torch.Tensor] = []

        def keep(name: str, x: torch.Tensor) -> torch.Tensor:
            if name in self.levels:
                out.append(x.mean(dim=(2, 3)))
            return x

        x = net.stem(images)
        x = keep("3b", b["3b"](b["3a"](x)))
        x = net.pool3(x)
        for name in ("4a", "4b", "4c", "4d"):
            x = keep(name, b[name](x))
        x = keep("pool4", net.pool4(b["4e"](x)))
        x = keep("5a", b["5a"](x))
        keep("5b", b["5b"](x))
        return torch.cat(out, dim=1)


class _Mapped(nn.Module):
    """Level features through the learned linear map: the bundle encoder."""

    def __init__(self, features: LevelFeatures, linear: nn.Linear) -> None:
        super().__init__()
        self.features = features
        self.linear = linear

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Network inputs → joint-space vectors."""
        out: torch.Tensor = self.linear(self.features(images))
        return out


def export_level_features(backbone: str, weights: Path | None, out_path: Path, check_images: Sequence[Path],
                          levels: Sequence[str] = DEFAULT_LEVELS) -> dict[str, Any]:
    """The frozen network's level features as an ONNX graph (the features stage's), parity-checked."""
    from train.image.export import export_verified
    from train.image.googlenet import build_backbone

    return export_verified(LevelFeatures(build_backbone(backbone, weights), levels).eval(), out_path,
                           check_images)


def export_level_joint(backbone: str, weights: Path | None, model: JointModel, out_path: Path,
                       check_images: Sequence[Path],
                       levels: Sequence[str] = DEFAULT_LEVELS) -> dict[str, Any]:
    """The bundle encoder: the frozen network's level features and the learned linear map, parity-checked."""
    from train.image.export import export_verified
    from train.image.googlenet import build_backbone

    features = LevelFeatures(build_backbone(backbone, weights), levels)
    if model.weight.shape[0] != feature_width(features.levels):
        raise ValueError(f"the map takes {model.weight.shape[0]} features; levels {features.levels} give "
                         f"{feature_width(features.levels)}")
    linear = nn.Linear(model.weight.shape[0], model.weight.shape[1])
    with torch.no_grad():
        linear.weight.copy_(torch.from_numpy(np.ascontiguousarray(model.weight.T)))
        linear.bias.copy_(torch.from_numpy(model.bias))
    return export_verified(_Mapped(features, linear).eval(), out_path, check_images)
