"""Inference without PyTorch: an exported OpenVINO IR (``model.xml`` + ``model.bin``) in OpenVINO's CPU runtime.

::

    from dfine.runtime.openvino import OpenVinoDetector

    detector = OpenVinoDetector("dfine-s.xml")  # the .bin beside it holds the weights
    for det in detector.predict(["street.jpg"], threshold=0.5):
        print(det["labels"], det["names"], det["scores"], det["boxes"])  # boxes: absolute x1, y1, x2, y2

The IR has the inputs and outputs of the ONNX export (:mod:`dfine.export.openvino` converts that graph with
OpenVINO's own converter), so everything but running it is :class:`~dfine.runtime.detector.ExportedDetector`'s.
The dfine metadata is in the IR's ``rt_info`` under ``dfine`` (an IR that a user converted from a dfine ``.onnx``
with ``ovc`` carries it under ``framework``, which is read too).

Precision is a runtime choice in OpenVINO (``INFERENCE_PRECISION_HINT``): the export records the one it verified
against PyTorch (``inference_precision``), and this module compiles with it when the CPU supports it. ``bf16`` needs
AVX-512 BF16 or AMX, ``f16`` AVX512-FP16 or AMX-FP16 (OpenVINO lists them in the CPU's
``OPTIMIZATION_CAPABILITIES``). Needs ``openvino`` (``pip install "dfine[openvino]"``), NumPy and Pillow; no PyTorch.
"""

from __future__ import annotations

import logging
import numbers
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from dfine.errors import ConfigError, DFineError, InputFileError
from dfine.runtime.detector import ExportedDetector

__all__ = ["INSTALL", "PRECISIONS", "OpenVinoDetector", "check_ir_files", "core", "default_precision",
           "openvino_device", "openvino_error", "read_ir", "supported_precisions"]

logger = logging.getLogger("dfine")

INSTALL = 'pip install "dfine[openvino]"'

#: inference precisions by their OpenVINO names, with the CPU capability each needs (None: every CPU)
PRECISIONS: dict[str, str | None] = {"f32": None, "bf16": "BF16", "f16": "FP16"}

_CORE: list[Any] = []  # one ov.Core per process: creating one loads the plugins


def core() -> Any:
    """The process's ``openvino.Core``; a one-line DFineError saying how to install OpenVINO when it is missing."""
    if not _CORE:
        try:
            import openvino
        except ImportError:
            raise DFineError(f"running an OpenVINO IR needs openvino, which is not installed: {INSTALL}") from None
        _CORE.append(openvino.Core())
    return _CORE[0]


def openvino_device(device: str) -> str:
    """The OpenVINO device for ``--device``: the CPU (``auto`` or ``cpu``); anything else is a one-line error."""
    text = str(device).strip().lower()
    if text in ("auto", "cpu"):
        return "CPU"
    raise DFineError(f"the openvino backend runs on the CPU: use --device cpu or auto, not {device!r}")


def supported_precisions(device: str = "CPU") -> list[str]:
    """The inference precisions ``device`` runs natively, f32 first (from its ``OPTIMIZATION_CAPABILITIES``)."""
    capabilities = set(core().get_property(device, "OPTIMIZATION_CAPABILITIES"))
    return [name for name, needs in PRECISIONS.items() if needs is None or needs in capabilities]


def default_precision(device: str = "CPU") -> str:
    """The inference precision OpenVINO picks for ``device`` when not told (bf16 on CPUs with AVX-512 BF16 or AMX),
    by its name in :data:`PRECISIONS`."""
    name = core().get_property(device, "INFERENCE_PRECISION_HINT").get_type_name()  # an ov.Type: "bf16"
    return name if name in PRECISIONS else "f32"


def openvino_error(error: BaseException) -> str:
    """The informative line of an OpenVINO exception, without its "Exception from src/...cpp" and "Check ...
    failed at ..." location lines."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    useful = [line for line in lines if not line.startswith(("Exception from ", "Check '"))]
    return (useful or lines or [type(error).__name__])[-1]


def check_ir_files(path: str | Path) -> tuple[Path, Path]:
    """The ``.xml`` and the ``.bin`` beside it, or a one-line InputFileError naming the file at fault: missing, a
    folder, empty, not an IR, or an IR without its weights file."""
    xml = Path(path)
    if xml.is_dir():
        raise InputFileError(xml, "is a folder, not an OpenVINO .xml file")
    if not xml.is_file():
        raise InputFileError(xml, "no such OpenVINO IR file")
    if xml.stat().st_size == 0:
        raise InputFileError(xml, "empty file, not an OpenVINO IR")
    with open(xml, "rb") as handle:
        head = handle.read(4096)
    if b"<net " not in head:
        raise InputFileError(xml, "not an OpenVINO IR (no <net> element at its start)")
    weights = xml.with_suffix(".bin")
    if not weights.is_file():
        raise InputFileError(weights, f"missing: an OpenVINO IR keeps its weights in a .bin beside the .xml "
                                      f"({xml.name})")
    return xml, weights


def read_ir(path: str | Path) -> Any:
    """The ``openvino.Model`` of an IR, with one-line errors naming the file (a truncated or damaged .xml or .bin)."""
    xml, weights = check_ir_files(path)
    ov_core = core()
    try:
        return ov_core.read_model(str(xml), str(weights))
    except RuntimeError as error:
        reason = openvino_error(error)
        named = weights if "bin file" in reason or "weights" in reason.lower() else xml
        raise InputFileError(named, f"cannot be read by OpenVINO ({reason})") from None


def ir_metadata(model: Any) -> dict[str, str]:
    """The dfine metadata of an IR: its ``rt_info`` section ``dfine`` (written by dfine export), else
    ``framework`` (the ONNX metadata, as OpenVINO's converter carries it over), else nothing."""
    info = model.get_rt_info()
    sections = set(info.keys())  # an RTMap: no `in`
    for section in ("dfine", "framework"):
        if section in sections:
            values = info[section]
            if isinstance(values, Mapping):
                return {str(k): str(v.astype(str)) if hasattr(v, "astype") else str(v) for k, v in values.items()}
    return {}


def _check_threads(threads: Any) -> int | None:
    if threads is not None and (not isinstance(threads, numbers.Integral) or isinstance(threads, bool)
                                or threads < 0):
        raise ConfigError(f"threads must be an integer >= 1 (0 or None: OpenVINO's choice), got {threads!r}")
    return int(threads) if threads else None


class OpenVinoDetector(ExportedDetector):
    """An exported D-FINE model (OpenVINO IR) in OpenVINO's runtime, used like :class:`dfine.Predictor` (see
    :class:`~dfine.runtime.detector.ExportedDetector` for ``run`` and ``predict``).

    Args:
        path: the ``.xml`` written by ``dfine export --format openvino`` (its ``.bin`` beside it).
        device: ``auto`` or ``cpu``.
        threads: inference threads (default: OpenVINO's choice, one per physical core).
        precision: ``f32``, ``bf16`` or ``f16`` (default: the precision the export verified, when this CPU runs it
            natively, else ``f32``).
    """

    def __init__(self, path: str | Path, device: str = "auto", threads: int | None = None,
                 precision: str | None = None) -> None:
        self.path = Path(path)
        self.device = openvino_device(device)
        threads = _check_threads(threads)
        if precision is not None and precision not in PRECISIONS:
            raise ConfigError(f"unknown OpenVINO precision {precision!r}: use {', '.join(PRECISIONS)}")
        model = read_ir(self.path)
        inputs = {name for port in model.inputs for name in port.get_names()}
        outputs = {name for port in model.outputs for name in port.get_names()}
        if not {"images", "orig_target_sizes"} <= inputs or not {"labels", "boxes", "scores"} <= outputs:
            raise InputFileError(self.path, f"not a dfine export: inputs are {sorted(inputs)} and outputs "
                                            f"{sorted(outputs)}, expected images and orig_target_sizes -> labels, "
                                            "boxes and scores")
        meta = ir_metadata(model)
        shape = model.input("images").get_partial_shape()
        self._read_metadata(meta, [d.get_length() if d.is_static else str(d) for d in shape], outputs)
        self.inference_precision = self._choose_precision(precision, meta.get("inference_precision"))
        config: dict[str, Any] = {"INFERENCE_PRECISION_HINT": self.inference_precision, "PERFORMANCE_HINT": "LATENCY"}
        if threads:
            config["INFERENCE_NUM_THREADS"] = threads
        try:
            self.compiled = core().compile_model(model, self.device, config)
        except RuntimeError as error:
            raise InputFileError(self.path, f"cannot be compiled by OpenVINO ({openvino_error(error)})") from None
        self.request = self.compiled.create_infer_request()
        self._outputs = [self.compiled.output(name) for name in self.graph_outputs]

    def _choose_precision(self, asked: str | None, recorded: str | None) -> str:
        """``asked`` when the CPU runs it (else a one-line error), else what the export recorded when the CPU runs
        it, else f32 (an IR made on a CPU with bf16 and run on one without)."""
        supported = supported_precisions(self.device)
        if asked is not None:
            if asked not in supported:
                raise DFineError(f"this CPU does not run OpenVINO in {asked} (it supports {', '.join(supported)}; "
                                 f"{asked} needs the {PRECISIONS[asked]} capability)")
            return asked
        if recorded in PRECISIONS and recorded not in supported:
            logger.warning("%s was exported for %s inference, which this CPU does not support: running in f32",
                           self.path, recorded)
        return recorded if recorded in supported else "f32"

    @property
    def description(self) -> str:
        """The runtime and precision, as ``dfine benchmark`` prints them: ``OpenVINO CPU, bf16``."""
        text = f"OpenVINO {self.device}, {self.inference_precision}"
        return text.replace(", ", ", int8 with ", 1) if self.precision == "int8" else text

    def _run_once(self, images: np.ndarray, sizes_wh: np.ndarray) -> tuple[np.ndarray, ...]:
        results = self.request.infer({"images": images, "orig_target_sizes": sizes_wh})
        labels, *others = (results[port] for port in self._outputs)
        return labels.astype(np.int64, copy=False), *others
