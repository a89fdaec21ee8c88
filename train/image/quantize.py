"""Static int8 quantisation of the exported image encoder, published only when it stays faithful.

ONNX Runtime's ``quantize_static`` in QDQ form: weights int8 per output channel, activations uint8 with
ranges calibrated (min/max) on real training images through the project's own preprocessing. Only the
operators that run in int8 on the CPU are quantised (convolutions with their ReLU, the final Gemm,
max-pools and concatenations); the LRN chain and the output's sigmoid + affine map stay float, which
both keeps the vectors close to fp32 and avoids float↔int8 round trips inside them.

The result is checked on held-out images (never the calibration ones): cosine between int8 and fp32
output vectors, raw and centred (the training-set mean removed, as image search compares them). A model
whose mean raw cosine is under ``min_cosine`` is deleted and not published; fp32 is always published.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from onnxruntime.quantization import CalibrationDataReader

from space.errors import SpaceError
from space.images import load_for_network
from space.ort import CPU, INPUT_NAME, OUTPUT_NAME, open_session

log = logging.getLogger(__name__)
# Operators MLAS runs in int8 on the CPU; everything else stays float between DequantizeLinear/Quantize.
QUANT_OPS = ("Conv", "Relu", "Gemm", "MaxPool", "Concat")
# ONNX Runtime would move the QuantizeLinear after the stem above its float max-pools (they commute), which
# turns them into its slow NCHW uint8 max-pool (about 10 ms of a 40 ms forward): serving disables that pass.
DISABLED_OPTIMIZERS = ("QDQPropagationTransformer",)
# Feeding the quantised graph's operators from these keeps a max-pool in the NHWC int8 path.
_INT8_PRODUCERS = frozenset({"Conv", "Relu", "Concat"})


@dataclass(frozen=True)
class QuantizeConfig:
    """How the int8 encoder is calibrated, checked and timed."""

    calibration_images: int = 100
    check_images: int = 200
    min_cosine: float = 0.99  # mean raw cosine int8 vs fp32 on the held-out images, or no int8 encoder
    batch_size: int = 16
    speed_seconds: float = 1.5  # per timing window (two rounds, interleaved); 0 skips the speed check
    threads: int | None = None  # ONNX Runtime intra-op threads for the checks; None: every core

    @classmethod
    def quick_preset(cls) -> QuantizeConfig:
        """Small calibration and check sets, no timing (tests, ``--quick``)."""
        return cls(calibration_images=24, check_images=48, speed_seconds=0.0)


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise cosine similarity of two (N, D) arrays."""
    num = np.sum(a * b, axis=1)
    den = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    return np.asarray(num / np.maximum(den, 1e-12), dtype=np.float64)


def run_batches(sess: Any, x: np.ndarray, batch_size: int) -> np.ndarray:
    """The encoder's (N, D) output for (N, 3, 224, 224) inputs, ``batch_size`` at a time."""
    out = [sess.run([OUTPUT_NAME], {INPUT_NAME: x[i:i + batch_size]})[0]
           for i in range(0, len(x), batch_size)]
    return np.concatenate(out).astype(np.float32)


def load_inputs(images: Sequence[Path], framing: str = "centre") -> np.ndarray:
    """Network inputs of ``images`` (unreadable ones are skipped)."""
    rows = []
    for path in images:
        try:
            rows.append(load_for_network(path, framing))
        except SpaceError as exc:
            log.warning("skipping %s for quantisation: %s", path, exc)
    if not rows:
        return np.zeros((0, 3, 224, 224), np.float32)
    return np.stack(rows).astype(np.float32)


def _is_lrn_window(node: Any) -> bool:
    """The 3-D average pool over channels that :mod:`train.image.export` writes for each LRN."""
    return node.op_type == "AveragePool" and any(
        a.name == "kernel_shape" and len(a.ints) == 3 for a in node.attribute)


def float_nodes(model: Any) -> list[str]:
    """Nodes to keep float: everything up to the last LRN, and max-pools not fed by int8 work.

    Before the last LRN (GoogLeNet's stem) int8 buys little (the first convolution has 3 input
    channels) and every float↔int8 switch lands a max-pool in ONNX Runtime's slow NCHW uint8 kernel;
    kept float, the stem stays in the fast NCHWc layout.
    """
    nodes = list(model.graph.node)  # ONNX graphs are topologically sorted
    producer = {out: node for node in nodes for out in node.output}
    keep: set[str] = set()
    todo = [n for n in nodes if _is_lrn_window(n)]
    while todo:
        node = todo.pop()
        if node.name in keep:
            continue
        keep.add(node.name)
        todo.extend(producer[i] for i in node.input if i in producer)
    int8_pools: set[str] = set()
    for node in nodes:
        if node.op_type != "MaxPool" or node.name in keep:
            continue
        src = producer.get(node.input[0])
        if src is not None and src.name not in keep and (
                src.op_type in _INT8_PRODUCERS or src.name in int8_pools):
            int8_pools.add(node.name)
        else:
            keep.add(node.name)
    return [n.name for n in nodes if n.name in keep and n.op_type in QUANT_OPS]


class _Calibration(CalibrationDataReader):
    """Feeds calibration batches to ``quantize_static``."""

    def __init__(self, x: np.ndarray, batch_size: int) -> None:
        self._batches: Iterator[dict[str, np.ndarray]] = iter(
            [{INPUT_NAME: x[i:i + batch_size]} for i in range(0, len(x), batch_size)])

    def get_next(self) -> dict[str, np.ndarray] | None:
        """The next batch, or None when calibration is over."""
        return next(self._batches, None)


def quantize_file(fp32_path: Path, out_path: Path, calibration: np.ndarray, batch_size: int = 16) -> None:
    """Write the int8 QDQ model of ``fp32_path`` calibrated on ``calibration`` (N, 3, 224, 224)."""
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    reader = _Calibration(calibration, batch_size)
    # No quant_pre_process: on this graph it changed neither the quantised model's optimised form nor its
    # fidelity, and its symbolic shape inference took 6-13 s.
    exclude = float_nodes(onnx.load(str(fp32_path)))
    quantize_static(
        str(fp32_path), str(out_path), reader, quant_format=QuantFormat.QDQ, per_channel=True,
        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
        calibrate_method=CalibrationMethod.MinMax, op_types_to_quantize=list(QUANT_OPS),
        nodes_to_exclude=exclude, calibration_providers=[CPU],
    )


def fidelity(fp32: Any, int8: Any, x: np.ndarray, batch_size: int) -> dict[str, Any]:
    """Cosine of int8 vs fp32 output vectors on ``x``: raw and centred (mean/min), and the worst row."""
    ref = run_batches(fp32, x, batch_size)
    got = run_batches(int8, x, batch_size)
    raw = cosines(got, ref)
    mean = ref.mean(axis=0)
    centred = cosines(got - mean, ref - mean)
    return {"n_images": len(x), "mean_cosine": round(float(raw.mean()), 5),
            "min_cosine": round(float(raw.min()), 5),
            "centred_mean_cosine": round(float(centred.mean()), 5),
            "centred_min_cosine": round(float(centred.min()), 5)}


def _rate(sess: Any, x: np.ndarray, seconds: float) -> float:
    """Images per second of ``sess`` on batch ``x`` (one warm-up call, then at least ``seconds``)."""
    sess.run([OUTPUT_NAME], {INPUT_NAME: x})
    done, t0 = 0, time.perf_counter()
    while True:
        sess.run([OUTPUT_NAME], {INPUT_NAME: x})
        done += len(x)
        if time.perf_counter() - t0 >= seconds:
            return done / (time.perf_counter() - t0)


def speed(fp32: Any, int8: Any, x: np.ndarray, seconds: float, rounds: int = 2) -> dict[str, Any]:
    """img/s of fp32 and int8 at batch 1 and 32, interleaved in one run (medians of ``rounds``)."""
    out: dict[str, Any] = {}
    for batch in (1, 32):
        xb = np.concatenate([x] * (batch // max(len(x), 1) + 1))[:batch]
        rates: dict[str, list[float]] = {"fp32": [], "int8": []}
        for _ in range(rounds):  # interleaved, so a busy neighbour slows both alike
            rates["fp32"].append(_rate(fp32, xb, seconds))
            rates["int8"].append(_rate(int8, xb, seconds))
        f, q = float(np.median(rates["fp32"])), float(np.median(rates["int8"]))
        out[f"b{batch}"] = {"fp32_img_s": round(f, 2), "int8_img_s": round(q, 2),
                            "int8_over_fp32": round(q / f, 2)}
    return out


def quantize_encoder(fp32_path: Path, out_path: Path, calibration_images: Sequence[Path],
                     check_images: Sequence[Path], cfg: QuantizeConfig = QuantizeConfig(),
                     framing: str = "centre") -> dict[str, Any]:
    """Write ``out_path`` (int8) from ``fp32_path`` if faithful enough; return what was measured.

    The photos are framed as the bundle frames them (``framing``: space.images.FRAMINGS).

    The report holds ``published`` (False with a ``reason`` when refused), the calibration and check
    set sizes, the fidelity figures and, unless ``cfg.speed_seconds`` is 0, the interleaved speed.
    """
    started = time.perf_counter()
    out_path = Path(out_path)
    out_path.unlink(missing_ok=True)
    report: dict[str, Any] = {"published": False, "file": None, "config": asdict(cfg),
                              "disabled_optimizers": list(DISABLED_OPTIMIZERS)}
    check_set = set(map(str, check_images))
    calib = load_inputs([p for p in calibration_images if str(p) not in check_set][:cfg.calibration_images],
                        framing)
    check = load_inputs(list(check_images)[:cfg.check_images], framing)
    report["calibration_images"], report["check_images"] = len(calib), len(check)
    if len(calib) == 0 or len(check) == 0:
        report["reason"] = "no readable calibration or check images"
        log.warning("no int8 encoder: %s", report["reason"])
        return report
    tmp = out_path.with_name(out_path.name + ".partial")
    try:
        quantize_file(fp32_path, tmp, calib, cfg.batch_size)
        fp32, int8 = open_session(fp32_path, cfg.threads), open_session(tmp, cfg.threads, DISABLED_OPTIMIZERS)
        report["fidelity"] = fid = fidelity(fp32, int8, check, cfg.batch_size)
        if not fid["mean_cosine"] >= cfg.min_cosine:  # also catches NaN
            report["reason"] = (f"mean cosine int8 vs fp32 {fid['mean_cosine']:.4f} < {cfg.min_cosine} on "
                                f"{len(check)} held-out images")
            log.warning("no int8 encoder: %s; the fp32 encoder is published alone", report["reason"])
            return report
        if cfg.speed_seconds > 0:
            report["speed"] = speed(fp32, int8, check[:32], cfg.speed_seconds)
        os.replace(tmp, out_path)
    finally:
        tmp.unlink(missing_ok=True)
    report["published"], report["file"] = True, out_path.name
    report["seconds"] = round(time.perf_counter() - started, 1)
    log.info("int8 encoder %s: mean cosine %.4f (min %.4f, centred %.4f) on %d held-out images, %s",
             out_path.name, fid["mean_cosine"], fid["min_cosine"], fid["centred_mean_cosine"], len(check),
             report.get("speed", "speed not measured"))
    return report
