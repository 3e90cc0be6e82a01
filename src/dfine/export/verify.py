"""Comparing two sets of detections in a way that is robust to ties and near-ties (numpy only, no PyTorch).

Two correct implementations of the same model (PyTorch vs ONNX Runtime, fp32 vs fp16, training form vs deploy
form) round differently. Wherever two scores are nearly equal — in the top-300 query selection over thousands of
tokens, or in the final top-k over queries × classes — the order, or even the set at the boundary, can flip. An
element-wise comparison then reports a "difference" of whole boxes. Instead, every detection of the reference's
top ``k`` must have a counterpart among *all* the other side's detections: the same label, a box within
``box_tol`` and a score within ``score_tol``. A detection whose counterpart was pushed just out of the other top-k
by a near-tie is still found, because the other side is searched in full (its top-300, or all queries × classes).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["Detections", "MatchReport", "check_images", "match_detections", "top_detections"]


@dataclass
class Detections:
    """Detections of one image: ``scores`` (K,), ``labels`` (K,), ``boxes`` (K, 4) xyxy, sorted by score."""

    scores: np.ndarray
    labels: np.ndarray
    boxes: np.ndarray


@dataclass
class MatchReport:
    """The result of :func:`match_detections` over a batch."""

    checked: int  # reference detections compared (excused ones not counted)
    matched: int  # of those, with a counterpart within tolerance
    max_score_diff: float  # over matched detections
    max_box_diff: float  # over matched detections, in box units
    worst: str  # a description of the worst unmatched detection ("" when all matched)
    excused: int = 0  # unmatched, but scored at the candidate's top-k boundary (a tie, not an error)
    mask_diff: float | None = None  # a segmentation model's largest mask probability difference, when compared

    @property
    def fraction(self) -> float:
        return self.matched / self.checked if self.checked else 1.0

    def summary(self) -> str:
        excused = f" ({self.excused} boundary ties excused)" if self.excused else ""
        masks = f", max mask diff {self.mask_diff:.2e}" if self.mask_diff is not None else ""
        return (f"{self.matched}/{self.checked} matched{excused}, max score diff {self.max_score_diff:.2e}, "
                f"max box diff {self.max_box_diff:.2e}{masks}")


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * x))  # overflow-free


def top_detections(logits: np.ndarray, boxes_cxcywh: np.ndarray, k: int | None = None,
                   scale: np.ndarray | None = None) -> list[Detections]:
    """Sigmoid top-k over queries × classes of raw outputs, like the post-processor (k = Q by default, None = all).

    Args:
        logits: (B, Q, C) raw class logits.
        boxes_cxcywh: (B, Q, 4) normalised centre-form boxes.
        k: detections kept per image; 0 or None keeps every (query, class) pair.
        scale: optional (B, 4) multipliers for (x1, y1, x2, y2), e.g. (W, H, W, H) for pixels.
    """
    logits = np.asarray(logits, dtype=np.float64)
    boxes = np.asarray(boxes_cxcywh, dtype=np.float64)
    batch, queries, classes = logits.shape
    xyxy = np.concatenate([boxes[..., :2] - boxes[..., 2:] / 2, boxes[..., :2] + boxes[..., 2:] / 2], axis=-1)
    if scale is not None:
        xyxy = xyxy * np.asarray(scale, dtype=np.float64)[:, None, :]
    out = []
    for i in range(batch):
        scores = _sigmoid(logits[i]).reshape(-1)
        order = np.argsort(-scores, kind="stable")
        if k:
            order = order[:k]
        out.append(Detections(scores[order], order % classes, xyxy[i][order // classes]))
    return out


def match_detections(reference: list[Detections], candidate: list[Detections], top: int = 100,
                     score_tol: float = 1e-3, box_tol: float = 1e-3) -> MatchReport:
    """How many of each reference image's ``top`` detections have a counterpart in ``candidate``.

    A counterpart has the same label, every box coordinate within ``box_tol`` and a score within ``score_tol``
    (pass ``score_tol=inf`` to compare boxes and labels only). ``candidate`` should hold more detections than
    ``top`` (e.g. all 300 of an exported graph) so that near-ties at the boundary do not count as misses; a
    reference detection scored within ``score_tol`` of the candidate's lowest kept score may legitimately have
    fallen out of the candidate's top-k: when unmatched it is excused (counted in ``excused``, not in ``checked``).
    """
    if len(reference) != len(candidate):
        raise ValueError(f"{len(reference)} reference images but {len(candidate)} candidate images")
    checked = matched = excused = 0
    max_score = max_box = 0.0
    worst, worst_gap = "", -1.0
    for image, (ref, cand) in enumerate(zip(reference, candidate)):
        cand_boxes = np.asarray(cand.boxes, dtype=np.float64)
        cand_scores = np.asarray(cand.scores, dtype=np.float64)
        cand_labels = np.asarray(cand.labels)
        floor = float(cand_scores.min()) if len(cand_scores) else float("inf")
        for rank in range(min(top, len(ref.scores))):
            checked += 1
            same = cand_labels == ref.labels[rank]
            box_diff = np.abs(cand_boxes - ref.boxes[rank]).max(axis=-1) if len(cand_boxes) else np.zeros(0)
            score_diff = np.abs(cand_scores - ref.scores[rank])
            ok = same & (box_diff <= box_tol) & (score_diff <= score_tol)
            if ok.any():
                matched += 1
                best = np.flatnonzero(ok)[np.argmin(box_diff[ok])]
                max_score = max(max_score, float(score_diff[best]))
                max_box = max(max_box, float(box_diff[best]))
                continue
            if ref.scores[rank] <= floor + score_tol:
                checked -= 1
                excused += 1
                continue
            # describe the closest same-label candidate, for the error message
            gap = float(box_diff[same].min()) if same.any() else float("inf")
            if gap > worst_gap:
                worst_gap = gap
                worst = (f"image {image} rank {rank} (label {int(ref.labels[rank])}, score {ref.scores[rank]:.4f}): "
                         + (f"nearest same-label box differs by {gap:.3g}" if same.any() else "label missing"))
    return MatchReport(checked, matched, max_score, max_box, worst, excused)


def check_images(sizes: list[tuple[int, int]], seed: int = 0) -> list:
    """Deterministic structured RGB pictures of the given ``(width, height)`` sizes for export checks.

    Smooth colour gradients, pixel noise and solid shapes: they give a network (trained or random) varied,
    image-dependent activations, unlike constant or pure-noise inputs.
    """
    from PIL import Image, ImageDraw

    rng = np.random.default_rng(seed)
    pictures = []
    for width, height in sizes:
        y, x = np.mgrid[0:height, 0:width]
        phase = rng.uniform(0, 6, 3)
        base = np.stack([np.sin(x / width * 5 + phase[0]), np.cos(y / height * 4 + phase[1]),
                         np.sin((x / width + y / height) * 3 + phase[2])], axis=-1)
        array = ((base * 0.3 + 0.5 + rng.normal(0, 0.08, base.shape)).clip(0, 1) * 255).astype(np.uint8)
        picture = Image.fromarray(array)
        draw = ImageDraw.Draw(picture)
        for _ in range(6):
            w = int(rng.integers(width // 8, width // 2))
            h = int(rng.integers(height // 8, height // 2))
            x0, y0 = int(rng.integers(0, width - w)), int(rng.integers(0, height - h))
            colour = tuple(int(c) for c in rng.integers(0, 256, 3))
            if rng.random() < 0.5:
                draw.rectangle([x0, y0, x0 + w, y0 + h], fill=colour)
            else:
                draw.ellipse([x0, y0, x0 + w, y0 + h], fill=colour)
        pictures.append(picture)
    return pictures
