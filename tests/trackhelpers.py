"""A synthetic clip of moving squares for the tracking tests: the ground-truth tracks, the frames, noisy detections
derived from the truth, and a detector that finds the squares in the pixels."""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

WIDTH, HEIGHT = 192, 128
SIDE = 24
# four objects, each a colour and a straight path (start x, start y, dx, dy per frame); objects 0 and 1 pass each
# other at 8 pixels' distance around frame 12
OBJECTS = [((230, 40, 40), (10, 20, 6, 0)), ((40, 200, 40), (158, 52, -6, 0)),
           ((40, 90, 230), (30, 90, 3, 0)), ((230, 200, 30), (100, 95, 0, -3))]
FRAMES = 24


def truth_boxes(frames: int = FRAMES) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per frame: (ids (n,) from 1, boxes (n, 4) xyxy) of the objects inside the picture."""
    out = []
    for t in range(frames):
        ids, boxes = [], []
        for k, (_, (x, y, dx, dy)) in enumerate(OBJECTS):
            x1, y1 = x + dx * t, y + dy * t
            if 0 <= x1 and x1 + SIDE <= WIDTH and 0 <= y1 and y1 + SIDE <= HEIGHT:
                ids.append(k + 1)
                boxes.append([x1, y1, x1 + SIDE, y1 + SIDE])
        out.append((np.asarray(ids, dtype=np.int64), np.asarray(boxes, dtype=np.float64).reshape(-1, 4)))
    return out


def frames(count: int = FRAMES) -> list[Image.Image]:
    """The clip: squares of their colours on a dark grey background."""
    pictures = []
    for (ids, boxes) in truth_boxes(count):
        array = np.full((HEIGHT, WIDTH, 3), 30, dtype=np.uint8)
        for i, (x1, y1, x2, y2) in zip(ids.tolist(), boxes.astype(int).tolist(), strict=True):
            array[y1:y2, x1:x2] = OBJECTS[i - 1][0]
        pictures.append(Image.fromarray(array))
    return pictures


def write_ground_truth(path, count: int = FRAMES) -> None:
    """The truth as a MOTChallenge file (frame from 1, id, x, y, w, h, conf 1, class 1, visibility 1)."""
    lines = []
    for t, (ids, boxes) in enumerate(truth_boxes(count)):
        for i, (x1, y1, x2, y2) in zip(ids.tolist(), boxes.tolist(), strict=True):
            lines.append(f"{t + 1},{i},{x1},{y1},{x2 - x1},{y2 - y1},1,1,1\n")
    path.write_text("".join(lines))


def noisy_detections(seed: int = 0, jitter: float = 1.5, drop: float = 0.05):
    """Per frame: (boxes xyxy, scores, labels) from the truth, each box jittered, some dropped, a spurious
    low-scoring box added now and then, in shuffled order (a detector's order means nothing)."""
    rng = np.random.default_rng(seed)
    out = []
    for ids, boxes in truth_boxes():
        keep = rng.random(len(ids)) >= drop
        found = boxes[keep] + rng.normal(0, jitter, (int(keep.sum()), 4))
        scores = rng.uniform(0.75, 0.95, len(found))
        if rng.random() < 0.3:
            x, y = rng.uniform(0, WIDTH - 20), rng.uniform(0, HEIGHT - 20)
            found = np.vstack([found, [[x, y, x + 15, y + 15]]])
            scores = np.append(scores, 0.35)
        order = rng.permutation(len(found))
        out.append((found[order], scores[order], np.zeros(len(found), dtype=np.int64)))
    return out


class SquareDetector:
    """Finds each coloured square in a picture (decoded video included: colours within a tolerance), as the
    detector :func:`dfine.predict.track_files.track_source` takes; label 0 for every square."""

    def __init__(self) -> None:
        self.class_names = ["square"]
        self.rng = np.random.default_rng(0)  # boxes come out in a random order, so only tracking keeps identity

    def predict(self, images, threshold: float = 0.5):
        results = []
        for image in images:
            array = np.asarray(image.convert("RGB"), dtype=np.int16)
            boxes = []
            for colour, _ in OBJECTS:
                mask = (np.abs(array - np.asarray(colour)) < 40).all(axis=-1)
                if mask.sum() > SIDE * SIDE // 3:
                    rows, cols = np.nonzero(mask)
                    boxes.append([cols.min(), rows.min(), cols.max() + 1, rows.max() + 1])
            boxes_t = torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4)[self.rng.permutation(len(boxes))]
            results.append({"scores": torch.full((len(boxes),), 0.9), "labels": torch.zeros(len(boxes),
                                                                                          dtype=torch.int64),
                            "boxes": boxes_t})
        return results
