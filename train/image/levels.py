"""Pooled features from several depths of the BVLC GoogLeNet, not only its last block.

The classic pooled features are the global mean of inception 5b (1,024). The means of the levels below
it — pool4 (inception 4e, pooled) and inception 5a, and further down 3b … 4d — carry colours, textures
and parts that captions name and that 5b has partly abstracted away; concatenated beside 5b's mean
(2,688 features, the joint recipe's default) they lift Flickr8k retrieval by about 3 points of R@10 for
no extra network cost: the same forward pass, a wider feature vector (docs/benchmarks.md, "Joint recipe
ablation").

:class:`LevelFeatures` is that network (images → the concatenated means), the graph the features stage
exports and encodes; :func:`train.image.export.export_joint` adds the learned linear map for the bundle
encoder, and checks both against torch on real images like every exported graph.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from train.image.features import DEFAULT_LEVELS, LEVEL_WIDTHS, feature_width

__all__ = ["DEFAULT_LEVELS", "LEVEL_WIDTHS", "LevelFeatures", "feature_width"]


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
