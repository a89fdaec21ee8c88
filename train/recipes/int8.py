"""The int8 copy of a recipe's exported encoder, as a cached stage (published only when faithful)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from space import bundle as bundle_format
from train.config import to_jsonable
from train.corpus.posts import Post
from train.stages import Stage, StageRunner

DISABLED = {"published": False, "reason": "disabled"}


def quantize_stage(runner: StageRunner, prev: Stage, onnx_path: Path,
                   posts: Sequence[Post]) -> tuple[Path | None, dict[str, Any]]:
    """A static int8 copy of the encoder when the run asks for one; its path (or None) and report."""
    if not runner.cfg.encoder_int8:
        return None, dict(DISABLED)
    from train.image.quantize import QuantizeConfig, quantize_encoder  # onnxruntime.quantization: slow

    qcfg = QuantizeConfig.quick_preset() if runner.cfg.quick else QuantizeConfig(speed_seconds=0.0)
    framing = runner.cfg.framing
    # A centre-framed run's key leaves the framing out, as it was before framings existed.
    st = runner.stage("quantize", prev.key, to_jsonable(qcfg), *([framing] if framing != "centre" else []))
    out = st.dir / bundle_format.INT8_ENCODER

    def run() -> dict[str, Any]:
        calibration = [p.image for p in posts if p.split == "train"]
        check = [p.image for p in posts if p.split != "train"] or calibration[-qcfg.check_images:]
        return {"report": quantize_encoder(onnx_path, out, calibration, check, qcfg, framing)}

    report = dict(runner.run_stage(st, run)["report"])
    return (out if report.get("published") and out.is_file() else None), report
