"""The BVLC GoogLeNet (Caffe model zoo) in PyTorch, loaded from the raw per-blob weight files.

Not torchvision's GoogLeNet: convolutions carry a bias and a ReLU, there is no BatchNorm, Caffe's LRN
follows pool1 and conv2/3x3, the 5×5 branch is a true 5×5 convolution and stride-2 pools round up. The
input is what :func:`space.images.preprocess` produces (BGR, 0–255, Caffe mean subtracted).

The network is split in two so training can cache the frozen part: :meth:`trunk` (conv1 … inception_4d,
528×14×14) and :meth:`head` (inception_4e … 5b and global average pooling, 1,024 features).
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
from torch import nn

from space.errors import SpaceError

log = logging.getLogger(__name__)

FEATURE_DIM = 1024
TRUNK_SHAPE = (528, 14, 14)
# in, 1x1, 3x3_reduce, 3x3, 5x5_reduce, 5x5, pool_proj (deploy.prototxt).
INCEPTIONS: dict[str, tuple[int, int, int, int, int, int, int]] = {
    "3a": (192, 64, 96, 128, 16, 32, 32),
    "3b": (256, 128, 128, 192, 32, 96, 64),
    "4a": (480, 192, 96, 208, 16, 48, 64),
    "4b": (512, 160, 112, 224, 24, 64, 64),
    "4c": (512, 128, 128, 256, 24, 64, 64),
    "4d": (512, 112, 144, 288, 32, 64, 64),
    "4e": (528, 256, 160, 320, 32, 128, 128),
    "5a": (832, 256, 160, 320, 32, 128, 128),
    "5b": (832, 384, 192, 384, 48, 128, 128),
}
TRUNK_BLOCKS = ("3a", "3b", "4a", "4b", "4c", "4d")
HEAD_BLOCKS = ("4e", "5a", "5b")


class WeightsInvalid(SpaceError):
    """The GoogLeNet weight folder is missing, incomplete or fails its checksums."""

    code = "weights_invalid"
    status = 500


class Backbone(Protocol):
    """What the regressor needs from a CNN: a cacheable trunk and a trainable head."""

    def trunk(self, x: torch.Tensor) -> torch.Tensor: ...

    def head(self, x: torch.Tensor) -> torch.Tensor: ...

    def head_modules(self) -> list[nn.Module]: ...


class ConvReLU(nn.Sequential):
    """Caffe convolution with bias, followed by ReLU."""

    def __init__(self, cin: int, cout: int, k: int, stride: int = 1, pad: int = 0) -> None:
        super().__init__(nn.Conv2d(cin, cout, k, stride=stride, padding=pad), nn.ReLU(inplace=True))


class Inception(nn.Module):
    """One inception block: 1×1, 1×1→3×3, 1×1→5×5 and 3×3/1 max pool→1×1, concatenated."""

    def __init__(self, cin: int, c1: int, c3r: int, c3: int, c5r: int, c5: int, cp: int) -> None:
        super().__init__()
        self.b1 = ConvReLU(cin, c1, 1)
        self.b3 = nn.Sequential(ConvReLU(cin, c3r, 1), ConvReLU(c3r, c3, 3, pad=1))
        self.b5 = nn.Sequential(ConvReLU(cin, c5r, 1), ConvReLU(c5r, c5, 5, pad=2))
        self.bp = nn.Sequential(nn.MaxPool2d(3, stride=1, padding=1, ceil_mode=True), ConvReLU(cin, cp, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Concatenate the four branches on the channel axis."""
        return torch.cat([self.b1(x), self.b3(x), self.b5(x), self.bp(x)], dim=1)


def _pool() -> nn.MaxPool2d:
    # Caffe rounds the output size up; PyTorch's ceil_mode reproduces it.
    return nn.MaxPool2d(3, stride=2, ceil_mode=True)


def _lrn() -> nn.LocalResponseNorm:
    # Caffe divides alpha by the window size, exactly as PyTorch's formula does.
    return nn.LocalResponseNorm(5, alpha=1e-4, beta=0.75, k=1.0)


class BVLCGoogLeNet(nn.Module):
    """The BVLC GoogLeNet main path (no auxiliary classifiers)."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(
            ConvReLU(3, 64, 7, stride=2, pad=3),
            _pool(),
            _lrn(),
            ConvReLU(64, 64, 1),
            ConvReLU(64, 192, 3, pad=1),
            _lrn(),
            _pool(),
        )
        self.blocks = nn.ModuleDict({name: Inception(*INCEPTIONS[name]) for name in INCEPTIONS})
        self.pool3 = _pool()
        self.pool4 = _pool()
        self.classifier = nn.Linear(FEATURE_DIM, 1000)

    def trunk(self, x: torch.Tensor) -> torch.Tensor:
        """conv1 … inception_4d: (B, 3, 224, 224) → (B, 528, 14, 14)."""
        x = self.stem(x)
        b = self.blocks
        x = b["3b"](b["3a"](x))
        x = self.pool3(x)
        for name in ("4a", "4b", "4c", "4d"):
            x = b[name](x)
        return x

    def head(self, x: torch.Tensor) -> torch.Tensor:
        """inception_4e … 5b + global average pool: (B, 528, 14, 14) → (B, 1024)."""
        x = self.pool4(self.blocks["4e"](x))
        x = self.blocks["5b"](self.blocks["5a"](x))
        return torch.flatten(x.mean(dim=(2, 3)), 1)

    def head_modules(self) -> list[nn.Module]:
        """The modules :meth:`head` uses (the ones fine-tuning trains)."""
        return [self.blocks[name] for name in HEAD_BLOCKS]

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Pooled 1,024-d features of network inputs."""
        return self.head(self.trunk(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """ImageNet logits (B, 1000)."""
        return self.classifier(self.features(x))


def _convs(module: nn.Module) -> list[nn.Conv2d]:
    """The convolutions inside ``module``, in definition order."""
    return [m for m in module.modules() if isinstance(m, nn.Conv2d)]


def _conv_blobs(net: BVLCGoogLeNet) -> dict[str, nn.Conv2d]:
    """Caffe blob name → the convolution it fills."""
    stem = _convs(net.stem)
    blobs = {"conv1/7x7_s2": stem[0], "conv2/3x3_reduce": stem[1], "conv2/3x3": stem[2]}
    for name, block in net.blocks.items():
        assert isinstance(block, Inception)
        prefix = f"inception_{name}/"
        (b1,), (b3r, b3), (b5r, b5), (bp,) = (_convs(block.b1), _convs(block.b3), _convs(block.b5),
                                              _convs(block.bp))
        blobs.update({prefix + "1x1": b1, prefix + "3x3_reduce": b3r, prefix + "3x3": b3,
                      prefix + "5x5_reduce": b5r, prefix + "5x5": b5, prefix + "pool_proj": bp})
    return blobs


def verify_checksums(weights_dir: Path) -> None:
    """Check every blob against ``SHA256SUMS``; raise :class:`WeightsInvalid` on any mismatch."""
    sums = weights_dir / "SHA256SUMS"
    if not sums.is_file():
        raise WeightsInvalid(f"{sums} is missing: is {weights_dir} the bvlc_googlenet weight folder?")
    bad: list[str] = []
    for line in sums.read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        digest, _, name = line.partition("  ")
        path = weights_dir / name.strip()
        if not path.is_file():
            bad.append(f"{name.strip()} (missing)")
            continue
        if hashlib.sha256(path.read_bytes()).hexdigest() != digest.strip():
            bad.append(f"{name.strip()} (checksum mismatch)")
    if bad:
        raise WeightsInvalid(f"GoogLeNet weights in {weights_dir} are corrupt: {', '.join(bad[:5])}")


def weights_fingerprint(weights_dir: Path) -> str:
    """A short hash of the weight folder's checksum list (keys feature caches)."""
    return hashlib.sha256((weights_dir / "SHA256SUMS").read_bytes()).hexdigest()[:16]


def _blob(weights_dir: Path, name: str, shape: tuple[int, ...]) -> np.ndarray:
    path = weights_dir / name
    arr = np.fromfile(path, dtype="<f4")
    if arr.size != int(np.prod(shape)):
        raise WeightsInvalid(f"{path} holds {arr.size} floats, expected shape {shape}")
    return arr.reshape(shape)


def load_bvlc_googlenet(weights_dir: Path, *, verify: bool = True) -> BVLCGoogLeNet:
    """Build the network and fill it from ``weights_dir`` (checksums verified first), in eval mode."""
    weights_dir = Path(weights_dir)
    if verify:
        verify_checksums(weights_dir)
    net = BVLCGoogLeNet()
    with torch.no_grad():
        for name, conv in _conv_blobs(net).items():
            out, cin, kh, kw = conv.weight.shape
            w = _blob(weights_dir, f"{name}_filter.bin", (out, kh, kw, cin)).transpose(0, 3, 1, 2)
            conv.weight.copy_(torch.from_numpy(np.ascontiguousarray(w)))
            assert conv.bias is not None
            conv.bias.copy_(torch.from_numpy(_blob(weights_dir, f"{name}_bias.bin", (out,))))
        net.classifier.weight.copy_(
            torch.from_numpy(_blob(weights_dir, "loss3/classifier_filter.bin", (1000, FEATURE_DIM)))
        )
        net.classifier.bias.copy_(torch.from_numpy(_blob(weights_dir, "loss3/classifier_bias.bin", (1000,))))
    log.info("loaded BVLC GoogLeNet from %s", weights_dir)
    return net.eval()


def synset_words(weights_dir: Path) -> list[str]:
    """The 1,000 ImageNet class descriptions in output order (e.g. "palace")."""
    lines = (Path(weights_dir) / "synset_words.txt").read_text(encoding="utf-8").splitlines()
    return [line.partition(" ")[2] for line in lines if line.strip()]


class TorchvisionGoogLeNet(nn.Module):
    """torchvision's GoogLeNet behind the same trunk/head split, fed the BVLC (BGR, mean-subtracted) input.

    Needs ImageNet weights from the internet on first use (``pretrained=True``); never used by tests.
    """

    def __init__(self, pretrained: bool = True) -> None:
        super().__init__()
        from torchvision.models import GoogLeNet_Weights, googlenet

        weights = GoogLeNet_Weights.IMAGENET1K_V1 if pretrained else None
        self.net = googlenet(weights=weights, aux_logits=False, init_weights=not pretrained)
        # torchvision wants RGB in [0, 1] normalised by these statistics.
        self.rgb_mean: torch.Tensor
        self.tv_mean: torch.Tensor
        self.tv_std: torch.Tensor
        self.register_buffer("rgb_mean", torch.tensor([123.0, 117.0, 104.0]).view(1, 3, 1, 1))
        self.register_buffer("tv_mean", torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1))
        self.register_buffer("tv_std", torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1))

    def trunk(self, x: torch.Tensor) -> torch.Tensor:
        """Stem … inception4d: (B, 528, 14, 14)."""
        rgb = (x.flip(1) + self.rgb_mean) / 255.0
        n = self.net
        x = n._transform_input((rgb - self.tv_mean) / self.tv_std)
        x = n.maxpool2(n.conv3(n.conv2(n.maxpool1(n.conv1(x)))))
        x = n.maxpool3(n.inception3b(n.inception3a(x)))
        return n.inception4d(n.inception4c(n.inception4b(n.inception4a(x))))

    def head(self, x: torch.Tensor) -> torch.Tensor:
        """inception4e … 5b + global average pool: (B, 1024)."""
        n = self.net
        x = n.maxpool4(n.inception4e(x))
        return torch.flatten(n.inception5b(n.inception5a(x)).mean(dim=(2, 3)), 1)

    def head_modules(self) -> list[nn.Module]:
        """The modules :meth:`head` uses."""
        return [self.net.inception4e, self.net.inception5a, self.net.inception5b]


def build_backbone(name: str, weights_dir: Path | None, *, pretrained: bool = True) -> nn.Module:
    """``"bvlc"`` (local Caffe weights, the default) or ``"torchvision"`` (downloads ImageNet weights)."""
    if name == "bvlc":
        if weights_dir is None:
            return BVLCGoogLeNet().eval()
        return load_bvlc_googlenet(weights_dir)
    if name == "torchvision":
        return TorchvisionGoogLeNet(pretrained=pretrained).eval()
    raise ValueError(f"unknown backbone {name!r} (expected 'bvlc' or 'torchvision')")
