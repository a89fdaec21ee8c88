"""The network behind one call: uint8 views in, float32 vectors out, on ONNX Runtime (CPU or CUDA) or torch.

Both take the uint8 RGB views :mod:`train.image.decode` cuts and make the network input themselves —
ONNX Runtime on the CPU with numpy, torch on its device — so a GPU receives a quarter of the bytes a
float32 batch would need. Which runtime ``auto`` picks: torch when it sees a CUDA device (PyPI's torch
wheel carries CUDA; ONNX Runtime's CUDA provider needs the ``gpu`` extra swapped in by hand), else ONNX
Runtime on the CPU (about 3× torch eager there, docs/benchmarks.md "Image encoder").
``scripts/gpu_check.py`` measures both on a GPU.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from space.errors import SpaceError
from space.images import MEAN_BGR
from space.ort import CPU, CUDA, INPUT_NAME, OUTPUT_NAME, Provider, open_session
from train.image.decode import network_batch

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)


class EncoderUnavailable(SpaceError):
    """The requested ONNX Runtime device is not available in this installation."""

    code = "encoder_unavailable"
    status = 500


def encoder_session(onnx_path: Path, threads: int | None = None, device: str = "auto",
                    device_id: int = 0, spin: bool = True) -> tuple[Any, str]:
    """An ONNX Runtime session on CUDA (when asked for or available) or the CPU, and the provider used."""
    import onnxruntime as ort

    available = ort.get_available_providers()
    if device != "cpu" and CUDA in available and hasattr(ort, "preload_dlls"):
        # onnxruntime-gpu finds CUDA and cuDNN in the nvidia-* wheels torch already installed.
        ort.preload_dlls()
    if device not in ("auto", "cpu", "cuda"):
        raise ValueError(f"device must be auto, cpu or cuda, not {device!r}")
    if device == "cuda" and CUDA not in available:
        raise EncoderUnavailable("CUDA encoding needs the onnxruntime-gpu package (pip install '.[gpu]').")
    providers: list[Provider] = [CPU]
    if device != "cpu" and CUDA in available:
        providers = [(CUDA, {"device_id": device_id}), CPU]
    session = open_session(onnx_path, threads, providers=providers, spin=spin)
    # onnxruntime-gpu without a usable GPU (no driver, no device) silently falls back to the CPU.
    used = session.get_providers()[0]
    if device == "cuda" and used != CUDA:
        raise EncoderUnavailable("onnxruntime-gpu is installed but found no usable CUDA device.")
    return session, used

RUNTIMES = ("auto", "onnx", "torch")


class Encoder(Protocol):
    """uint8 RGB views (n, 224, 224, 3) → float32 vectors (n, D)."""

    provider: str

    def __call__(self, views: np.ndarray) -> np.ndarray:
        """The vectors of ``views``."""
        ...


class OrtEncoder:
    """An ONNX Runtime session (CPU, or CUDA with onnxruntime-gpu) over an exported encoder."""

    def __init__(self, onnx_path: Path, threads: int | None = None, device: str = "auto",
                 device_id: int = 0, spin: bool = False) -> None:
        self.session, self.provider = encoder_session(onnx_path, threads, device, device_id, spin)

    def __call__(self, views: np.ndarray) -> np.ndarray:
        """The vectors of ``views`` (converted to the network input on the CPU)."""
        out = self.session.run([OUTPUT_NAME], {INPUT_NAME: network_batch(views)})[0]
        return np.asarray(out, dtype=np.float32)


class TorchEncoder:
    """A torch module on a device (a GPU): the network input is made there from the uint8 views."""

    def __init__(self, module: torch.nn.Module, device: str | torch.device = "cuda",
                 half: bool = False) -> None:
        import torch

        self.torch = torch
        self.device = torch.device(device)
        self.module = module.to(self.device).eval()
        self.half = half and self.device.type == "cuda"
        self.mean = torch.tensor(MEAN_BGR, dtype=torch.float32, device=self.device)
        self.provider = f"torch:{self.device}" + (":fp16" if self.half else "")
        if self.device.type == "cuda":
            torch.backends.cudnn.benchmark = True  # fixed input shape: let cuDNN pick its fastest kernels

    def __call__(self, views: np.ndarray) -> np.ndarray:
        """The vectors of ``views``."""
        torch = self.torch
        with torch.inference_mode():
            t = torch.from_numpy(np.ascontiguousarray(views)).to(self.device, non_blocking=True)
            x = (t.flip(-1).float() - self.mean).permute(0, 3, 1, 2).contiguous()
            if self.half:
                with torch.autocast("cuda", dtype=torch.float16):
                    out = self.module(x)
            else:
                out = self.module(x)
            return np.asarray(out.float().cpu().numpy(), dtype=np.float32)


def cuda_available() -> bool:
    """Whether torch sees a CUDA device (False when torch is a CPU build)."""
    try:
        import torch
    except ImportError:
        return False
    return bool(torch.cuda.is_available())


def pick_runtime(runtime: str, device: str) -> str:
    """``onnx`` or ``torch`` for ``runtime`` (auto: torch on a CUDA device, else ONNX Runtime)."""
    if runtime not in RUNTIMES:
        raise ValueError(f"runtime must be one of {RUNTIMES}, not {runtime!r}")
    if runtime != "auto":
        return runtime
    return "torch" if device != "cpu" and cuda_available() else "onnx"


def open_encoder(runtime: str, *, onnx_path: Callable[[], Path], module: Callable[[], Any],
                 device: str = "auto", device_id: int = 0, threads: int | None = None,
                 half: bool = False) -> Encoder:
    """The encoder ``runtime`` names (see :func:`pick_runtime`); ``onnx_path``/``module`` build its model."""
    chosen = pick_runtime(runtime, device)
    if chosen == "torch":
        import torch

        dev = torch.device("cuda", device_id) if device != "cpu" and torch.cuda.is_available() else "cpu"
        if device == "cuda" and str(dev) == "cpu":
            raise EncoderUnavailable("--device cuda: torch sees no CUDA device")
        enc: Encoder = TorchEncoder(module(), dev, half=half)
    else:
        enc = OrtEncoder(onnx_path(), threads, device, device_id)
    log.info("encoding with %s", enc.provider)
    return enc
