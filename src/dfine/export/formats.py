"""The table of export formats: every place that dispatches on a format or an exported file's suffix reads it.

One :class:`ExportFormat` row per format says what ``dfine export --format NAME`` writes (suffix, exporter, the
output check made before the model loads), what runs the file for ``dfine predict`` / ``benchmark``
(``--backend``, the loader), how ``dfine info`` describes it, and what to install when it is missing. The CLI's
``--format`` and ``--backend`` choices, the suffix detection of ``--model`` and the error messages naming the known
formats all come from :data:`FORMATS`. Adding a format is one row here and one module doing its work (OpenVINO:
:mod:`dfine.export.openvino` and :mod:`dfine.runtime.openvino`).

This module imports neither PyTorch nor any runtime: the rows' functions import their module when called, so the
command line builds its options cheaply and an ``.onnx`` or OpenVINO ``.xml`` file still opens where PyTorch is not
installed (:mod:`dfine.runtime.onnx`, :mod:`dfine.runtime.openvino`).
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dfine.errors import ConfigError, DFineError, InputFileError

__all__ = ["FORMATS", "ExportFormat", "ExportOptions", "Opened", "Written", "backend_format", "exported_format",
           "format_named", "format_of", "known_suffixes", "open_exported", "require_packages"]


@dataclass(frozen=True)
class ExportOptions:
    """What an exporter is asked for; a format ignores what does not apply to it (``max_batch``: engines only)."""

    half: bool = False
    dynamic_batch: bool = False
    batch_size: int = 1
    max_batch: int = 32
    check: bool = True
    processor: Any = None  # the model's DFineImageProcessor, carried into the graph (None: the checkpoints')
    precision: str | None = None  # OpenVINO's inference precision, f32 / bf16 / f16 (None: the fastest verified)
    threads: int | None = None  # CPU threads of the runtimes that check or time the export (None: their choice)
    int8: Any = None  # an Int8Options (dfine.export.int8): quantize, calibrated on a data set (None: float)
    uncertainty: bool = False  # add the box uncertainty outputs (dfine.export.uncertainty): ONNX and OpenVINO


@dataclass(frozen=True)
class Written:
    """What an exporter wrote: the file, and the line ``dfine export`` prints after ``wrote``."""

    path: Path
    summary: str


@dataclass(frozen=True)
class Opened:
    """An exported file loaded in its runtime.

    ``model`` runs it: ``run(images (B, 3, H, W) float32 in [0, 1], sizes_wh (B, 2))`` -> ``(labels, boxes,
    scores)``, with ``batch`` (None: dynamic) and ``image_size`` (H, W) read from the file, and ``predict`` (as
    :meth:`dfine.Predictor.predict`) when its row says ``predicts``.
    """

    model: Any
    description: str  # the runtime and precision, for dfine benchmark: "ONNX Runtime CPUExecutionProvider, fp32"
    where: str  # the device it runs on: "cpu", "cuda:0"
    torch_device: str | None  # the PyTorch device whose memory and stream it uses, None when it runs outside PyTorch


@dataclass(frozen=True)
class ExportFormat:
    """One export format. The functions import their implementation when called (this table stays light)."""

    name: str  # dfine export --format NAME
    backend: str  # --backend of dfine predict / benchmark that runs such a file
    kind: str  # the file in a sentence: "an ONNX model"
    suffixes: tuple[str, ...]  # what identifies such a file, lower case; the first is what an export is named
    help: str  # --format help: what runs it
    python_api: str  # the class that runs such a file from Python, for messages
    built_from: str  # what to give a command that cannot take this file, for messages
    extra: str | None  # the dfine extra that installs what it needs (None: not installable through pip extras)
    install: str  # how to install what is missing, as the one-line error says it
    needs_gpu: bool  # runs on a CUDA GPU only (--device is not read)
    predicts: bool  # dfine predict runs it (its runtime object has predict)
    masks: bool  # a segmentation model exports to it with its masks output
    require_export: Callable[[], None]  # one-line DFineError when exporting it cannot work here (missing package)
    check_output: Callable[[Path], None]  # one-line error for an unusable output path, before the model loads
    export: Callable[[Any, Path, tuple[int, int], ExportOptions], Written]  # (model, output, (H, W), options)
    prepare: Callable[[str], Any]  # (--device) -> what open takes; checks the runtime and device before any work
    open: Callable[[Path, Any, int | None, str | None], Opened]  # (path, prepared, threads, precision if known)
    describe: Callable[[Path], list[str]] | None  # the lines of dfine info (None: it cannot be described)

    def __post_init__(self) -> None:
        if not self.suffixes or any(not s.startswith(".") or s != s.lower() for s in self.suffixes):
            raise ValueError(f"format {self.name}: suffixes must be lower case and start with a dot: {self.suffixes}")

    @property
    def suffix(self) -> str:
        """The suffix an export of this format gets."""
        return self.suffixes[0]


def _installed(package: str) -> bool:
    try:
        return importlib.util.find_spec(package) is not None
    except (ImportError, ValueError):  # ValueError: a module set to None in sys.modules, which cannot be imported
        return False


def require_packages(packages: Sequence[str], task: str, install: str) -> None:
    """A one-line DFineError naming the packages ``task`` needs that are not installed, and how to install them."""
    missing = [name for name in packages if not _installed(name)]
    if missing:
        verb = "is" if len(missing) == 1 else "are"
        raise DFineError(f"{task} needs {' and '.join(missing)}, which {verb} not installed: {install}")


# ------------------------------------------------------------------------------------------------------------ ONNX
_ONNX_INSTALL = 'pip install "dfine[onnx]"'


def _onnx_require_export() -> None:
    require_packages(("onnx", "onnxscript"), "exporting to ONNX", _ONNX_INSTALL)


def _onnx_check_output(output: Path) -> None:
    from dfine.export.onnx import check_onnx_output

    check_onnx_output(output)


def _onnx_export(model: Any, output: Path, size: tuple[int, int], options: ExportOptions) -> Written:
    from dfine.export.onnx import export_onnx

    if options.int8 is not None:
        from dfine.export.int8 import export_onnx_int8

        result = export_onnx_int8(model, output, size, options.int8, batch_size=options.batch_size,
                                  dynamic_batch=options.dynamic_batch, processor=options.processor,
                                  threads=options.threads)
        return Written(result.path, result.summary())

    result = export_onnx(model, output, size, dynamic_batch=options.dynamic_batch, half=options.half,
                         batch_size=options.batch_size, check=options.check, processor=options.processor,
                         uncertainty=options.uncertainty)
    return Written(result.path, result.summary())


def _onnx_prepare(device: str) -> Any:
    from dfine.runtime.onnx import providers_for_device

    providers = providers_for_device(device)  # ONNX Runtime would otherwise run wherever it can, whatever --device
    require_packages(("onnxruntime",), "running an .onnx file", f"{_ONNX_INSTALL} (or onnxruntime-gpu)")
    return providers


def _onnx_open(path: Path, providers: Any, threads: int | None = None, precision: str | None = None) -> Opened:
    from dfine.runtime.onnx import OnnxDetector

    detector = OnnxDetector(path, providers=providers, threads=threads)  # the precision is in the file's metadata
    provider = detector.session.get_providers()[0]
    where = "cpu"
    if provider == "CUDAExecutionProvider":
        options = detector.session.get_provider_options().get(provider, {})
        where = f"cuda:{options.get('device_id', 0)}"
    return Opened(detector, f"ONNX Runtime {provider}, {detector.precision}", where, None)


def _onnx_describe(path: Path) -> list[str]:
    from dfine.export.describe import describe_onnx

    require_packages(("onnx",), "describing an .onnx file", _ONNX_INSTALL)
    return describe_onnx(path)


# -------------------------------------------------------------------------------------------------------- OpenVINO
_OPENVINO_INSTALL = 'pip install "dfine[openvino]"'


def _openvino_require_export() -> None:
    # first: the rest of [onnx] may be there
    require_packages(("openvino",), "exporting to OpenVINO", _OPENVINO_INSTALL)
    _onnx_require_export()  # the IR is converted from the ONNX export


def _openvino_check_output(output: Path) -> None:
    from dfine.export.openvino import check_openvino_output

    check_openvino_output(output)


def _openvino_export(model: Any, output: Path, size: tuple[int, int], options: ExportOptions) -> Written:
    if options.int8 is not None:
        from dfine.export.int8 import export_openvino_int8

        result = export_openvino_int8(model, output, size, options.int8, precision=options.precision,
                                      batch_size=options.batch_size, dynamic_batch=options.dynamic_batch,
                                      processor=options.processor, threads=options.threads)
        return Written(result.path, result.summary())
    from dfine.export.openvino import export_openvino

    result = export_openvino(model, output, size, precision=options.precision, dynamic_batch=options.dynamic_batch,
                             batch_size=options.batch_size, check=options.check, processor=options.processor,
                             threads=options.threads, uncertainty=options.uncertainty)
    return Written(result.path, result.summary())


def _openvino_prepare(device: str) -> str:
    from dfine.runtime.openvino import openvino_device

    openvino_device(device)  # the CPU only: another --device is refused before any work
    require_packages(("openvino",), "running an OpenVINO IR", _OPENVINO_INSTALL)
    return device


def _openvino_open(path: Path, device: str, threads: int | None = None, precision: str | None = None) -> Opened:
    from dfine.runtime.openvino import PRECISIONS, OpenVinoDetector

    # the IR records the precision its export verified; an OpenVINO precision name asks for another
    detector = OpenVinoDetector(path, device, threads, precision if precision in PRECISIONS else None)
    return Opened(detector, detector.description, "cpu", None)


def _openvino_describe(path: Path) -> list[str]:
    from dfine.export.describe import describe_openvino

    require_packages(("openvino",), "describing an OpenVINO IR", _OPENVINO_INSTALL)
    return describe_openvino(path)


# -------------------------------------------------------------------------------------------------------- TensorRT
def _engine_require_export() -> None:
    from dfine.export.tensorrt import require_tensorrt

    require_tensorrt()  # first: without TensorRT nothing else matters
    _onnx_require_export()  # an engine is built from an ONNX export


def _engine_check_output(output: Path) -> None:
    from dfine.export.tensorrt import check_engine_output

    check_engine_output(output)


def _engine_export(model: Any, output: Path, size: tuple[int, int], options: ExportOptions) -> Written:
    from dfine.export.tensorrt import export_engine

    path = export_engine(model, output, size, half=options.half, dynamic_batch=options.dynamic_batch,
                         max_batch=options.max_batch, batch_size=options.batch_size, check=options.check,
                         processor=options.processor)
    return Written(path, f"{path} (and {path.with_suffix('.onnx')})")


def _engine_prepare(device: str) -> None:
    from dfine.export.tensorrt import require_tensorrt

    require_tensorrt()  # --device is not read: an engine runs on the CUDA GPU


def _engine_open(path: Path, prepared: None, threads: int | None = None, precision: str | None = None) -> Opened:
    from dfine.export.tensorrt import TensorRTRunner

    # the file does not say its precision (the graph beside it is fp32 whatever the engine: TensorRT makes the
    # fp16 engine itself), so only an engine built by the caller names one
    runner = TensorRTRunner(path)
    return Opened(runner, "TensorRT" + (f" {precision}" if precision else ""), "cuda", "cuda")


FORMATS: tuple[ExportFormat, ...] = (
    ExportFormat(
        name="onnx", backend="onnxruntime", kind="an ONNX model", suffixes=(".onnx",),
        help="ONNX Runtime, OpenVINO, TensorRT ...", python_api="dfine.runtime.onnx.OnnxDetector",
        built_from="the model it was exported from", extra="onnx", install=_ONNX_INSTALL, needs_gpu=False,
        predicts=True, masks=True, require_export=_onnx_require_export, check_output=_onnx_check_output,
        export=_onnx_export, prepare=_onnx_prepare, open=_onnx_open, describe=_onnx_describe),
    ExportFormat(
        name="openvino", backend="openvino", kind="an OpenVINO IR", suffixes=(".xml",),
        help="OpenVINO IR, .xml + .bin; fastest on Intel and AMD CPUs",
        python_api="dfine.runtime.openvino.OpenVinoDetector", built_from="the model it was exported from",
        extra="openvino", install=_OPENVINO_INSTALL, needs_gpu=False, predicts=True, masks=True,
        require_export=_openvino_require_export, check_output=_openvino_check_output, export=_openvino_export,
        prepare=_openvino_prepare, open=_openvino_open, describe=_openvino_describe),
    ExportFormat(
        name="engine", backend="tensorrt", kind="a TensorRT engine", suffixes=(".engine",),
        help="TensorRT, needs TensorRT and CUDA", python_api="dfine.export.tensorrt.TensorRTRunner",
        built_from="the .onnx it was built from", extra=None,
        install="pip install tensorrt, on a machine with an NVIDIA GPU", needs_gpu=True, predicts=False, masks=False,
        require_export=_engine_require_export, check_output=_engine_check_output, export=_engine_export,
        prepare=_engine_prepare, open=_engine_open, describe=None),
)


def _either(words: Sequence[str]) -> str:
    """``a``, ``a or b``, ``a, b or c``."""
    return words[0] if len(words) == 1 else f"{', '.join(words[:-1])} or {words[-1]}"


def known_suffixes() -> str:
    """The suffixes of exported files, for messages: ``.onnx, .engine``."""
    return ", ".join(suffix for row in FORMATS for suffix in row.suffixes)


def format_named(name: str) -> ExportFormat:
    """The row of ``--format NAME``; a ConfigError naming the known formats otherwise."""
    for row in FORMATS:
        if row.name == name:
            return row
    raise ConfigError(f"unknown export format {name!r}: use {_either([row.name for row in FORMATS])}")


def backend_format(backend: str) -> ExportFormat | None:
    """The row whose runtime ``--backend`` names; None for ``torch`` (or any name that is not a format's)."""
    return next((row for row in FORMATS if row.backend == backend), None)


def format_of(model: str | Path) -> ExportFormat | None:
    """The row of an exported file, by its suffix (any case); None for anything else (a checkpoint, a folder, a
    hub id, a preset): those are PyTorch models."""
    suffix = Path(str(model)).suffix.lower()
    return next((row for row in FORMATS if suffix in row.suffixes), None)


def exported_format(path: str | Path) -> ExportFormat:
    """The row of an exported file; a one-line InputFileError naming the known suffixes for any other file."""
    row = format_of(path)
    if row is None:
        raise InputFileError(path, f"not an exported model: its suffix is none of {known_suffixes()}")
    return row


def open_exported(path: str | Path, device: str = "auto", threads: int | None = None) -> Opened:
    """An exported file, by its suffix, loaded in its runtime on ``device`` (``auto``, ``cpu``, ``cuda[:N]``;
    read by the runtimes that can choose). Torch-free for the formats whose runtime is (ONNX)."""
    row = exported_format(path)
    return row.open(Path(path), row.prepare(device), threads, None)

