"""Deployment: the deploy form, ONNX and TensorRT export, the GPU fast path and benchmarking.

Importing this package is cheap and does not import PyTorch; the submodules do:

* :mod:`dfine.export.deploy` — ``deploy(model)``: batch norm folded, RepVGG merged, buffers precomputed;
* :mod:`dfine.export.onnx` — ``export_onnx(...)`` with post-processing inside and an ONNX Runtime check;
* :mod:`dfine.export.tensorrt` — ``build_engine(...)`` through the TensorRT Python API;
* :mod:`dfine.export.fast` — ``optimize_for_inference(...)``: fp16/bf16, channels-last, torch.compile, CUDA graphs;
* :mod:`dfine.export.benchmark` — latency, throughput, parameters and FLOPs.

The onnxruntime-only runtime (no PyTorch) is :mod:`dfine.runtime`.
"""
