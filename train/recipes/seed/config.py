"""How the image regressor is trained (:class:`ImageConfig`), without torch.

The pipeline's config, the command line's ``--image-set`` and the image stage's cache key need this
dataclass; keeping it apart from the training code lets them build it without importing torch. The
field names, order and defaults are part of every image stage key and checkpoint: renaming, reordering
or adding a field changes ``to_jsonable(ImageConfig())`` and so invalidates every cached image stage.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any


@dataclass(frozen=True)
class ImageConfig:
    """How the image regressor is trained; defaults are the seed-faithful recipe."""

    backbone: str = "bvlc"  # "bvlc" (local Caffe weights) or "torchvision" (downloads ImageNet weights)
    # "bce": sigmoid cross-entropy on [0,1]-scaled targets; "cosine": 1 − cos in word space;
    # "contrastive": symmetric in-batch InfoNCE between centred outputs and centred caption vectors.
    loss: str = "bce"
    temperature: float = 0.05  # the contrastive loss's softmax temperature
    # Serve centred: the bundle carries the mean training image and caption vectors (space.centering),
    # subtracted before cosine ranking (Flickr8k 1K test, ridge-cosine: annotation R@10 28.6 → 30.6).
    centre: bool = True
    lr: float = 0.001
    momentum: float = 0.9
    weight_decay: float = 2e-4
    batch_size: int = 120
    epochs: int = 4  # with 4 cached views per image: ~16 passes over each image, within ~60 min on 2 cores
    schedule: str = "constant"  # or "cosine"
    dropout: float = 0.4  # GoogLeNet's dropout before the classifier, kept before the new layer
    train_views: int = 4  # cached random crop/mirror views per training image
    view_seed: int = 0
    seed: int = 0
    feature_batch: int = 32
    max_train_minutes: float | None = None  # stop after the epoch that crosses this budget
    num_threads: int | None = None  # None: all cores
    # "ridge": closed-form ridge fit of the new layer on the frozen head's pooled features (logit space), so
    # training starts from a useful map; "gaussian": N(0, 0.01) like Caffe's new layers. The seed recipe
    # names no initialisation: from noise its 4 epochs leave every output at the mean caption vector
    # (Flickr8k image search R@10 4.9, chance); from the ridge map the same recipe gives 37.9 (README).
    init: str = "ridge"
    ridge_alpha: float = 1.0
    quick: bool = False

    @classmethod
    def quick_preset(cls, **overrides: Any) -> ImageConfig:
        """Settings for a few hundred images in a few minutes on a CPU."""
        base = cls(quick=True, epochs=4, train_views=2, batch_size=32, lr=0.01, init="ridge", loss="cosine")
        return replace(base, **overrides)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict (stored in checkpoints and manifests)."""
        return asdict(self)
