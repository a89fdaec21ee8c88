"""ONNX export of the trained regressor, refused unless ONNX Runtime matches torch on real images.

The graph takes ``images`` float32 (B, 3, 224, 224) — :func:`space.images.preprocess` output — with a
dynamic batch axis and returns ``vectors`` (B, D) in the word space: the [0, 1] target scaling is undone
inside the graph (sigmoid, then the per-dimension affine map), so serving needs no extra metadata.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from space.errors import SpaceError
from space.images import load_for_network
from train.image_model import load_checkpoint

log = logging.getLogger(__name__)

OPSET = 17
MAX_ABS_DIFF = 1e-4
INPUT_NAME = "images"
OUTPUT_NAME = "vectors"


class ExportMismatch(SpaceError):
    """ONNX Runtime and torch disagree on the exported encoder: it must not be published."""

    code = "export_mismatch"
    status = 500


def ort_session(onnx_path: Path, threads: int | None = None) -> Any:
    """A CPU ONNX Runtime session with all graph optimisations on."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.intra_op_num_threads = threads or os.cpu_count() or 1
    return ort.InferenceSession(str(onnx_path), opts, providers=["CPUExecutionProvider"])


def export_model(model: torch.nn.Module, out_path: Path, opset: int = OPSET) -> None:
    """Write ``model`` (eval mode) as ONNX with a dynamic batch axis."""
    model = model.eval()
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
    got = ort_session(onnx_path).run([OUTPUT_NAME], {INPUT_NAME: x})[0]
    return float(np.max(np.abs(got - expected)))


def export_onnx(checkpoint: Path, out_path: Path, check_images: Sequence[Path]) -> dict[str, Any]:
    """Export ``checkpoint`` to ``out_path`` and verify it; raise :class:`ExportMismatch` over 1e-4."""
    if not check_images:
        raise ExportMismatch("export needs at least one real image to check ONNX against torch")
    model, _ = load_checkpoint(checkpoint)
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
