"""OpenVINO export: the ONNX graph (post-processing inside) converted by OpenVINO's own converter to an IR
(``model.xml`` + ``model.bin``), checked against PyTorch in OpenVINO's CPU runtime as part of the export.

The IR has the ONNX export's inputs and outputs (``images``, ``orig_target_sizes`` -> ``labels``, ``boxes``,
``scores``; see :mod:`dfine.export.onnx`) and its metadata, in the IR's ``rt_info`` under ``dfine``. Weights stay
float32 in the ``.bin`` (no ``compress_to_fp16``): the precision is OpenVINO's runtime choice
(``INFERENCE_PRECISION_HINT``), not the file's.

**Precision.** Asked for (``precision="bf16"``), it is verified like ``dfine export --half``'s fp16 graph and the
export fails when the detections disagree with PyTorch. Left to the export, every precision this CPU runs natively
(:func:`dfine.runtime.openvino.supported_precisions`: f32 always, bf16 with AVX-512 BF16 or AMX, f16 with
AVX512-FP16 or AMX-FP16) is verified and timed, and the fastest verified one is recorded in the IR
(``inference_precision``), which :class:`~dfine.runtime.openvino.OpenVinoDetector` then compiles with. Measured on
the ``dfine export`` D-FINE-N and -S graphs, OpenVINO's bf16 on CPUs with AMX ran 2.4× / 3.2× faster than ONNX
Runtime in fp32, and f32 forced 1.6× / 0.94×: the gain is mostly bf16.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from dfine.config.image_size import image_size_hw
from dfine.errors import DFineError
from dfine.export.onnx import check_output_path, compare_with_torch, write_checked_onnx
from dfine.export.preprocess import check_exportable
from dfine.runtime.openvino import PRECISIONS, OpenVinoDetector, core, openvino_error, supported_precisions

if TYPE_CHECKING:
    from dfine.export.verify import MatchReport
    from dfine.model.detection import DFineForObjectDetection
    from dfine.processing.processor import DFineImageProcessor

__all__ = ["OpenVinoExport", "check_openvino_output", "convert_onnx", "export_openvino", "save_ir"]

logger = logging.getLogger("dfine")


@dataclass
class Candidate:
    """One inference precision tried by the export: its check against PyTorch and its latency."""

    precision: str
    report: MatchReport | None = None  # None: not checked
    failure: str | None = None  # why it was not verified
    median_ms: float | None = None  # None: not timed (only one candidate)

    def line(self) -> str:
        timing = f" {self.median_ms:.0f} ms" if self.median_ms is not None else ""
        return f"{self.precision}{timing}" + (" (not verified)" if self.failure else "")


@dataclass
class OpenVinoExport:
    """What :func:`export_openvino` wrote, at which precision, and how the candidates did."""

    path: Path
    precision: str
    candidates: list[Candidate] = field(default_factory=list)

    @property
    def chosen(self) -> Candidate:
        return next(c for c in self.candidates if c.precision == self.precision)

    def summary(self) -> str:
        tried = [c for c in self.candidates if c.median_ms is not None or c.failure]
        how = f"the fastest verified of {', '.join(c.line() for c in tried)}" if len(tried) > 1 else "as asked"
        report = self.chosen.report
        check = f"; OpenVINO vs PyTorch: {report.summary()}" if report is not None else "; not checked"
        return f"{self.path} (and {self.path.with_suffix('.bin').name}): OpenVINO CPU {self.precision}, {how}{check}"


def check_openvino_output(output: str | Path) -> Path:
    """The ``.xml`` an export is to write, checked before any work (the ``.bin`` goes beside it)."""
    path = Path(output)
    if path.suffix.lower() != ".xml":
        raise DFineError(f"{path}: the output of an OpenVINO export must end in .xml (its weights go into a .bin "
                         "beside it)")
    return check_output_path(path)


def convert_onnx(onnx_path: Path, metadata: dict[str, str]) -> Any:
    """The ``openvino.Model`` of an exported ``.onnx`` (OpenVINO's converter), with ``metadata`` in its
    ``rt_info`` under ``dfine``."""
    import openvino

    try:
        model = openvino.convert_model(str(onnx_path))
    except Exception as error:  # noqa: BLE001 -- the converter raises several types; one line names the cause
        raise DFineError(f"OpenVINO could not convert the exported graph ({openvino_error(error)})") from None
    for key, value in metadata.items():
        model.set_rt_info(value, ["dfine", key])
    return model


def save_ir(model: Any, path: Path) -> None:
    """Write ``model`` as ``path`` (.xml) and the .bin beside it, through a temporary folder beside them, so that an
    interrupted export leaves no half-written IR and never replaces a good one with a broken one."""
    import openvino

    with tempfile.TemporaryDirectory(prefix=f".{path.stem}.", dir=path.parent) as tmp:
        staged = Path(tmp) / "model.xml"
        openvino.save_model(model, str(staged), compress_to_fp16=False)
        mask = os.umask(0o022)
        os.umask(mask)
        for suffix in (".bin", ".xml"):  # the weights first: an .xml is only ever beside its own .bin
            os.chmod(staged.with_suffix(suffix), 0o666 & ~mask)
            os.replace(staged.with_suffix(suffix), path.with_suffix(suffix))


def _median_ms(detector: OpenVinoDetector, runs: int = 5) -> float:
    from dfine.export.benchmark import time_callable

    batch = detector.batch or 1
    images = np.random.default_rng(0).random((batch, 3, *detector.image_size), dtype=np.float32)
    sizes = np.array([[detector.image_size[1], detector.image_size[0]]] * batch, dtype=np.int64)
    return time_callable(lambda: detector.run(images, sizes), iters=runs, warmup=1).median_ms


def _candidates(precision: str | None, check: bool) -> list[str]:
    """The precisions to try: the one asked for, else every one this CPU runs natively (f32 alone when nothing is
    checked: an unverified reduced precision is not chosen silently)."""
    supported = supported_precisions()
    if precision is not None:
        if precision not in PRECISIONS:
            raise DFineError(f"unknown OpenVINO precision {precision!r}: use {', '.join(PRECISIONS)}")
        if precision not in supported:
            raise DFineError(f"this CPU does not run OpenVINO in {precision} (it supports {', '.join(supported)}; "
                             f"{precision} needs the {PRECISIONS[precision]} capability)")
        return [precision]
    return supported if check else ["f32"]


def choose_precision(model: DFineForObjectDetection, staged: Path, size: tuple[int, int], batch: int,
                     precision: str | None, check: bool, threads: int | None,
                     processor: DFineImageProcessor | None) -> list[Candidate]:
    """Check (and, with several, time) each candidate precision of the IR ``staged``; the caller takes the fastest
    verified one. An asked-for precision that fails its check is an error, as is an f32 that fails (a broken
    conversion, not a precision loss)."""
    results = []
    detectors = {}
    for name in _candidates(precision, check):
        candidate = Candidate(name)
        detectors[name] = OpenVinoDetector(staged, threads=threads, precision=name)
        if check:
            try:
                candidate.report = compare_with_torch(model, detectors[name].run, size, batch, name != "f32",
                                                      f"OpenVINO {name}", processor)
            except DFineError as error:
                if name == "f32" or precision is not None:
                    raise
                candidate.failure = str(error)
                logger.info("%s not chosen: %s", name, error)
        results.append(candidate)
    verified = [c for c in results if c.failure is None]
    if len(verified) > 1:  # timed one after the other, round by round, so that a busy machine slows each alike
        times: dict[str, list[float]] = {c.precision: [] for c in verified}
        for _ in range(3):
            for candidate in verified:
                times[candidate.precision].append(_median_ms(detectors[candidate.precision], runs=2))
        for candidate in verified:
            candidate.median_ms = float(np.median(times[candidate.precision]))
    return results


def export_openvino(model: DFineForObjectDetection, output: str | Path, image_size: int | Sequence[int] = 640,
                    precision: str | None = None, dynamic_batch: bool = False, batch_size: int = 1,
                    check: bool = True, top_k: int | None = None, processor: DFineImageProcessor | None = None,
                    threads: int | None = None) -> OpenVinoExport:
    """Export ``model`` to an OpenVINO IR (``output`` .xml + .bin) and check it against PyTorch.

    Args:
        model: the model to export (not changed; its decoder depth, :mod:`dfine.model.depth`, is kept).
        output: the ``.xml`` to write; the weights go into the ``.bin`` beside it.
        image_size: input size, ``640`` or ``(H, W)`` (multiples of 32).
        precision: ``f32``, ``bf16`` or ``f16``; None: the fastest this CPU runs natively whose detections agree
            with PyTorch (f32 when ``check`` is off).
        dynamic_batch, batch_size, top_k, processor: as for :func:`dfine.export.onnx.export_onnx`.
        check: compare with PyTorch (f32: as the ONNX export; bf16 and f16: as ``--half``).
        threads: OpenVINO threads for the check and the timing (default: OpenVINO's choice).

    Raises:
        DFineError: OpenVINO missing, an image size or precision this model or CPU cannot take, or an export,
            conversion or comparison failure, with a one-line message.
    """
    from dfine.config.image_size import check_image_size

    core()  # a missing OpenVINO is said before minutes of export
    size = image_size_hw(image_size)
    check_image_size(model.config, size, training=False)
    if processor is not None:
        check_exportable(processor, size, "the model")
    path = check_openvino_output(output)
    _candidates(precision, check)  # an unsupported precision is said before the export
    with tempfile.TemporaryDirectory(prefix=f".{path.stem}.", dir=path.parent) as tmp:
        staged = stage_ir(model, Path(tmp), path, size, dynamic_batch, batch_size, top_k, processor)
        candidates = choose_precision(model, staged, size, 2 if dynamic_batch else batch_size, precision, check,
                                      threads, processor)
        verified = [c for c in candidates if c.failure is None]
        chosen = min(verified, key=lambda c: c.median_ms if c.median_ms is not None else 0.0)
        ir = core().read_model(str(staged))
        ir.set_rt_info(chosen.precision, ["dfine", "inference_precision"])
        ir.set_rt_info(chosen.precision, ["dfine", "precision"])
        save_ir(ir, path)
    return OpenVinoExport(path, chosen.precision, candidates)


def stage_ir(model: DFineForObjectDetection, folder: Path, path: Path, size: tuple[int, int], dynamic_batch: bool,
             batch_size: int, top_k: int | None, processor: DFineImageProcessor | None) -> Path:
    """The model's ONNX graph converted to an f32 IR in ``folder`` (``model.xml``; errors name ``path``)."""
    from dfine.export.onnx import onnx_metadata

    onnx_path = folder / "model.onnx"
    k = int(top_k or model.config.num_queries)
    # the comparison with PyTorch is made on the IR, so the ONNX graph is not run here
    write_checked_onnx(model, onnx_path, path, size, dynamic_batch, False, batch_size, False, k, processor)
    metadata = onnx_metadata(model, size, False, dynamic_batch, k, processor)
    staged = folder / "model.xml"
    import openvino

    openvino.save_model(convert_onnx(onnx_path, metadata), str(staged), compress_to_fp16=False)
    onnx_path.unlink()
    shutil.rmtree(folder / "model.onnx.data", ignore_errors=True)
    return staged
