"""Export for other runtimes: ONNX with post-processing inside (:mod:`~dfine.export.onnx`), TensorRT engines
(:mod:`~dfine.export.tensorrt`), their check against PyTorch (:mod:`~dfine.export.verify`) and benchmarking
(:mod:`~dfine.export.benchmark`).

Importing this package is cheap and does not import PyTorch; the submodules do. The deploy form these start from
is :mod:`dfine.model.deploy`; the torch-free runtime is :mod:`dfine.runtime`.
"""
