"""Export to ONNX/TensorRT with parity checks, re-measurement and reports."""
