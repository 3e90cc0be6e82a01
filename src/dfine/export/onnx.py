"""ONNX export with post-processing inside the graph, checked with ``onnx.checker`` and against PyTorch in ONNX
Runtime as part of the export.

The graph (opset 18, exported with the ``torch.export``-based exporter, ``dynamo=True``, which gives a clean graph:
LayerNormalization and GridSample as single ops, no ceil-mode pooling anywhere):

* inputs ``images`` float32 (B, 3, H, W), RGB in [0, 1] after a plain (stretch) resize to H×W, and
  ``orig_target_sizes`` int64 (B, 2) as **(width, height)** — the original D-FINE tools' order, see
  :mod:`dfine.export.postprocess`;
* outputs ``labels`` int64 (B, K), ``boxes`` float32 (B, K, 4) absolute (x1, y1, x2, y2) in pixels of
  ``orig_target_sizes``, ``scores`` float32 (B, K), sorted by score; K = the number of queries (300); a
  segmentation model adds ``masks`` float32 (B, K, H/4, W/4), each instance's mask probabilities
  (:mod:`dfine.export.segmentation`);
* metadata (``metadata_props``): ``class_names`` (JSON list), ``image_size`` ("H,W"), ``orig_target_sizes``
  ("width,height"), ``precision`` ("fp32"/"fp16"; "int8" from :mod:`dfine.export.int8`), ``dynamic_batch``,
  ``top_k``, ``decoder_layers`` ("run/in the model", :mod:`dfine.model.depth`), ``dfine_version``.

With ``half=True`` the backbone and encoder run in fp16 inside the graph; the head (query selection, decoder,
post-processing) stays fp32 and the inputs and outputs keep their types, so callers do not change.
"""

from __future__ import annotations

import contextlib
import copy
import json
import logging
import os
import re
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from dfine.errors import DFineError, InputFileError, first_line
from dfine.export.postprocess import TARGET_SIZE_ORDER, DeployWithPostprocess
from dfine.export.preprocess import InputAffine, check_exportable, graph_processor, input_affine
from dfine.export.verify import Detections, MatchReport, check_images, match_detections, top_detections
from dfine.model.deploy.deployed import deploy
from dfine.model.depth import decoder_layers_run
from dfine.model.detection import DFineForObjectDetection
from dfine.runtime.onnx import RESAMPLE_NAMES

if TYPE_CHECKING:
    from dfine.processing.processor import DFineImageProcessor

__all__ = ["OPSET", "ExportResult", "check_onnx_output", "check_output_path", "compare_with_torch", "export_onnx",
           "onnx_metadata"]

logger = logging.getLogger("dfine")

OPSET = 18  # LayerNormalization needs 17, GridSample 16; 18 is the lowest the torch.export-based exporter targets
INPUT_NAMES = ["images", "orig_target_sizes"]
OUTPUT_NAMES = ["labels", "boxes", "scores"]

# (score tolerance, box tolerance in fractions of the image size, fraction of the top detections that must match)
FP32_TOLERANCE = (1e-3, 1e-3, 1.0)
FP16_TOLERANCE = (2e-2, 4e-3, 0.9)

RunFn = Callable[[np.ndarray, np.ndarray], Sequence[np.ndarray]]


@dataclass
class ExportResult:
    """What :func:`export_onnx` wrote and how the check went."""

    path: Path
    report: MatchReport | None  # None when the check was skipped

    def summary(self) -> str:
        return f"{self.path}" + (f" (ONNX Runtime vs PyTorch: {self.report.summary()})" if self.report else "")


def onnx_metadata(model: DFineForObjectDetection, image_size: tuple[int, int], half: bool, dynamic_batch: bool,
                  top_k: int, processor: DFineImageProcessor | None = None) -> dict[str, str]:
    """The ``metadata_props`` written into the exported file (read back by :mod:`dfine.runtime.onnx`)."""
    from dfine.version import __version__

    resample = RESAMPLE_NAMES[processor.resample if processor is not None else 2]
    steps = f"RGB stretched to {image_size[0]}x{image_size[1]} ({resample}), values / 255"
    if processor is not None and processor.do_normalize:
        mean, std = (",".join(f"{v:g}" for v in values) for values in (processor.image_mean, processor.image_std))
        steps += f"; then inside the graph: the model's normalisation (mean {mean}, std {std})"
    ids = model.config.dataset_category_ids
    return {
        "class_names": json.dumps(model.config.class_names),
        **({"dataset_category_ids": json.dumps(ids)} if ids is not None else {}),
        "image_size": f"{image_size[0]},{image_size[1]}",
        "resample": resample,
        "preprocessing": steps,
        "orig_target_sizes": TARGET_SIZE_ORDER,
        "precision": "fp16" if half else "fp32",
        "dynamic_batch": str(bool(dynamic_batch)).lower(),
        "top_k": str(top_k),
        "decoder_layers": f"{decoder_layers_run(model)}/{model.config.decoder_layers}",  # run / in the model
        "dfine_version": __version__,
    }


@contextlib.contextmanager
def _quiet_exporter() -> Iterator[None]:
    """Silence the exporter's and graph optimiser's INFO chatter (they log through the root logger)."""
    names = ("onnxscript", "onnx_ir", "torch.onnx", "torch.export", "torch._dynamo", "torch.fx")
    # a failed trace also logs each failing op's traceback at ERROR level (dozens of lines of torch internals)
    # before the exporter raises; that error is reported in one line instead, so these stay quiet unless -v
    tracers = ("torch._subclasses", "torch.export._trace")
    verbose = logger.isEnabledFor(logging.DEBUG)
    levels = {name: logging.getLogger(name).level for name in names + tracers}
    for name in names:
        logging.getLogger(name).setLevel(logging.WARNING)
    for name in tracers if not verbose else ():
        logging.getLogger(name).setLevel(logging.CRITICAL)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        for name, level in levels.items():
            logging.getLogger(name).setLevel(level)


# terminal colour codes (ESC [ ... m and the like), which the exporter puts into its messages
_ANSI_ESCAPE = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def _exporter_message(error: BaseException) -> str:
    """``Type: first line`` of an exporter failure, without colour codes, naming the underlying error.

    The exporter wraps the real failure (e.g. ``RuntimeError: k not in range for dimension``) in an error whose
    first line is boilerplate ending in "Next steps:", so the innermost cause is the part worth one line.
    """
    root = error
    while root.__cause__ is not None and root.__cause__ is not root:
        root = root.__cause__
    described = f"{type(root).__name__}: {first_line(root)}"
    if root is not error:
        described = f"{type(error).__name__} caused by {described}"
    return _ANSI_ESCAPE.sub("", described)


def _export_graph(module: torch.nn.Module, example: tuple[torch.Tensor, torch.Tensor], path: Path,
                  dynamic_batch: bool, metadata: dict[str, str], output_names: Sequence[str] = OUTPUT_NAMES) -> None:
    import onnx

    dynamic_shapes = None
    if dynamic_batch:
        batch = torch.export.Dim("batch", min=1, max=1024)
        dynamic_shapes = {"images": {0: batch}, "orig_target_sizes": {0: batch}}
    with _quiet_exporter(), torch.no_grad():
        try:
            program = torch.onnx.export(module, example, dynamo=True, opset_version=OPSET, input_names=INPUT_NAMES,
                                        output_names=list(output_names), dynamic_shapes=dynamic_shapes,
                                        verbose=False)
        except Exception as error:  # the exporter's own failures: report them in one line
            raise DFineError(f"ONNX export failed in torch.onnx.export ({_exporter_message(error)})") from error
    proto = program.model_proto
    _label_nodes(proto)
    # readable names for the batch axis, whatever the exporter called it
    for value in list(proto.graph.input) + list(proto.graph.output):
        dims = value.type.tensor_type.shape.dim
        if dynamic_batch and dims and not dims[0].HasField("dim_value"):
            dims[0].dim_param = "batch"
    for key, value in metadata.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    # one self-contained file: D-FINE-X is ~250 MB, far from protobuf's 2 GB limit, so no external data files
    # (which would be named after the temporary path and not follow the rename in export_onnx)
    onnx.save_model(proto, str(path))


def _label_nodes(proto: object) -> None:
    """Prefix every node name with the part of the model it belongs to and drop the exporter's node metadata.

    ``body/...`` (backbone, encoder), ``head/...`` (query selection, decoder) and ``post/...`` (post-processing),
    then the innermost module of the part that made the node (``head/layers.0.mlp.layers.1/node_linear_19``; ``-``
    for the part's own code, such as box decoding): the TensorRT builder keeps ``head/`` and ``post/`` layers in
    fp32 in an fp16 engine (see :mod:`dfine.export.tensorrt`), and INT8 quantization (:mod:`dfine.export.int8`)
    tells the decoder's projections from its box and score heads by the module. The exporter's per-node metadata
    (Python stack traces with local paths, FX dumps) would otherwise make up a good part of the file.
    """
    for node in proto.graph.node:  # type: ignore[attr-defined]
        scopes = next((p.value for p in node.metadata_props if p.key == "pkg.torch.onnx.name_scopes"), "")
        part = "body" if "'model.body'" in scopes else "head" if "'model.head'" in scopes else "post"
        inner = re.findall(rf"'model\.{part}\.([^']+)'", scopes) if part != "post" else []
        node.name = f"{part}/{inner[-1] if inner else '-'}/{node.name}"
        del node.metadata_props[:]


def _check_graph(path: Path, shown_as: Path) -> None:
    """``onnx.checker`` on ``path`` (a temporary file); errors name ``shown_as``, the file the user asked for."""
    import onnx

    try:
        onnx.checker.check_model(str(path), full_check=True)
    except Exception as error:
        raise DFineError(f"{shown_as}: the exported graph fails onnx.checker ({first_line(error)})") from error


def _float32(model: DFineForObjectDetection, *, eval_mode: bool) -> DFineForObjectDetection:
    """``model`` when it is already float32 (and, with ``eval_mode``, in eval mode), else a copy that is: the
    caller's model keeps its mode and precision (``.float()`` and ``.eval()`` work in place).

    ``eval_mode=False`` is for callers that copy and set eval mode themselves (:func:`deploy`), where a model in
    training mode need not be copied twice.
    """
    tensors = list(model.parameters()) + list(model.buffers())
    wrong_dtype = any(t.is_floating_point() and t.dtype != torch.float32 for t in tensors)
    wrong_mode = eval_mode and any(m.training for m in model.modules())
    if not (wrong_dtype or wrong_mode):
        return model
    copied = copy.deepcopy(model).float()
    return copied.eval() if eval_mode else copied


def check_output_path(path: str | Path) -> Path:
    """``path`` as a file to write, or a one-line :class:`InputFileError` before any work: a folder of that name, or
    a parent folder that cannot be created or written to (the export would only fail after minutes otherwise)."""
    path = Path(path)
    if path.is_dir():
        raise InputFileError(path, "is a folder: give the file to write, e.g. --output model.onnx")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise InputFileError(path.parent, f"cannot create the output folder ({first_line(error)})") from None
    if not os.access(path.parent, os.W_OK | os.X_OK):
        raise InputFileError(path.parent, "cannot write to this folder")
    return path


def check_onnx_output(output: str | Path) -> Path:
    """The ``.onnx`` file an export is to write, checked before any work: a one-line error for another suffix, a
    folder of that name or a parent folder that cannot be written (:func:`check_output_path`)."""
    path = Path(output)
    if path.suffix.lower() != ".onnx":
        raise DFineError(f"{path}: the output of an ONNX export must end in .onnx")
    return check_output_path(path)


def compare_with_torch(model: DFineForObjectDetection, run: RunFn, image_size: tuple[int, int], batch: int,
                       half: bool, backend: str, processor: DFineImageProcessor | None = None) -> MatchReport:
    """Run ``run`` (an exported graph) and ``model`` (PyTorch, float32) on the same pictures and compare.

    Pictures of two non-square original sizes are used, so that a swapped (width, height) shows up. The graph gets
    its own input ([0, 1] images) and PyTorch what ``processor`` (the model's, default: the checkpoints') makes of
    the same pictures, so a normalisation carried into the graph is checked too. Raises a one-line
    :class:`DFineError` when the detections disagree beyond the tolerance, or look empty.
    """
    from dfine.processing.processor import DFineImageProcessor

    originals = [(800, 600), (480, 640), (640, 640), (1024, 512)][:batch] or [(800, 600)]
    while len(originals) < batch:
        originals.append(originals[len(originals) % 4])
    pictures = check_images(originals)
    processor = copy.copy(processor or DFineImageProcessor())
    processor.size = {"height": image_size[0], "width": image_size[1]}
    graph_input = graph_processor(processor, image_size)(pictures)["pixel_values"]
    sizes_wh = np.array(originals, dtype=np.int64)
    graph_outputs = [np.asarray(a) for a in run(graph_input.numpy(), sizes_wh)]
    labels, boxes, scores = graph_outputs[:3]
    if not (np.isfinite(boxes).all() and np.isfinite(scores).all()):
        raise DFineError(f"{backend} check failed: the exported model gives non-finite scores or boxes")

    reference_model = _float32(model, eval_mode=True)
    device = next(reference_model.parameters()).device
    with torch.inference_mode():
        outputs = reference_model(processor(pictures)["pixel_values"].to(device))
    scale = np.concatenate([sizes_wh, sizes_wh], axis=1).astype(np.float64)  # (w, h, w, h)
    reference = top_detections(outputs.logits.float().cpu().numpy(), outputs.pred_boxes.float().cpu().numpy(),
                               k=None, scale=np.ones_like(scale))
    candidate = [Detections(scores[i].astype(np.float64), labels[i], boxes[i].astype(np.float64) / scale[i])
                 for i in range(len(originals))]
    score_tol, box_tol, required = FP16_TOLERANCE if half else FP32_TOLERANCE
    report = match_detections(reference, candidate, top=100, score_tol=score_tol, box_tol=box_tol)
    ref_best = max(float(r.scores[0]) for r in reference)
    got_best = float(scores.max())
    # The same number of top detections on both sides: a graph keeping fewer than 100 (a model with fewer queries)
    # would otherwise be compared with labels further down PyTorch's list, which it rightly does not hold.
    top = min(100, labels.shape[1])
    if got_best < 0.5 * ref_best or (len(np.unique(labels[:, :top])) == 1 and len(np.unique(
            np.concatenate([r.labels[:top] for r in reference]))) > 1):
        raise DFineError(f"{backend} check failed: the exported model's detections look empty (best score "
                         f"{got_best:.3g} vs {ref_best:.3g} in PyTorch, labels {np.unique(labels[:, :top])[:5]})")
    if report.fraction < required:
        raise DFineError(f"{backend} check failed: {report.summary()} within score {score_tol:g} / box {box_tol:g} "
                         f"of PyTorch (need {required:.0%}); worst: {report.worst}")
    if len(graph_outputs) > 3:  # a segmentation model's masks, instance by instance
        from dfine.export.segmentation import check_masks

        report.mask_diff = check_masks(
            outputs.logits.float().cpu().numpy(), outputs.pred_boxes.float().cpu().numpy(),
            outputs.pred_masks.float().cpu().numpy(), labels, boxes / scale[:, None, :], scores, graph_outputs[3],
            half, backend, score_tol=score_tol, box_tol=box_tol)
    return report


def ort_runner(path: str | Path, providers: Sequence[str] | None = None) -> RunFn:
    """A function running the exported graph in ONNX Runtime: (images, sizes_wh) -> (labels, boxes, scores)."""
    from dfine.runtime.onnx import OnnxDetector

    return OnnxDetector(path, providers=providers).run


def export_onnx(model: DFineForObjectDetection, output: str | Path, image_size: int | Sequence[int] = 640,
                dynamic_batch: bool = False, half: bool = False, batch_size: int = 1, check: bool = True,
                top_k: int | None = None, processor: DFineImageProcessor | None = None) -> ExportResult:
    """Export ``model`` (deploy form + post-processing) to ONNX, check the graph and compare it with PyTorch.

    Args:
        model: the model to export (not changed).
        output: the ``.onnx`` file to write.
        image_size: input size, ``640`` or ``(H, W)`` (multiples of 32).
        dynamic_batch: make the batch axis dynamic (otherwise it is fixed to ``batch_size``).
        half: fp16 backbone and encoder (head and post-processing stay fp32; inputs/outputs unchanged).
        batch_size: the batch of the example input (the fixed batch when ``dynamic_batch`` is False).
        check: run ``onnx.checker`` and the ONNX Runtime comparison (top-100 scores and boxes within 1e-3 of
            PyTorch in fp32; looser for fp16, plus a check that detections are not empty).
        top_k: detections per image in the graph (default: the number of queries, 300).
        processor: the model's preprocessing (default: the released checkpoints', no normalisation); its
            normalisation is carried into the graph and its resampling filter into the metadata
            (:mod:`dfine.export.preprocess`), so the graph still takes [0, 1] images.

    Raises:
        DFineError: an image size too small for the model's queries, or an export, checker or comparison failure,
            with a one-line message.
    """
    from dfine.config.image_size import check_image_size, image_size_hw

    size = image_size_hw(image_size)
    # query selection needs at least num_queries encoder positions; checked here because the exporter's own
    # failure (a top-k out of range while tracing) says nothing about the image size
    check_image_size(model.config, size, training=False)
    path = Path(output)
    if processor is not None:
        check_exportable(processor, size, "the model")
    check_onnx_output(path)
    from dfine.utils.files import atomic_write

    report: list[MatchReport | None] = [None]

    def write(tmp: Path) -> None:
        report[0] = write_checked_onnx(model, tmp, path, size, dynamic_batch, half, batch_size, check, top_k,
                                       processor)

    # written and checked under a temporary name beside ``path``, then renamed: a failed check or an interrupt
    # leaves no complete-looking file behind, and never replaces a good export already there
    atomic_write(path, write)
    return ExportResult(path, report[0])


def write_checked_onnx(model: DFineForObjectDetection, tmp: Path, path: Path, size: tuple[int, int],
                       dynamic_batch: bool, half: bool, batch_size: int, check: bool,
                       top_k: int | None, processor: DFineImageProcessor | None = None) -> MatchReport | None:
    """The work of :func:`export_onnx` on the file ``tmp``, which the caller renames to ``path`` (named in logs and
    errors) once this returns. Returns the comparison report (None without ``check``)."""
    k = int(top_k or model.config.num_queries)
    # deploy() copies the model and sets eval mode itself, so only the dtype needs a copy here: a float32 source
    # keeps the folded weights in float32 whatever the model's dtype
    source = _float32(model, eval_mode=False)
    segment = bool(model.config.use_mask_head)
    deployed = _deployed(source, size, segment).cpu().use_max_pool_op()
    if half:
        deployed.set_precision(torch.float16, head_dtype=torch.float32)
    affine = input_affine(processor) if processor is not None else None
    transform = InputAffine(*affine) if affine else None
    wrapper = (_with_masks(deployed, k, transform) if segment else DeployWithPostprocess(deployed, k, transform)).eval()
    example_batch = max(2, batch_size) if dynamic_batch else batch_size
    example = (torch.rand(example_batch, 3, *size), torch.tensor([[size[1], size[0]]] * example_batch))
    logger.info("exporting %s (%s, opset %d, %dx%d, batch %s)", path, "fp16" if half else "fp32", OPSET, *size,
                "dynamic" if dynamic_batch else batch_size)
    metadata = onnx_metadata(model, size, half, dynamic_batch, k, processor)
    outputs = OUTPUT_NAMES
    if segment:
        from dfine.export.segmentation import MASK_OUTPUT

        metadata["task"] = "segment"
        outputs = [*OUTPUT_NAMES, MASK_OUTPUT]
    _export_graph(wrapper, example, tmp, dynamic_batch, metadata, outputs)
    if not check:
        return None
    _check_graph(tmp, path)
    batch = 2 if dynamic_batch else batch_size
    return compare_with_torch(model, ort_runner(tmp), size, batch, half, "ONNX Runtime", processor)


def _deployed(model: DFineForObjectDetection, size: tuple[int, int], segment: bool) -> torch.nn.Module:
    """The deploy form: a segmentation model's keeps its mask branch (:mod:`dfine.model.deploy.masks`)."""
    if not segment:
        return deploy(model, size)
    from dfine.model.deploy.masks import deploy_segmentation

    return deploy_segmentation(model, size)


def _with_masks(deployed: torch.nn.Module, k: int, transform: torch.nn.Module | None) -> torch.nn.Module:
    from dfine.export.segmentation import DeployWithMasks

    return DeployWithMasks(deployed, k, transform)
