"""The image regressor: GoogLeNet plus a new linear layer from its 1,024 pooled features to the word space.

The new layer's outputs are logits of caption vectors min-max scaled to [0, 1] **per dimension**; the
model undoes that scaling itself (sigmoid, then the per-dimension affine map), so its ``forward`` — and
the exported ONNX graph — returns word-space vectors. Checkpoints (``train.recipes.seed.training``) carry the
config and the target range needed to rebuild it.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from train.image.googlenet import FEATURE_DIM, build_backbone
from train.recipes.seed.config import ImageConfig

log = logging.getLogger(__name__)


class Regressor(nn.Module):
    """Backbone + new linear layer; ``forward`` maps network inputs to word-space vectors."""

    def __init__(self, backbone: nn.Module, dim: int, tmin: np.ndarray, tmax: np.ndarray,
                 dropout: float) -> None:
        super().__init__()
        self.backbone = backbone
        self.dropout = nn.Dropout(dropout)
        self.proj = nn.Linear(FEATURE_DIM, dim)
        nn.init.normal_(self.proj.weight, std=0.01)
        nn.init.zeros_(self.proj.bias)
        span = np.maximum(tmax - tmin, 1e-6).astype(np.float32)
        self.tmin: torch.Tensor
        self.tspan: torch.Tensor
        self.register_buffer("tmin", torch.from_numpy(tmin.astype(np.float32)))
        self.register_buffer("tspan", torch.from_numpy(span))

    def logits_from_trunk(self, feats: torch.Tensor) -> torch.Tensor:
        """Scaled-space logits from cached inception_4d activations."""
        return self.proj(self.dropout(self.backbone.head(feats)))  # type: ignore[operator]

    def to_word_space(self, logits: torch.Tensor) -> torch.Tensor:
        """Undo the [0, 1] min-max scaling: sigmoid, then the per-dimension affine map."""
        return torch.sigmoid(logits) * self.tspan + self.tmin

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, 224, 224) network inputs → (B, D) word-space vectors."""
        return self.to_word_space(self.logits_from_trunk(self.backbone.trunk(images)))  # type: ignore[operator]


def build_regressor(cfg: ImageConfig, weights_dir: Path | None, dim: int, tmin: np.ndarray,
                    tmax: np.ndarray) -> Regressor:
    """A fresh regressor (ImageNet weights: BVLC's from ``weights_dir`` when given, torchvision's always)."""
    pretrained = weights_dir is not None or cfg.backbone == "torchvision"
    backbone = build_backbone(cfg.backbone, weights_dir, pretrained=pretrained)
    return Regressor(backbone, dim, tmin, tmax, cfg.dropout)


def read_checkpoint(path: Path) -> dict[str, Any]:
    """A checkpoint's dict, loaded as data only (``weights_only``): the models folder is shared with the
    engine, and a pickled checkpoint planted there would otherwise run its code in the trainer. Numpy
    arrays (checkpoints of earlier trainers) are the one kind of object let through."""
    safe = [np.ndarray, np.dtype, np.dtypes.Float32DType, np.dtypes.Float64DType,
            np._core.multiarray._reconstruct]  # type: ignore[attr-defined]
    with torch.serialization.safe_globals(safe):
        ckpt: dict[str, Any] = torch.load(path, map_location="cpu", weights_only=True)
    return ckpt


def load_checkpoint(path: Path) -> tuple[Regressor, dict[str, Any]]:
    """Rebuild the regressor stored in ``path`` (eval mode) and return it with the checkpoint dict."""
    ckpt = read_checkpoint(path)
    cfg = ImageConfig(**ckpt["config"])
    tmin = np.asarray(ckpt["target_min"], dtype=np.float32)
    tmax = np.asarray(ckpt["target_max"], dtype=np.float32)
    backbone = build_backbone(cfg.backbone, None, pretrained=False)
    model = Regressor(backbone, int(ckpt["dim"]), tmin, tmax, cfg.dropout)
    model.load_state_dict(ckpt["model"])
    return model.eval(), ckpt


def scale_targets(targets: np.ndarray, tmin: np.ndarray, tmax: np.ndarray) -> np.ndarray:
    """Per-dimension min-max scaling of word-space vectors to [0, 1]."""
    span = np.maximum(tmax - tmin, 1e-6)
    return np.clip((targets - tmin) / span, 0.0, 1.0).astype(np.float32)


def ridge_init(model: Regressor, feats: np.memmap, rows: np.ndarray, scaled: np.ndarray, alpha: float,
               device: torch.device, batch: int = 120) -> None:
    """Set the new layer to the ridge solution from pooled features to logit-space targets.

    Near 0.5 the sigmoid is about 0.5 + z/4, so targets z = 4·(scaled − 0.5) make the initial output a
    linear regression of the caption vectors; ``alpha`` scales the penalty relative to the mean feature
    energy.
    """
    model.eval()
    pooled = []
    with torch.no_grad():
        for s in range(0, len(rows), batch):
            x = torch.from_numpy(np.asarray(feats[rows[s : s + batch]], dtype=np.float32)).to(device)
            pooled.append(model.backbone.head(x).float().cpu().numpy())  # type: ignore[operator]
    f = np.concatenate(pooled).astype(np.float64)
    z = 4.0 * (scaled.astype(np.float64) - 0.5)
    fm, zm = f.mean(axis=0), z.mean(axis=0)
    fc = f - fm
    gram = fc.T @ fc
    lam = alpha * float(np.trace(gram)) / gram.shape[0]
    w = np.linalg.solve(gram + lam * np.eye(gram.shape[0]), fc.T @ (z - zm))  # (1024, D)
    b = zm - fm @ w
    with torch.no_grad():
        model.proj.weight.copy_(torch.from_numpy(w.T.astype(np.float32)))
        model.proj.bias.copy_(torch.from_numpy(b.astype(np.float32)))
    log.info("new layer initialised by ridge on %d pooled views (lambda %.3g)", len(rows), lam)
