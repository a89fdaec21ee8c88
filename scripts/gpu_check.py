"""A short prepared check for a GPU machine: training and encoding throughput, one JSON line at the end.

    python scripts/gpu_check.py --weights ../shared/weights/bvlc_googlenet --flickr8k ../shared/data/flickr8k

Measures, on the first CUDA device (about two minutes in all):
- training images/s of the CNN head (inception_4e … 5b + the new layer, the part the trainer fine-tunes)
  on inception_4d activations, with mixed precision (torch.autocast float16 + GradScaler) and in float32;
- BVLC GoogLeNet forward+backward images/s (whole network, mixed precision) and forward-only images/s;
- ONNX Runtime CUDA encoding images/s, network only and end to end from JPEG files (needs onnxruntime-gpu;
  otherwise the JSON says so).
Inputs are real Flickr8k images with ``--flickr8k``, else synthetic. Human-readable lines go to stderr and
the last stdout line is JSON naming the device. Without a CUDA device (or with ``--cpu-smoke``) every
measurement runs once at a tiny size on the CPU, the script says "no CUDA device", and exits 0.
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import torch
from torch import nn

from space.images import load_for_network
from space.ort import CUDA, INPUT_NAME, OUTPUT_NAME
from train.image.encode import EncodeConfig, encode_corpus, encoder_session
from train.image.export import export_model
from train.image.googlenet import TRUNK_SHAPE
from train.recipes.seed.config import ImageConfig
from train.recipes.seed.regressor import Regressor, build_regressor

log = logging.getLogger("gpu_check")
DIM = 300


@dataclass(frozen=True)
class CheckConfig:
    """What to measure and how long."""

    weights: Path
    flickr8k: Path | None
    onnx: Path | None
    batch: int
    seconds: float
    min_steps: int
    encode_images: int
    smoke: bool


def rate(step: Callable[[], None], batch: int, cfg: CheckConfig, sync: Callable[[], None]) -> float:
    """Images/s of ``step`` (one batch each) after one warm-up step, over ``cfg.seconds`` or min_steps."""
    if not cfg.smoke:  # the first CUDA step pays for kernel selection and allocation
        step()
        sync()
    steps, started = 0, time.perf_counter()
    while steps < cfg.min_steps or time.perf_counter() - started < cfg.seconds:
        step()
        steps += 1
    sync()
    return steps * batch / (time.perf_counter() - started)


def real_batch(cfg: CheckConfig, n: int) -> np.ndarray | None:
    """``n`` real Flickr8k network inputs (repeated if needed), or None without ``--flickr8k``."""
    if cfg.flickr8k is None:
        return None
    paths = sorted((cfg.flickr8k / "images").glob("*.jpg"))[:n]
    if not paths:
        raise SystemExit(f"no .jpg images under {cfg.flickr8k / 'images'}")
    arrays = [load_for_network(p) for p in paths]
    return np.stack([arrays[i % len(arrays)] for i in range(n)])


def measure_head(cfg: CheckConfig, model: Regressor, device: torch.device, images: np.ndarray | None,
                 sync: Callable[[], None]) -> dict[str, float]:
    """Training images/s of the fine-tuned head on inception_4d activations, mixed precision and fp32."""
    if images is None:
        feats = torch.randn(cfg.batch, *TRUNK_SHAPE, device=device).relu_()
    else:
        with torch.no_grad():
            feats = model.backbone.trunk(torch.from_numpy(images).to(device))  # type: ignore[operator]
    targets = torch.rand(cfg.batch, DIM, device=device)
    params = [p for m in model.backbone.head_modules() for p in m.parameters()]  # type: ignore[operator]
    params += list(model.proj.parameters())
    model.train()
    out: dict[str, float] = {}
    # The CPU smoke path has no mixed precision (CPU autocast is slower there): one float32 run is enough.
    for mixed in (True, False) if device.type == "cuda" else (False,):
        opt = torch.optim.SGD(params, lr=1e-3, momentum=0.9, weight_decay=2e-4)
        # float16 gradients underflow without loss scaling: GradScaler goes with autocast.
        scaler = torch.amp.GradScaler(device.type, enabled=mixed)

        def step(amp: bool = mixed, opt: torch.optim.Optimizer = opt, scaler: Any = scaler) -> None:
            opt.zero_grad(set_to_none=True)
            with torch.autocast(device.type, dtype=torch.float16, enabled=amp):
                logits = model.logits_from_trunk(feats)
            loss = nn.functional.binary_cross_entropy_with_logits(logits.float(), targets)
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()

        out["head_train_amp" if mixed else "head_train_fp32"] = rate(step, cfg.batch, cfg, sync)
    return out


def measure_googlenet(cfg: CheckConfig, net: nn.Module, device: torch.device, images: np.ndarray | None,
                      sync: Callable[[], None]) -> dict[str, float]:
    """Whole BVLC GoogLeNet: forward+backward (mixed precision) and forward-only images/s."""
    x = torch.from_numpy(images).to(device) if images is not None else torch.randn(
        cfg.batch, 3, 224, 224, device=device) * 50
    labels = torch.randint(0, 1000, (cfg.batch,), device=device)
    opt = torch.optim.SGD(net.parameters(), lr=1e-4, momentum=0.9)
    amp = device.type == "cuda"
    scaler = torch.amp.GradScaler(device.type, enabled=amp)
    dtype = torch.float16

    def train_step() -> None:
        opt.zero_grad(set_to_none=True)
        with torch.autocast(device.type, dtype=dtype, enabled=amp):
            loss = nn.functional.cross_entropy(net(x).float(), labels)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()

    def infer_step() -> None:
        with torch.no_grad(), torch.autocast(device.type, dtype=dtype, enabled=amp):
            net(x)

    net.train()
    train = rate(train_step, cfg.batch, cfg, sync)
    net.eval()
    return {"googlenet_train_amp": train, "googlenet_infer_amp": rate(infer_step, cfg.batch, cfg, sync)}


def encoder_path(cfg: CheckConfig, tmp: Path) -> Path:
    """The ONNX encoder to time: ``--onnx``, else one exported now from the BVLC weights."""
    if cfg.onnx is not None:
        return cfg.onnx
    tmin, tmax = np.zeros(DIM, np.float32), np.ones(DIM, np.float32)
    model = build_regressor(ImageConfig(), cfg.weights, DIM, tmin, tmax).eval()
    path = tmp / "image_encoder.onnx"
    export_model(model, path)
    return path


def measure_ort(cfg: CheckConfig, onnx_path: Path, images: np.ndarray | None) -> dict[str, Any]:
    """ONNX Runtime encoding images/s: network only, and from JPEG files through the streaming encoder."""
    device = "cpu" if cfg.smoke else "cuda"
    if device == "cuda" and CUDA not in ort.get_available_providers():
        return {"ort_note": "onnxruntime-gpu is not installed (pip install '.[gpu]'): no CUDA encoding"}
    session, provider = encoder_session(onnx_path, device=device)
    x = images if images is not None else np.random.default_rng(0).normal(
        0, 50, (cfg.batch, 3, 224, 224)).astype(np.float32)
    out: dict[str, Any] = {"ort_provider": provider}
    out["ort_network"] = rate(lambda: session.run([OUTPUT_NAME], {INPUT_NAME: x}), cfg.batch, cfg,
                              lambda: None)
    if cfg.flickr8k is not None:
        paths = sorted((cfg.flickr8k / "images").glob("*.jpg"))[:cfg.encode_images]
        with tempfile.TemporaryDirectory() as work:
            result = encode_corpus(onnx_path, paths, Path(work),
                                   EncodeConfig(batch_size=cfg.batch, device=device))
        out["ort_end_to_end"] = len(paths) / result.seconds
        out["ort_end_to_end_images"] = len(paths)
    return out


def build_parser() -> argparse.ArgumentParser:
    """The command line."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--weights", type=Path, required=True, help="the bvlc_googlenet weight folder")
    p.add_argument("--flickr8k", type=Path, default=None, help="use real images from this Flickr8k folder")
    p.add_argument("--onnx", type=Path, default=None, help="encoder to time (default: export one now)")
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--seconds", type=float, default=10.0, help="timed seconds per measurement")
    p.add_argument("--encode-images", type=int, default=1024, help="JPEGs for the end-to-end encoding figure")
    p.add_argument("--cpu-smoke", action="store_true", help="tiny CPU run of every measurement (tests)")
    return p


def main(argv: list[str] | None = None) -> int:
    """Run every measurement and print the JSON line."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    cuda = torch.cuda.is_available() and not args.cpu_smoke
    if not cuda:
        log.info("no CUDA device%s: measuring every figure once at a tiny size on the CPU instead",
                 " (--cpu-smoke)" if args.cpu_smoke else "")
    cfg = CheckConfig(
        weights=args.weights, flickr8k=args.flickr8k, onnx=args.onnx,
        batch=args.batch if cuda else 1, seconds=args.seconds if cuda else 0.0, min_steps=3 if cuda else 1,
        encode_images=args.encode_images if cuda else 4, smoke=not cuda,
    )
    device = torch.device("cuda") if cuda else torch.device("cpu")
    torch.backends.cudnn.benchmark = cuda  # fixed shapes: let cuDNN pick its fastest kernels once
    sync: Callable[[], None] = torch.cuda.synchronize if cuda else (lambda: None)
    started = time.monotonic()
    images = real_batch(cfg, cfg.batch)
    result: dict[str, Any] = {
        "device": torch.cuda.get_device_name(0) if cuda else f"cpu ({platform.processor() or 'unknown'})",
        "cuda": cuda, "torch": torch.__version__, "cuda_version": torch.version.cuda,
        "onnxruntime": ort.__version__, "ort_providers": ort.get_available_providers(),
        "batch": cfg.batch, "inputs": "flickr8k" if images is not None else "synthetic",
    }
    tmin, tmax = np.zeros(DIM, np.float32), np.ones(DIM, np.float32)
    model = build_regressor(ImageConfig(), cfg.weights, DIM, tmin, tmax).to(device)
    result.update(measure_head(cfg, model, device, images, sync))
    log.info("CNN head training: %s img/s mixed precision, %.1f img/s fp32",
             f"{result['head_train_amp']:.1f}" if cuda else "(no CUDA)", result["head_train_fp32"])
    # The regressor's backbone is the BVLC GoogLeNet (weights loaded once; a few head steps do not matter).
    result.update(measure_googlenet(cfg, model.backbone, device, images, sync))
    log.info("GoogLeNet: %.1f img/s forward+backward (mixed precision), %.1f img/s forward",
             result["googlenet_train_amp"], result["googlenet_infer_amp"])
    with tempfile.TemporaryDirectory() as tmp:
        result.update(measure_ort(cfg, encoder_path(cfg, Path(tmp)), images))
    log.info("ONNX Runtime: %s", {k: v for k, v in result.items() if k.startswith("ort_")})
    result["seconds"] = round(time.monotonic() - started, 1)
    for key, value in result.items():
        if isinstance(value, float):
            result[key] = round(value, 2)
    if not cuda:
        result["note"] = "no CUDA device: CPU smoke figures (float32, batch 1, one step), not a benchmark"
        print("no CUDA device: nothing measured on a GPU (CPU smoke figures only)", file=sys.stderr)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
