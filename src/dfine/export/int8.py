"""INT8 post-training quantization of an export, kept only when it holds the model's accuracy.

``dfine export --format onnx|openvino --int8 --data D``: the float export is made and checked against PyTorch as
usual, then quantized with calibration images of the user's data set (:mod:`dfine.export.calibration`) — by ONNX
Runtime's static quantization (QDQ, per-channel int8 weights, uint8 activations) or by NNCF for OpenVINO — and
finally the COCO AP of the INT8 model and of the float model are measured on the data set's validation split. A drop
of more than ``max_ap_drop`` AP points fails the export and writes nothing.

**What stays in floating point** (by node name, see ``_label_nodes`` in :mod:`dfine.export.onnx`): only the
convolutions and matrix products of the backbone and encoder (``body/``), and the linear projections and FFNs of
the decoder layers (:data:`QUANTIZED`), are quantized. Everything else of the head stays in float: the top-k query
selection (a rounding changes which queries are kept), the FDR corner heads, their softmax and integral and the box
decoding (paper Eq. 1-3: a small error in a corner distribution moves a box edge), the score heads and LQE, the
deformable-attention sampling and the attention products of two activations, and the post-processing.
"""

from __future__ import annotations

import logging
import os
import re
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dfine.errors import DFineError
from dfine.export.calibration import CalibrationSet, calibration_set

if TYPE_CHECKING:
    from dfine.model.detection import DFineForObjectDetection
    from dfine.processing.processor import DFineImageProcessor

__all__ = ["QUANTIZED", "Int8Export", "Int8Options", "check_ap_drop", "export_onnx_int8", "export_openvino_int8",
           "float_nodes"]

logger = logging.getLogger("dfine")

#: the nodes INT8 may quantize: the body, and the decoder layers' linear projections and FFN (their MatMuls)
QUANTIZED = re.compile(r"^(body/|head/layers\.\d+\.(qk_proj|v_proj|o_proj|mlp|gateway)[./])")

Evaluate = Callable[[Any, "str | Path", float], float]  # (exported detector, data, val_split) -> COCO AP in [0, 1]


@dataclass(frozen=True)
class Int8Options:
    """What ``--int8`` asks for."""

    data: str | Path  # the data set: its train split calibrates, its val split judges
    evaluate: Evaluate  # COCO AP of an exported detector on the data set's val split (dfine.predict.evaluate)
    calibration_images: int = 300
    max_ap_drop: float = 1.0  # AP points (0-100) the INT8 model may lose against the float one
    val_split: float = 0.0  # for a data set without a val split: the fraction of train held out


@dataclass
class Int8Export:
    """What an INT8 export wrote and what it measured."""

    path: Path
    runtime: str  # "ONNX Runtime" or "OpenVINO bf16": what ran the INT8 model (and its float parts)
    float_ap: float  # COCO AP (0-1) of the float export on the val split
    int8_ap: float
    max_ap_drop: float
    calibration: CalibrationSet

    def summary(self) -> str:
        drop = 100 * (self.float_ap - self.int8_ap)
        return (f"{self.path}: INT8 in {self.runtime}, calibrated on {self.calibration.count} {self.calibration.split} "
                f"images; COCO AP on the val split {100 * self.int8_ap:.1f} (INT8) vs {100 * self.float_ap:.1f} "
                f"(float), a drop of {drop:.1f} (allowed {self.max_ap_drop:g})")


def check_ap_drop(float_ap: float, int8_ap: float, max_drop: float, path: str | Path, hint: str = "") -> None:
    """A one-line DFineError when the INT8 model loses more than ``max_drop`` AP points (APs are fractions);
    ``hint`` names one more thing to try."""
    drop = 100 * (float_ap - int8_ap)
    if drop > max_drop:
        raise DFineError(f"{path}: INT8 loses {drop:.1f} AP on the validation split ({100 * int8_ap:.1f} vs "
                         f"{100 * float_ap:.1f} in float), more than the allowed {max_drop:g}: nothing was written "
                         f"(calibrate on more, or more typical, images{hint}, or accept it with --allow-ap-drop)")


def float_nodes(names: Iterable[str]) -> list[str]:
    """The node names that stay in floating point: every one :data:`QUANTIZED` does not match."""
    return [name for name in names if not QUANTIZED.match(name)]


def _prepare(model: DFineForObjectDetection, options: Int8Options, size: tuple[int, int], batch: int) -> Any:
    """The calibration images, and a check that the data set has the split that judges the result, before the
    export (minutes) starts."""
    if not 0 <= options.max_ap_drop <= 100:
        raise DFineError(f"--allow-ap-drop must be between 0 and 100 AP points, got {options.max_ap_drop:g}")
    calibration = calibration_set(options.data, size, options.calibration_images, batch, options.val_split)
    if "val" not in calibration.splits:
        raise DFineError(f"{calibration.source}: no 'val' split to measure the INT8 model's accuracy on (found: "
                         f"{', '.join(calibration.splits)}; a data set without one: --val-split 0.1 as in training)")
    if model.config.num_labels != len(calibration.names):
        raise DFineError(f"the model has {model.config.num_labels} classes but the data set {calibration.source} has "
                         f"{len(calibration.names)}: quantize with the data set the model was trained on")
    return calibration


def _gate(float_detector: Any, int8_detector: Any, options: Int8Options, path: Path,
          hint: str = "") -> tuple[float, float]:
    """The float and INT8 APs on the val split; an error when the drop is too large."""
    logger.info("evaluating the float and the INT8 model on the validation split of %s", options.data)
    float_ap = options.evaluate(float_detector, options.data, options.val_split)
    int8_ap = options.evaluate(int8_detector, options.data, options.val_split)
    check_ap_drop(float_ap, int8_ap, options.max_ap_drop, path, hint)
    return float_ap, int8_ap


def _place(staged: Path, path: Path) -> None:
    """Move a finished file into place, with the permissions any new file gets."""
    mask = os.umask(0o022)
    os.umask(mask)
    os.chmod(staged, 0o666 & ~mask)
    os.replace(staged, path)


# ------------------------------------------------------------------------------------------------------------ ONNX
def quantize_onnx(float_path: Path, int8_path: Path, calibration: CalibrationSet) -> None:
    """ONNX Runtime static quantization of ``float_path``: QDQ, per-channel int8 weights, uint8 activations
    (u8s8, the fast path of x86 VNNI kernels), min-max calibration, the :func:`float_nodes` excluded."""
    import onnx
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    proto = onnx.load(str(float_path), load_external_data=False)
    excluded = float_nodes(node.name for node in proto.graph.node)

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.feeds = iter(calibration.feeds())

        def get_next(self) -> dict | None:
            return next(self.feeds, None)

    root = logging.getLogger()  # quantize_static advises pre-processing on the root logger, once per call
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        quantize_static(str(float_path), str(int8_path), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, nodes_to_exclude=excluded,
                        op_types_to_quantize=["Conv", "MatMul"])
    except Exception as error:  # noqa: BLE001 -- the quantizer raises many types; one line names the cause
        raise DFineError(f"ONNX Runtime could not quantize the exported graph ({type(error).__name__}: "
                         f"{str(error).strip().splitlines()[0] if str(error).strip() else ''})") from None
    finally:
        root.setLevel(level)
    quantized = onnx.load(str(int8_path))
    _float_inputs_for_float_nodes(quantized, set(excluded))
    for prop in quantized.metadata_props:
        if prop.key == "precision":
            prop.value = "int8"
    onnx.save_model(quantized, str(int8_path))


def _float_inputs_for_float_nodes(proto: Any, float_names: set[str]) -> None:
    """Give the nodes kept in float their float inputs back.

    A tensor read by a quantized node and by a node kept in float (the decoder's hidden state feeds both the next
    layer's projections and the box head) gets one QuantizeLinear -> DequantizeLinear pair, and every reader then
    sees the int8-rounded values: the float node would compute in float on rounded inputs. Here each such input is
    the tensor before the pair again.
    """
    produced_by = {output: node for node in proto.graph.node for output in node.output}
    for node in proto.graph.node:
        if node.name not in float_names:
            continue
        for index, name in enumerate(node.input):
            dequantize = produced_by.get(name)
            if dequantize is None or dequantize.op_type != "DequantizeLinear":
                continue
            quantize = produced_by.get(dequantize.input[0])
            if quantize is not None and quantize.op_type == "QuantizeLinear":
                node.input[index] = quantize.input[0]


def export_onnx_int8(model: DFineForObjectDetection, output: str | Path, size: tuple[int, int],
                     options: Int8Options, batch_size: int = 1, dynamic_batch: bool = False,
                     processor: DFineImageProcessor | None = None, threads: int | None = None) -> Int8Export:
    """An INT8 ``.onnx`` of ``model``, kept only when its AP holds (see the module docstring)."""
    from dfine.export.onnx import check_onnx_output, write_checked_onnx
    from dfine.runtime.onnx import OnnxDetector

    path = check_onnx_output(output)
    calibration = _prepare(model, options, size, 1 if dynamic_batch else batch_size)
    cpu = ["CPUExecutionProvider"]  # INT8 is for the CPU: what is measured is what the CPU runs
    with tempfile.TemporaryDirectory(prefix=f".{path.stem}.", dir=path.parent) as tmp:
        float_path, int8_path = Path(tmp) / "float.onnx", Path(tmp) / "int8.onnx"
        write_checked_onnx(model, float_path, path, size, dynamic_batch, False, batch_size, True, None, processor)
        logger.info("quantizing with %d calibration images of %s", calibration.count, calibration.source)
        quantize_onnx(float_path, int8_path, calibration)
        float_ap, int8_ap = _gate(OnnxDetector(float_path, cpu, threads), OnnxDetector(int8_path, cpu, threads),
                                  options, path)
        _place(int8_path, path)
    return Int8Export(path, "ONNX Runtime", float_ap, int8_ap, options.max_ap_drop, calibration)


# -------------------------------------------------------------------------------------------------------- OpenVINO
def quantize_openvino(model: Any, calibration: CalibrationSet) -> Any:
    """NNCF post-training quantization of an ``openvino.Model`` (transformer preset: softmax and layer norms are
    never quantized), the :func:`float_nodes` ignored."""
    import nncf

    nncf_logger = logging.getLogger("nncf")
    level = nncf_logger.level
    nncf_logger.setLevel(logging.WARNING)  # otherwise one INFO line per node it leaves alone
    try:
        ignored = float_nodes(op.get_friendly_name() for op in model.get_ordered_ops())
        return nncf.quantize(model, nncf.Dataset(calibration.feeds()), subset_size=calibration.count,
                             model_type=nncf.ModelType.TRANSFORMER,
                             ignored_scope=nncf.IgnoredScope(names=ignored, validate=False))
    except Exception as error:  # noqa: BLE001 -- NNCF raises many types; one line names the cause
        raise DFineError(f"NNCF could not quantize the OpenVINO model ({type(error).__name__}: "
                         f"{str(error).strip().splitlines()[0] if str(error).strip() else ''})") from None
    finally:
        nncf_logger.setLevel(level)


def export_openvino_int8(model: DFineForObjectDetection, output: str | Path, size: tuple[int, int],
                         options: Int8Options, precision: str | None = None, batch_size: int = 1,
                         dynamic_batch: bool = False, processor: DFineImageProcessor | None = None,
                         threads: int | None = None) -> Int8Export:
    """An INT8 OpenVINO IR of ``model``, kept only when its AP holds (see the module docstring). The parts left in
    floating point run in ``precision`` (default: the fastest this CPU runs whose float detections agree with
    PyTorch, as :func:`dfine.export.openvino.export_openvino` chooses); the float reference is the IR in f32."""
    from dfine.export.openvino import check_openvino_output, choose_precision, save_ir, stage_ir
    from dfine.runtime.openvino import OpenVinoDetector, core

    ov_core = core()
    path = check_openvino_output(output)
    batch = 1 if dynamic_batch else batch_size
    calibration = _prepare(model, options, size, batch)
    with tempfile.TemporaryDirectory(prefix=f".{path.stem}.", dir=path.parent) as tmp:
        staged = stage_ir(model, Path(tmp), path, size, dynamic_batch, batch_size, None, processor)
        candidates = choose_precision(model, staged, size, 2 if dynamic_batch else batch_size, precision, True,
                                      threads, processor)
        chosen = min((c for c in candidates if c.failure is None),
                     key=lambda c: c.median_ms if c.median_ms is not None else 0.0).precision
        logger.info("quantizing with %d calibration images of %s", calibration.count, calibration.source)
        quantized = quantize_openvino(ov_core.read_model(str(staged)), calibration)
        quantized.set_rt_info("int8", ["dfine", "precision"])
        quantized.set_rt_info(chosen, ["dfine", "inference_precision"])
        int8_xml = Path(tmp) / "int8" / "model.xml"
        int8_xml.parent.mkdir()
        save_ir(quantized, int8_xml)
        # measured on the demo model (docs/cpu-deployment.md): float parts in bf16 cost 1.2-1.5 AP more than in f32
        # and were 12-21% faster at 640
        hint = ", run the float parts in f32 with --precision f32" if chosen != "f32" else ""
        float_ap, int8_ap = _gate(OpenVinoDetector(staged, threads=threads, precision="f32"),
                                  OpenVinoDetector(int8_xml, threads=threads), options, path, hint)
        _place(int8_xml.with_suffix(".bin"), path.with_suffix(".bin"))
        _place(int8_xml, path)
    return Int8Export(path, f"OpenVINO {chosen}", float_ap, int8_ap, options.max_ap_drop, calibration)
