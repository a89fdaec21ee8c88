"""The regressor's training losses: (logits, [0, 1]-scaled targets, raw word-space targets) → mean loss.

``bce`` (the seed recipe): sigmoid cross-entropy against the scaled targets. ``cosine``: 1 − cosine in
the word space, after subtracting the mean training target. ``contrastive``: symmetric in-batch InfoNCE
on the same centred vectors.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from train.recipes.seed.config import ImageConfig
from train.recipes.seed.regressor import Regressor

LossFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]

# Losses that are a mean of per-row terms: under torchrun each rank's share is weighted
# (``train.image.distributed.batch_share``). Any other loss (the in-batch contrastive one) couples the
# rows of a batch, so its logits are gathered across ranks first.
PER_ROW_LOSSES = ("bce", "cosine")


def loss_function(cfg: ImageConfig, model: Regressor, center: torch.Tensor) -> LossFn:
    """(logits, scaled targets, raw targets) → mean loss, for ``cfg.loss``.

    The cosine loss compares vectors after subtracting the mean training target ``center``: caption
    vectors share a large common component (raw cosines are all about 0.99), which would otherwise swamp
    the signal.

    The contrastive loss (symmetric InfoNCE over the batch, temperature ``cfg.temperature``) scores each
    image against every caption vector in the batch, on the same centred vectors: retrieval ranks, so the
    loss asks for ranking rather than for the exact caption vector. Rows with identical targets (two views
    of one image in a batch) are not counted as each other's negatives.
    """
    bce = nn.BCEWithLogitsLoss()
    if cfg.loss == "bce":
        return lambda logits, scaled, raw: bce(logits, scaled)
    if cfg.loss == "cosine":
        return lambda logits, scaled, raw: (
            1 - nn.functional.cosine_similarity(model.to_word_space(logits) - center, raw - center, dim=1)
        ).mean()
    if cfg.loss == "contrastive":

        def info_nce(logits: torch.Tensor, scaled: torch.Tensor, raw: torch.Tensor) -> torch.Tensor:
            out = nn.functional.normalize(model.to_word_space(logits) - center, dim=1)
            tgt = nn.functional.normalize(raw - center, dim=1)
            sims = out @ tgt.T / cfg.temperature
            same = (raw[:, None, :] == raw[None, :, :]).all(dim=2)
            same.fill_diagonal_(False)
            sims = sims.masked_fill(same, float("-inf"))
            labels = torch.arange(len(sims), device=sims.device)
            ce = nn.functional.cross_entropy
            return (ce(sims, labels) + ce(sims.T, labels)) / 2

        return info_nce
    raise ValueError(f"unknown loss {cfg.loss!r} (expected 'bce', 'cosine' or 'contrastive')")
