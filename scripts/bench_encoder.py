"""Image-encoder throughput: ONNX Runtime vs torch eager at batch 1 and 32, and the encoder's achieved
FLOP/s as a share of the numpy float32 GEMM rate measured in the same run.

    python scripts/bench_encoder.py --weights ../shared/weights/bvlc_googlenet [--onnx image_encoder.onnx]

Without ``--onnx`` the BVLC GoogLeNet regressor (random 300-d new layer) is exported to a temp folder
first; the network cost is the same as a trained encoder's.
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

from train.export import export_model, ort_session
from train.image_model import ImageConfig, build_regressor


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


def main() -> int:
    """Measure and print one JSON line (and a short human summary)."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--weights", type=Path, required=True)
    ap.add_argument("--onnx", type=Path, default=None)
    ap.add_argument("--seconds", type=float, default=5.0, help="minimum timing window per measurement")
    args = ap.parse_args()
    threads = os.cpu_count() or 1
    torch.set_num_threads(threads)
    dim = 300
    model = build_regressor(ImageConfig(), args.weights, dim, np.full(dim, -1, np.float32),
                            np.full(dim, 1, np.float32)).eval()
    flops = encoder_flops(model)
    with tempfile.TemporaryDirectory() as tmp:
        onnx_path = args.onnx or Path(tmp) / "enc.onnx"
        if args.onnx is None:
            export_model(model, onnx_path)
        sess = ort_session(onnx_path, threads)
        out: dict[str, Any] = {"threads": threads, "gflop_per_image": round(flops / 1e9, 3)}
        for batch in (1, 32):
            x = np.random.default_rng(batch).normal(0, 50, (batch, 3, 224, 224)).astype(np.float32)
            xt = torch.from_numpy(x)

            def run_ort(x: np.ndarray = x) -> object:
                return sess.run(["vectors"], {"images": x})

            ort_ips = rate(run_ort, batch, args.seconds)

            def eager(xt: torch.Tensor = xt) -> object:
                with torch.inference_mode():
                    return model(xt)

            torch_ips = rate(eager, batch, args.seconds)
            out[f"b{batch}"] = {"ort_img_s": round(ort_ips, 2), "torch_img_s": round(torch_ips, 2),
                                "ort_over_torch": round(ort_ips / torch_ips, 2)}
    gemm = gemm_rate(min_seconds=args.seconds)
    ort32 = out["b32"]["ort_img_s"] * flops
    out["gemm_gflop_s"] = round(gemm / 1e9, 1)
    out["ort_b32_gflop_s"] = round(ort32 / 1e9, 1)
    out["ort_b32_share_of_gemm"] = round(ort32 / gemm, 3)
    print(json.dumps(out))
    print(f"ORT b32 {out['b32']['ort_img_s']} img/s vs torch eager {out['b32']['torch_img_s']} img/s "
          f"(×{out['b32']['ort_over_torch']}); {out['ort_b32_gflop_s']} GFLOP/s = "
          f"{100 * out['ort_b32_share_of_gemm']:.0f}% of numpy GEMM {out['gemm_gflop_s']} GFLOP/s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
