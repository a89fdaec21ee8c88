#!/usr/bin/env bash
# Switch this environment's ONNX Runtime to the CUDA build (the `gpu` extra) or back to the CPU one.
#
# onnxruntime and onnxruntime-gpu install the same `onnxruntime` module, so one must replace the other
# (installing the extra beside the CPU wheel leaves whichever was installed last, half overwritten).
# The versions are the locks': onnxruntime's in requirements.lock, onnxruntime-gpu's in
# requirements-gpu.lock (PyPI's CUDA builds lag the CPU ones). The CUDA and cuDNN libraries the GPU build
# loads come from the machine (or the CUDA base image); see README "Training a bundle" for a GPU.
# Usage: bash scripts/use_gpu_runtime.sh          (to the GPU build)
#        bash scripts/use_gpu_runtime.sh --cpu    (back to the CPU build)
#        DRY_RUN=1 bash scripts/use_gpu_runtime.sh   (print the pip commands only)
set -euo pipefail
cd "$(dirname "$0")/.."
if [[ -x .venv/bin/python ]]; then PY=.venv/bin/python; else PY=python3; fi
run() { if [[ -n "${DRY_RUN:-}" ]]; then echo "$*"; else "$@"; fi; }

case "${1:-}" in
  --cpu) remove=onnxruntime-gpu; pin="$(grep -E '^onnxruntime==' requirements.lock)" ;;
  "") remove=onnxruntime; pin="$(grep -E '^onnxruntime-gpu==' requirements-gpu.lock)" ;;
  *) echo "usage: bash scripts/use_gpu_runtime.sh [--cpu]" >&2; exit 2 ;;
esac
run "$PY" -m pip uninstall -y -q "$remove"
# --no-deps: its dependencies (numpy, protobuf, flatbuffers, sympy, packaging) are the lock's already.
run "$PY" -m pip install -q --no-deps "$pin"
run "$PY" -c "import onnxruntime as o; print('onnxruntime', o.__version__, o.get_available_providers())"
