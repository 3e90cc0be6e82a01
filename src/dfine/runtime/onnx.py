"""Inference without PyTorch: an exported ``.onnx`` model in ONNX Runtime, with NumPy and Pillow only.

::

    from dfine.runtime.onnx import OnnxDetector

    detector = OnnxDetector("dfine-s.onnx")
    for det in detector.predict(["street.jpg"], threshold=0.5):
        print(det["labels"], det["names"], det["scores"], det["boxes"])  # boxes: absolute x1, y1, x2, y2

Preprocessing is identical to :class:`dfine.DFineImageProcessor` for pictures and 8-bit data (the same PIL bilinear
stretch resize, the same float32 values of v/255), so detections equal those of the PyTorch model within the
export's tolerance. The graph's ``orig_target_sizes`` input is (width, height) per image, as in the original D-FINE
tools (see :mod:`dfine.export.postprocess`); this module builds it from the pictures.

This module must stay importable without PyTorch (``import dfine`` is lazy; :mod:`dfine.imaging` and
:mod:`dfine.utils.checks` are torch-free): it reads pictures, arrays and paths with :mod:`dfine.imaging.inputs`, the
functions :class:`dfine.Predictor` uses.
"""

from __future__ import annotations

import numbers
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from dfine.errors import ConfigError, DFineError, InputFileError, first_line
from dfine.runtime.detector import RESAMPLE_NAMES, ExportedDetector, preprocess

# preprocess and RESAMPLE_NAMES live in dfine.runtime.detector (every runtime shares them); named here too, where
# they were first
__all__ = ["RESAMPLE_NAMES", "OnnxDetector", "create_session", "preprocess", "providers_for_device"]


def providers_for_device(device: str) -> list[Any] | None:
    """The ONNX Runtime execution providers ``--device`` asks for: None (CUDA when there, else the CPU) for auto.

    ONNX Runtime itself falls back to the CPU without a word when a provider it is given is not installed, so a
    ``--device cuda`` that cannot be honoured is refused here instead of running elsewhere.
    """
    text = str(device).strip().lower()
    if text == "auto":
        return None
    if text == "cpu":
        return ["CPUExecutionProvider"]
    match = re.fullmatch(r"cuda(?::(\d+))?", text)
    if match is None:
        raise DFineError(f"unknown device {device!r} for the onnxruntime backend: use auto, cpu, cuda or cuda:N")
    try:
        import onnxruntime as ort
    except ImportError:  # OnnxDetector says how to install it
        return None
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        raise DFineError(f"--device {device} was asked for, but ONNX Runtime has no CUDAExecutionProvider here "
                         "(pip install onnxruntime-gpu, or leave --device out)")
    return [("CUDAExecutionProvider", {"device_id": int(match[1] or 0)}), "CPUExecutionProvider"]


def check_onnx_file(path: Path) -> None:
    """Raise a one-line InputFileError when ``path`` cannot be an ONNX model: missing, a folder, or empty (ONNX
    Runtime reports an empty file as "No graph was found in the protobuf", and onnx.load reads it as a model
    without a graph)."""
    if path.is_dir():
        raise InputFileError(path, "is a folder, not an .onnx file")
    if not path.is_file():
        raise InputFileError(path, "no such ONNX file")
    if path.stat().st_size == 0:
        raise InputFileError(path, "empty file, not an ONNX model")


def _known_providers(providers: Sequence[Any] | str, known: Sequence[str], available: Sequence[str]) -> list[Any]:
    """``providers`` (names, or (name, options) pairs) as a list; a ConfigError for a name ONNX Runtime does not
    know (misspelt) or a list none of which is available here. ONNX Runtime would fall back to the CPU with only a
    banner on stderr, running elsewhere than asked; a plain string would be read as a list of its letters. A list
    with some unavailable entries (CUDA, then CPU) is the usual portable choice and stays allowed."""
    listed = [providers] if isinstance(providers, str) else list(providers)
    names = [provider[0] if isinstance(provider, tuple | list) else provider for provider in listed]
    unknown = next((name for name in names if name not in known), None)
    if unknown is not None:
        raise ConfigError(f"{unknown!r} is not an ONNX Runtime execution provider (available here: "
                          f"{', '.join(available)})")
    if names and not any(name in available for name in names):
        raise ConfigError(f"none of the execution providers {', '.join(names)} is available in this ONNX Runtime "
                          f"(available: {', '.join(available)})")
    return listed


def create_session(path: str | Path, providers: Sequence[str] | None = None, threads: int | None = None) -> Any:
    """An ``onnxruntime.InferenceSession`` with full graph optimisation.

    Args:
        path: the ``.onnx`` file.
        providers: execution providers in order of preference (default: CUDA if available, then CPU).
        threads: intra-op threads (default: ONNX Runtime's choice, one per physical core).
    """
    try:
        import onnxruntime as ort
    except ImportError:
        raise DFineError("onnxruntime is not installed: pip install onnxruntime (or onnxruntime-gpu)") from None
    path = Path(path)
    check_onnx_file(path)
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.log_severity_level = 3  # no warnings about initialisers or unused providers
    if threads is not None and (not isinstance(threads, numbers.Integral) or isinstance(threads, bool)
                                or threads < 0):
        raise ConfigError(f"threads must be an integer >= 1 (0 or None: ONNX Runtime's choice), got {threads!r}")
    if threads:
        options.intra_op_num_threads = int(threads)
        options.inter_op_num_threads = 1
    available = ort.get_available_providers()
    if providers is None:
        providers = [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in available]
    providers = _known_providers(providers, ort.get_all_providers(), available)
    try:
        return ort.InferenceSession(str(path), sess_options=options, providers=list(providers))
    except Exception as error:  # noqa: BLE001 -- invalid protobuf, unsupported op, ...
        raise InputFileError(path, f"cannot be loaded by ONNX Runtime ({first_line(error)})") from None


class OnnxDetector(ExportedDetector):
    """An exported D-FINE model in ONNX Runtime, used like :class:`dfine.Predictor` (see
    :class:`~dfine.runtime.detector.ExportedDetector` for ``run`` and ``predict``).

    Args:
        path: the ``.onnx`` file written by ``dfine export --format onnx``.
        providers: ONNX Runtime execution providers (default: CUDA if available, then CPU).
        threads: intra-op threads (default: ONNX Runtime's choice).
    """

    def __init__(self, path: str | Path, providers: Sequence[str] | None = None, threads: int | None = None) -> None:
        self.path = Path(path)
        self.session = create_session(self.path, providers, threads)
        inputs = {i.name: i for i in self.session.get_inputs()}
        if set(inputs) != {"images", "orig_target_sizes"}:
            raise InputFileError(self.path, f"not a dfine export: inputs are {sorted(inputs)}, expected images and "
                                            "orig_target_sizes")
        self._read_metadata(self.session.get_modelmeta().custom_metadata_map, inputs["images"].shape,
                            [o.name for o in self.session.get_outputs()])

    def _run_once(self, images: np.ndarray, sizes_wh: np.ndarray) -> tuple[np.ndarray, ...]:
        return tuple(self.session.run(self.graph_outputs, {"images": images, "orig_target_sizes": sizes_wh}))
