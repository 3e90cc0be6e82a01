"""Running exported models without PyTorch: ONNX Runtime (:mod:`~dfine.runtime.onnx`), NumPy and Pillow only."""

from dfine.runtime.onnx import OnnxDetector

__all__ = ["OnnxDetector"]
