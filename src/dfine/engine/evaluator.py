"""COCO box evaluation on top of faster-coco-eval (as the original's ``src/data/dataset/coco_eval.py: CocoEvaluator``).

The ground truth is a COCO-format dict whose category ids are the contiguous label indices ``0..C-1`` (see
``docs/ARCHITECTURE.md``, "Evaluation ground truth"); predictions are absolute ``xyxy`` boxes in the original image
size, exactly what the image processor's post-processing returns.

Unlike the original, this module never calls ``faster_coco_eval.init_as_pycocotools()``: that call replaces
``pycocotools`` in ``sys.modules`` for the whole process, which would silently change any other code (or test) that
imports the real pycocotools.

Only images passed to :meth:`CocoEvaluator.update` are evaluated (as in the original, which evaluates per batch),
so a run over part of the validation set is scored on that part. When nothing was passed at all, every ground-truth
image is evaluated with no detections, which scores 0 instead of failing.
"""

from __future__ import annotations

import copy
import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch

from dfine.engine.distributed import all_gather_object

logger = logging.getLogger(__name__)

# The twelve standard COCO box statistics, in COCOeval.stats order, then the two extra recalls faster-coco-eval
# appends (the original logs all fourteen).
STAT_NAMES: tuple[str, ...] = (
    "AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl", "AR50", "AR75",
)  # fmt: skip


def _to_numpy(value: Any, dtype: Any) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        value = value.detach().to("cpu")
        # NumPy has no bfloat16; going through float32 loses nothing a box or score needs.
        if value.dtype in (torch.bfloat16, torch.float16):
            value = value.float()
        value = value.numpy()
    return np.asarray(value, dtype=dtype)


def _nan_to_none(value: float) -> float | None:
    return None if value is None or math.isnan(value) else float(value)


def format_ap(value: float | None) -> str:
    """An AP for the console: a percentage, as in the metrics table (``0.4123`` -> ``"41.2%"``; NaN/None -> ``-``).
    Results in Python and JSON stay fractions, as COCO tools give them."""
    return "-" if value is None or math.isnan(value) else f"{100 * value:.1f}%"


@dataclass
class ClassAP:
    """Per-category result.

    Attributes:
        label: contiguous label id (the GT category id).
        name: category name.
        ap: AP@[.5:.95] (area all, maxDets 100); NaN when the category has no ground truth in the evaluated images.
        ap50: AP@.5 under the same conditions.
        num_gt: non-crowd ground-truth boxes of this category in the evaluated images.
    """

    label: int
    name: str
    ap: float
    ap50: float
    num_gt: int


@dataclass
class EvalResult:
    """COCO box metrics (or mask metrics: ``iou_type`` ``"segm"``).

    All values are fractions in ``[0, 1]``. A bucket without ground truth (for example ``APs`` when there are no
    small objects) is NaN where pycocotools reports -1; :meth:`as_dict` turns NaN into ``None`` so the result can
    be written as strict JSON.

    Attributes:
        AP ... AR75: the statistics named in :data:`STAT_NAMES` (``APs``/``ARs`` etc. are the small, medium and
            large area buckets; ``AR1``/``AR10``/``AR100`` the detection caps; ``AR50``/``AR75`` recall at one IoU).
        per_class: one :class:`ClassAP` per ground-truth category, in category-id order.
        num_images: images evaluated.
        num_detections: detections scored.
        num_non_finite: detections dropped because their box or score was NaN/inf (a diverging model).
        iou_type: ``"bbox"`` (box overlaps) or ``"segm"`` (mask overlaps, :mod:`dfine.engine.mask_eval`).
        segm: a segmentation model's mask metrics beside these box metrics (None for a detector); ``as_dict``
            holds them under ``"segm"`` and ``table`` prints both.
    """

    AP: float
    AP50: float
    AP75: float
    APs: float
    APm: float
    APl: float
    AR1: float
    AR10: float
    AR100: float
    ARs: float
    ARm: float
    ARl: float
    AR50: float
    AR75: float
    per_class: list[ClassAP] = field(default_factory=list)
    num_images: int = 0
    num_detections: int = 0
    num_non_finite: int = 0
    # (classes, 101): COCO's interpolated precision at IoU 0.5 at recall 0, 0.01, ..., 1 (all areas, 100 detections
    # per image), NaN for a class without ground truth; what plots.plot_pr_curves draws
    precision50: np.ndarray | None = field(default=None, repr=False, compare=False)
    iou_type: str = "bbox"
    segm: EvalResult | None = None

    @property
    def stats(self) -> list[float]:
        """The fourteen statistics in COCOeval order, with pycocotools' -1 for empty buckets."""
        return [-1.0 if math.isnan(v) else v for v in (getattr(self, name) for name in STAT_NAMES)]

    def as_dict(self, per_class: bool = True) -> dict[str, Any]:
        """JSON-ready dict: the named statistics, counts and (optionally) ``per_class_AP`` keyed by class name plus
        ``per_class``, the rows of :meth:`table` (label, class, AP, AP50, number of ground-truth boxes)."""
        out: dict[str, Any] = {name: _nan_to_none(getattr(self, name)) for name in STAT_NAMES}
        out["num_images"] = self.num_images
        out["num_detections"] = self.num_detections
        out["num_non_finite"] = self.num_non_finite
        if per_class:
            out["per_class_AP"] = {c.name: _nan_to_none(c.ap) for c in self.per_class}
            out["per_class"] = [{"label": c.label, "class": c.name, "AP": _nan_to_none(c.ap),
                                 "AP50": _nan_to_none(c.ap50), "num_gt": c.num_gt} for c in self.per_class]
        if self.segm is not None:
            out["segm"] = self.segm.as_dict(per_class)
        return out

    # Indexing by name, as for ``TrainResult.metrics`` (``result["AP"]``): the names and values of :meth:`as_dict`,
    # so the two kinds of result read the same; attributes (``result.AP``) keep NaN for empty buckets.
    def keys(self) -> list[str]:
        """The names ``result[name]`` accepts: those of :meth:`as_dict` (with ``per_class_AP``)."""
        return list(self.as_dict())

    def __getitem__(self, name: str) -> Any:
        values = self.as_dict()
        if name not in values:
            raise KeyError(f"no metric {name!r}; the names are: {', '.join(values)}")
        return values[name]

    def __contains__(self, name: object) -> bool:
        return name in self.as_dict()

    def get(self, name: str, default: Any = None) -> Any:
        """``result[name]``, or ``default`` for a name it does not have (as ``dict.get``)."""
        return self.as_dict().get(name, default)

    def per_class_dicts(self) -> list[dict[str, Any]]:
        """Per-class rows as plain dicts (NaN kept)."""
        return [asdict(c) for c in self.per_class]

    def table(self, per_class: bool = True) -> str:
        """A fixed-width text table: the overall statistics, then one row per class."""

        def fmt(value: float) -> str:
            return "   -  " if math.isnan(value) else f"{100 * value:6.2f}"

        kind = "mask" if self.iou_type == "segm" else "box"
        lines = [f"COCO {kind} metrics over {self.num_images} images, {self.num_detections} detections (values in %)"]
        groups = (STAT_NAMES[:6], STAT_NAMES[6:12], STAT_NAMES[12:])
        for group in groups:
            lines.append("  ".join(f"{name:>6}" for name in group))
            lines.append("  ".join(fmt(getattr(self, name)) for name in group))
        if per_class and self.per_class:
            width = max(10, *(len(c.name) for c in self.per_class))
            # "label": the model's class index; a COCO data set's own category ids may differ (3, 17, ...)
            header = f"{'label':>5}  {'class':<{width}}  {'AP':>6}  {'AP50':>6}  {'#gt':>6}"
            lines += ["", header, "-" * len(header)]
            for c in self.per_class:
                lines.append(f"{c.label:>5}  {c.name:<{width}}  {fmt(c.ap)}  {fmt(c.ap50)}  {c.num_gt:>6}")
        if self.segm is not None:
            lines += ["", self.segm.table(per_class)]
        return "\n".join(lines)


class CocoEvaluator:
    """Accumulate detections over a validation pass and compute COCO box metrics.

    Typical use (on every rank)::

        evaluator = CocoEvaluator(ground_truth, class_names)
        for images, targets in loader:
            detections = post_process(model(images), orig_sizes)  # list of {"boxes", "scores", "labels"}
            evaluator.update({t["image_id"]: d for t, d in zip(targets, detections)})
        evaluator.synchronize()
        result = evaluator.compute()  # every rank gets the same numbers; calling it on rank 0 only is fine too
        print(result.table())

    Args:
        ground_truth: COCO-format dict with ``images``, ``annotations`` (``bbox`` as absolute ``xywh``) and
            ``categories``; category ids are contiguous label ids. It is not modified.
        class_names: names indexed by label id, used for the per-class table; defaults to the GT category names.
        verbose: let faster-coco-eval print its usual summary.
    """

    #: what COCOeval compares: boxes here, masks in :class:`dfine.engine.mask_eval.MaskEvaluator`
    iou_type = "bbox"

    def __init__(
        self, ground_truth: Mapping[str, Any], class_names: Sequence[str] | None = None, verbose: bool = False
    ) -> None:
        self.verbose = verbose
        self._gt = self._normalise_ground_truth(ground_truth, class_names)
        self._gt_image_ids = {img["id"] for img in self._gt["images"]}
        # image id -> (boxes xyxy float32 (N, 4), scores float32 (N,), labels int64 (N,))
        self._predictions: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
        self._non_finite: dict[int, int] = {}  # image id -> detections dropped for NaN/inf
        self._uncertainty: dict[int, np.ndarray] = {}  # image id -> (N,) box uncertainty, when detections have it

    @staticmethod
    def _normalise_ground_truth(gt: Mapping[str, Any], class_names: Sequence[str] | None) -> dict[str, Any]:
        """Build a private, clean copy of the GT.

        faster-coco-eval writes into the annotation dicts it is given (``ignore``, integer ids), and both it and
        pycocotools use annotation id 0 as "unmatched", so a data set numbering annotations from 0 would lose a
        true positive. The copy renumbers annotations from 1 and fills ``area``/``iscrowd`` when missing.
        """
        images = [{**img, "id": int(img["id"])} for img in gt.get("images", [])]
        annotations = []
        for index, ann in enumerate(gt.get("annotations", [])):
            x, y, w, h = (float(v) for v in ann["bbox"])
            annotations.append({
                "id": index + 1,
                "image_id": int(ann["image_id"]),
                "category_id": int(ann["category_id"]),
                "bbox": [x, y, w, h],
                # COCO's own area is the segmentation area; box-only data sets fall back to the box area.
                "area": float(ann["area"]) if ann.get("area") is not None else w * h,
                "iscrowd": int(ann.get("iscrowd", 0) or 0),
            })
        if gt.get("categories"):
            categories = [{"id": int(c["id"]), "name": str(c.get("name", c["id"]))} for c in gt["categories"]]
        elif class_names is not None:
            categories = [{"id": i, "name": str(name)} for i, name in enumerate(class_names)]
        else:
            categories = [{"id": i, "name": str(i)} for i in sorted({a["category_id"] for a in annotations})]
        if class_names is not None:
            # The caller's names win: the GT may carry the raw names of a remapped data set, or none at all.
            for cat in categories:
                if 0 <= cat["id"] < len(class_names):
                    cat["name"] = str(class_names[cat["id"]])
        known_images = {img["id"] for img in images}
        orphans = {a["image_id"] for a in annotations} - known_images
        if orphans:
            listed = sorted(orphans)[:10]
            raise ValueError(f"ground truth has annotations for image ids not listed in 'images': {listed}")
        return {"images": images, "annotations": annotations, "categories": categories}

    @property
    def image_ids(self) -> list[int]:
        """Ids of the images received so far (sorted)."""
        return sorted(self._predictions)

    def reset(self) -> None:
        """Forget all predictions (to reuse the evaluator for the next epoch)."""
        self._predictions = {}
        self._non_finite = {}
        self._uncertainty = {}

    def update(self, predictions: Mapping[int, Mapping[str, Any]]) -> None:
        """Add the detections of some images.

        Args:
            predictions: image id -> ``{"boxes": (N, 4) absolute xyxy in the original image size, "scores": (N,),
                "labels": (N,) contiguous label ids}`` as tensors or arrays. ``N`` may be 0; such images still count
                (their ground truth becomes misses). An image sent twice keeps its last detections. An
                ``"uncertainty"`` (N,) entry (``return_uncertainty=True`` post-processing) is kept for
                :meth:`uncertainties`.
        """
        for image_id, det in predictions.items():
            image_id = int(image_id)
            if image_id not in self._gt_image_ids:
                raise ValueError(f"prediction for image id {image_id}, which is not in the ground truth")
            boxes = _to_numpy(det["boxes"], np.float32).reshape(-1, 4)
            scores = _to_numpy(det["scores"], np.float32).reshape(-1)
            labels = _to_numpy(det["labels"], np.int64).reshape(-1)
            if not (len(boxes) == len(scores) == len(labels)):
                raise ValueError(
                    f"image {image_id}: {len(boxes)} boxes, {len(scores)} scores and {len(labels)} labels"
                )
            # A diverging model emits NaN boxes or scores; faster-coco-eval rejects NaN scores outright, and such a
            # detection can never match anyway, so it is dropped (and counted) rather than failing the evaluation.
            finite = np.isfinite(scores) & np.isfinite(boxes).all(axis=1)
            if not finite.all():
                self._non_finite[image_id] = int((~finite).sum())
                boxes, scores, labels = boxes[finite], scores[finite], labels[finite]
            else:
                self._non_finite.pop(image_id, None)
            self._predictions[image_id] = (boxes, scores, labels)
            if det.get("uncertainty") is not None:
                self._uncertainty[image_id] = _to_numpy(det["uncertainty"], np.float32).reshape(-1)[finite]
            else:
                self._uncertainty.pop(image_id, None)

    def synchronize(self) -> None:
        """Merge the predictions of all ranks, so that every rank holds all of them.

        Must be called on every rank. A ``DistributedSampler`` pads the last batch with repeated images; since
        predictions are keyed by image id, the repeats collapse instead of being counted twice.
        """
        gathered = all_gather_object((self._predictions, self._non_finite, self._uncertainty))
        merged: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
        non_finite: dict[int, int] = {}
        uncertainty: dict[int, np.ndarray] = {}
        for predictions, dropped, spreads in gathered:
            merged.update(predictions)
            non_finite.update(dropped)
            uncertainty.update(spreads)
        self._predictions, self._non_finite, self._uncertainty = merged, non_finite, uncertainty

    def coco_detections(self) -> list[dict[str, Any]]:
        """The stored predictions as a COCO results list (``bbox`` as absolute ``xywh``)."""
        results = []
        for image_id in sorted(self._predictions):
            boxes, scores, labels = self._predictions[image_id]
            xywh = boxes.astype(np.float64)
            xywh[:, 2:] -= xywh[:, :2]
            for box, score, label in zip(xywh.tolist(), scores.tolist(), labels.tolist()):
                results.append({"image_id": image_id, "category_id": int(label), "bbox": box, "score": score})
        return results

    def ground_truth(self) -> dict[str, Any]:
        """A copy of the normalised ground truth the evaluator scores against."""
        return copy.deepcopy(self._gt)

    def compute(self) -> EvalResult:
        """Run COCO evaluation (IoU 0.50:0.95, maxDets 1/10/100) on the images received so far.

        Call :meth:`synchronize` first in a distributed run.
        """
        from faster_coco_eval import COCO, COCOeval_faster

        def quiet(*args: Any, **kwargs: Any) -> None:
            return None

        printer = print if self.verbose else quiet
        if self._non_finite:
            logger.warning(
                "dropped %d detections with NaN/inf boxes or scores in %d images before COCO evaluation",
                sum(self._non_finite.values()), len(self._non_finite),
            )
        image_ids = self.image_ids or sorted(self._gt_image_ids)
        detections = self.coco_detections()

        # No deep copies: self._gt is already private (faster-coco-eval only adds an idempotent "ignore" key to it)
        # and the detections are built fresh; deep-copying them was two thirds of the run time.
        coco_gt = COCO(self._gt, use_deepcopy=False, print_function=printer)
        coco_dt = coco_gt.loadRes(detections)
        coco_dt.print_function = printer
        evaluator = COCOeval_faster(coco_gt, coco_dt, iouType=self.iou_type, print_function=printer)
        evaluator.params.imgIds = image_ids
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()

        raw = [float(v) for v in evaluator.all_stats[: len(STAT_NAMES)]]
        stats = {name: (math.nan if value < 0 else value) for name, value in zip(STAT_NAMES, raw)}
        per_class = self._per_class(evaluator, set(image_ids))
        precision = np.asarray(evaluator.eval["precision"], dtype=np.float64)
        iou50 = int(np.argmin(np.abs(np.asarray(evaluator.params.iouThrs) - 0.5)))
        precision50 = precision[iou50, :, :, 0, -1].T.copy()
        precision50[precision50 < 0] = np.nan
        return EvalResult(
            **stats,
            per_class=per_class,
            num_images=len(image_ids),
            num_detections=len(detections),
            num_non_finite=sum(self._non_finite.values()),
            precision50=precision50,
            iou_type=self.iou_type,
        )

    def predictions(self) -> dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """Image id -> (boxes xyxy (N, 4), scores (N,), labels (N,)) as received (NaN/inf dropped); not copies."""
        return self._predictions

    def uncertainties(self) -> dict[int, np.ndarray]:
        """Image id -> the (N,) box uncertainty of :meth:`predictions`' detections, for the images whose
        detections had one (:mod:`dfine.ops.uncertainty`); not copies."""
        return self._uncertainty

    def _per_class(self, evaluator: Any, image_ids: set[int]) -> list[ClassAP]:
        # precision: [T iou thresholds, R recall points, K categories, A area ranges, M maxDets]; -1 marks "no GT".
        precision = np.asarray(evaluator.eval["precision"])
        params = evaluator.params
        iou50 = int(np.argmin(np.abs(np.asarray(params.iouThrs) - 0.5)))
        num_gt: dict[int, int] = {}
        for ann in self._gt["annotations"]:
            if not ann["iscrowd"] and ann["image_id"] in image_ids:
                num_gt[ann["category_id"]] = num_gt.get(ann["category_id"], 0) + 1
        names = {c["id"]: c["name"] for c in self._gt["categories"]}
        rows = []
        for k, cat_id in enumerate(params.catIds):
            p_all = precision[:, :, k, 0, -1]
            p_50 = precision[iou50, :, k, 0, -1]
            ap = float(p_all[p_all > -1].mean()) if (p_all > -1).any() else math.nan
            ap50 = float(p_50[p_50 > -1].mean()) if (p_50 > -1).any() else math.nan
            rows.append(ClassAP(int(cat_id), names.get(cat_id, str(cat_id)), ap, ap50, num_gt.get(int(cat_id), 0)))
        return rows
