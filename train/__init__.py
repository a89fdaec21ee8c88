"""The trainer: corpus → filters → text space → image regressor → ONNX → indexes → evaluated bundle."""
