"""Opening ONNX Runtime sessions, and the names of the bundle encoder's input and output.

One opener for every session the project runs (the trainer's parity check, trunk cache, quantisation
check and encoding; the engine's encoder can use it too), so the session settings live in one place.
No torch here, and ``onnxruntime`` (an engine and trainer dependency, not one of the core's) is imported
only when a session is opened.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

# The bundle encoder's graph (``image_encoder.onnx``): float32 (B, 3, 224, 224) network inputs in,
# float32 (B, D) word-space vectors out.
INPUT_NAME = "images"
OUTPUT_NAME = "vectors"

CPU = "CPUExecutionProvider"
CUDA = "CUDAExecutionProvider"

# An ONNX Runtime execution provider: its name, or (name, provider options).
Provider = str | tuple[str, dict[str, Any]]


def open_session(
    path: Path,
    threads: int | None = None,
    disabled: Sequence[str] = (),
    *,
    providers: Sequence[Provider] = (CPU,),
    spin: bool = True,
    inter_threads: int | None = None,
) -> Any:
    """An ONNX Runtime session of ``path`` with every graph optimisation on except the ``disabled`` ones.

    ``threads``: intra-op threads (None: every core). ``spin=False`` stops idle intra-op threads from
    busy-waiting (worth it when other threads share the cores). ``inter_threads``: inter-op threads
    (None: ONNX Runtime's default).
    """
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.intra_op_num_threads = threads or os.cpu_count() or 1
    if inter_threads is not None:
        opts.inter_op_num_threads = inter_threads
    if not spin:
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(str(path), opts, providers=list(providers),
                                disabled_optimizers=list(disabled) or None)
