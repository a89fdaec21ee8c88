"""Image-encoder throughput: torch eager vs ONNX Runtime fp32 vs ONNX Runtime int8 at batch 1 and 32, each
ORT model's achieved FLOP/s as a share of the numpy float32 GEMM rate, and the int8 model's fidelity, all
measured in one run (interleaved rounds, medians, so a busy neighbour slows every column alike).

    python scripts/bench_encoder.py --weights ../shared/weights/bvlc_googlenet \
        --flickr8k ../shared/data/flickr8k [--onnx image_encoder.onnx] [--threads N]

Without ``--onnx`` the BVLC GoogLeNet regressor (random 300-d new layer) is exported to a temp folder
first (the network cost is the same as a trained encoder's), once as :mod:`train.image.export` writes it and
once with torch's own LRN spelling (the ``ort_fp32_torch_lrn`` column: what the LRN chain gains).
int8 is :mod:`train.image.quantize` calibrated on Flickr8k train images, its fidelity checked on test images.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from space.images import load_for_network
from space.ort import open_session
from train.image.export import export_model
from train.image.quantize import DISABLED_OPTIMIZERS, fidelity, quantize_file
from train.recipes.seed.config import ImageConfig
from train.recipes.seed.regressor import build_regressor


def encoder_flops(model: nn.Module) -> float:
    """Multiply-adds ×2 of convolutions and linear layers for one 224×224 image."""
    total = [0.0]

    def hook(mod: nn.Module, inp: Any, out: torch.Tensor) -> None:
        if isinstance(mod, nn.Conv2d):
            k = mod.in_channels // mod.groups * mod.kernel_size[0] * mod.kernel_size[1]
            total[0] += 2.0 * k * out.numel()
        elif isinstance(mod, nn.Linear):
            total[0] += 2.0 * mod.in_features * out.numel()

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, nn.Conv2d | nn.Linear)]
    with torch.no_grad():
        model(torch.zeros(1, 3, 224, 224))
    for h in handles:
        h.remove()
    return total[0]


def rate(fn: Callable[[], object], n_items: int, min_seconds: float) -> float:
    """Items per second of ``fn`` (one warm-up call, then repeated for at least ``min_seconds``)."""
    fn()
    done, t0 = 0, time.perf_counter()
    while True:
        fn()
        done += n_items
        if time.perf_counter() - t0 >= min_seconds:
            return done / (time.perf_counter() - t0)


def gemm_rate(n: int = 2048, min_seconds: float = 3.0) -> float:
    """numpy float32 matmul FLOP/s (n×n by n×n)."""
    a = np.random.default_rng(0).standard_normal((n, n), dtype=np.float32)
    b = np.random.default_rng(1).standard_normal((n, n), dtype=np.float32)
    return rate(lambda: a @ b, 1, min_seconds) * 2.0 * n**3


def ort_runner(sess: Any, x: np.ndarray) -> Callable[[], object]:
    """One ONNX Runtime call on ``x``, as a thunk for :func:`rate`."""
    return lambda: sess.run(["vectors"], {"images": x})


def flickr8k_inputs(root: Path, split: str, n: int) -> np.ndarray:
    """Network inputs of the first ``n`` images of a Flickr8k split list."""
    names = (root / f"Flickr_8k.{split}Images.txt").read_text(encoding="utf-8").split()[:n]
    return np.stack([load_for_network(root / "images" / name) for name in names]).astype(np.float32)


def main() -> int:
    """Measure and print one JSON line (and a short human summary)."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--weights", type=Path, required=True)
    ap.add_argument("--flickr8k", type=Path, required=True, help="Flickr8k folder (int8 calibration/check)")
    ap.add_argument("--onnx", type=Path, default=None)
    ap.add_argument("--seconds", type=float, default=3.0, help="minimum timing window per measurement")
    ap.add_argument("--rounds", type=int, default=3, help="interleaved rounds per batch size (median)")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--calibration", type=int, default=100)
    ap.add_argument("--check", type=int, default=100)
    args = ap.parse_args()
    threads = args.threads
    torch.set_num_threads(threads)
    dim = 300
    model = build_regressor(ImageConfig(), args.weights, dim, np.full(dim, -1, np.float32),
                            np.full(dim, 1, np.float32)).eval()
    flops = encoder_flops(model)
    out: dict[str, Any] = {"threads": threads, "gflop_per_image": round(flops / 1e9, 3)}
    with tempfile.TemporaryDirectory() as tmp:
        onnx_path = args.onnx or Path(tmp) / "enc.onnx"
        sessions: dict[str, Any] = {}
        if args.onnx is None:
            export_model(model, onnx_path)
            export_model(model, Path(tmp) / "enc_torch_lrn.onnx", lrn_chain=False)
            sessions["ort_fp32_torch_lrn"] = open_session(Path(tmp) / "enc_torch_lrn.onnx", threads)
        sessions["ort_fp32"] = open_session(onnx_path, threads)
        int8_path = Path(tmp) / "enc.int8.onnx"
        quantize_file(onnx_path, int8_path, flickr8k_inputs(args.flickr8k, "train", args.calibration))
        sessions["ort_int8"] = open_session(int8_path, threads, DISABLED_OPTIMIZERS)
        out["int8_fidelity"] = fidelity(sessions["ort_fp32"], sessions["ort_int8"],
                                        flickr8k_inputs(args.flickr8k, "test", args.check), 16)
        for batch in (1, 32):
            x = np.random.default_rng(batch).normal(0, 50, (batch, 3, 224, 224)).astype(np.float32)
            xt = torch.from_numpy(x)
            runs = {name: ort_runner(sess, x) for name, sess in sessions.items()}

            def eager(xt: torch.Tensor = xt) -> object:
                with torch.inference_mode():
                    return model(xt)

            runs["torch"] = eager
            rates: dict[str, list[float]] = {name: [] for name in runs}
            for _ in range(args.rounds):
                for name, fn in runs.items():
                    rates[name].append(rate(fn, batch, args.seconds))
            res = {f"{name}_img_s": round(float(np.median(r)), 2) for name, r in rates.items()}
            for name in sessions:
                res[f"{name}_over_torch"] = round(res[f"{name}_img_s"] / res["torch_img_s"], 2)
            res["int8_over_fp32"] = round(res["ort_int8_img_s"] / res["ort_fp32_img_s"], 2)
            out[f"b{batch}"] = res
    gemm = gemm_rate(min_seconds=args.seconds)
    out["gemm_gflop_s"] = round(gemm / 1e9, 1)
    for name in sessions:
        achieved = out["b32"][f"{name}_img_s"] * flops
        out[f"{name}_b32_gflop_s"] = round(achieved / 1e9, 1)
        out[f"{name}_b32_share_of_gemm"] = round(achieved / gemm, 3)
    print(json.dumps(out))
    b32, fid = out["b32"], out["int8_fidelity"]
    for name in sessions:
        print(f"{name} b32 {b32[name + '_img_s']} img/s (×{b32[name + '_over_torch']} torch eager "
              f"{b32['torch_img_s']}); {100 * out[name + '_b32_share_of_gemm']:.0f}% of numpy GEMM "
              f"{out['gemm_gflop_s']} GFLOP/s")
    print(f"int8 over fp32: ×{out['b1']['int8_over_fp32']} at batch 1, ×{b32['int8_over_fp32']} at 32; "
          f"cosine vs fp32 mean {fid['mean_cosine']} min {fid['min_cosine']} on {fid['n_images']} images")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
