"""Export for other runtimes: the table of formats that the command line and the predictor dispatch on
(:mod:`~dfine.export.formats`), ONNX with post-processing inside (:mod:`~dfine.export.onnx`), TensorRT engines
(:mod:`~dfine.export.tensorrt`), their check against PyTorch (:mod:`~dfine.export.verify`), what ``dfine info``
says about an exported file (:mod:`~dfine.export.describe`) and benchmarking (:mod:`~dfine.export.benchmark`).

Importing this package, :mod:`~dfine.export.formats` or :mod:`~dfine.export.describe` is cheap and does not import
PyTorch; the other submodules do. The deploy form these start from is :mod:`dfine.model.deploy`; the torch-free
runtime is :mod:`dfine.runtime`.
"""
