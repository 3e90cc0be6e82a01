"""`dfine predict` with a segmentation model: masks drawn (pictures and video frames), written as COCO RLE in
predictions.json and as polygons by --save-coco; --tile refused in one line."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from faster_coco_eval.core import mask as coco_mask
from hf_oracle import natural_images
from PIL import Image
from seghelpers import save_tiny_segmentation_model

from dfine.cli.main import main
from dfine.imaging.draw import draw_detections


@pytest.fixture(scope="module")
def seg_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_segmentation_model(tmp_path_factory.mktemp("seg"), image_size=160)


@pytest.fixture(scope="module")
def pictures(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("pictures")
    for i, picture in enumerate(natural_images(2, 160, seed=5)):
        picture.resize((180 + 20 * i, 140)).save(directory / f"p{i}.png")  # lossless: drawings compared exactly
    return directory


def _threshold(model: Path, images: list, keep: int) -> str:
    """A threshold that keeps the ``keep`` best instances over ``images`` (random weights score every instance
    alike, about 0.15, so a fixed threshold would keep all or none)."""
    from dfine.predict.predictor import Predictor

    scores = sorted((s for r in Predictor.from_pretrained(model, device="cpu").predict(images, 0.0)
                     for s in r["scores"].tolist()), reverse=True)
    # the widest gap between ranks keep and 3 keep: a threshold there does not move with float rounding
    cut = max(range(keep, 3 * keep), key=lambda i: scores[i - 1] - scores[i])
    assert scores[cut - 1] - scores[cut] > 1e-4
    return repr((scores[cut - 1] + scores[cut]) / 2)


def _decoded(record: dict) -> np.ndarray:
    rle = {"size": record["segmentation"]["size"], "counts": record["segmentation"]["counts"].encode()}
    return coco_mask.decode(rle).astype(bool)


def test_masks_are_written_as_rle_drawn_and_saved_as_polygons(seg_dir, pictures, tmp_path, capsys) -> None:
    out, labels = tmp_path / "out", tmp_path / "labels.json"
    threshold = _threshold(seg_dir, sorted(pictures.iterdir()), keep=12)
    assert main(["predict", str(pictures), "--model", str(seg_dir), "--output", str(out), "--threshold", threshold,
                 "--save-coco", str(labels), "--no-progress"]) == 0
    assert "COCO annotations in" in capsys.readouterr().out
    records = json.loads((out / "predictions.json").read_text())
    assert records and all("segmentation" in r for r in records)
    document = json.loads(labels.read_text())
    assert len(document["annotations"]) == len(records)
    for name in ("p0.png", "p1.png"):
        mine = [r for r in records if r["file_name"].endswith(name)]
        picture = Image.open(pictures / name).convert("RGB")
        masks = np.stack([_decoded(r) for r in mine])
        assert masks.shape[1:] == (picture.height, picture.width) and masks.any()
        # each mask inside its (clipped) box
        for mask, (x, y, w, h) in zip(masks, (r["bbox"] for r in mine)):
            ys, xs = np.nonzero(mask)
            assert len(xs) == 0 or (xs.min() >= x - 1 and xs.max() < x + w + 1 and ys.max() < y + h + 1)
        # the annotated picture is the detections drawn with their masks
        boxes = [[x, y, x + w, y + h] for x, y, w, h in (r["bbox"] for r in mine)]
        labels_, scores = [r["category_id"] for r in mine], [r["score"] for r in mine]
        drawn = np.asarray(Image.open(out / name).convert("RGB")).astype(int)
        names = {r["category_id"]: r["category_name"] for r in mine}
        with_masks = np.asarray(draw_detections(picture, boxes, labels_, scores, names, masks=masks)).astype(int)
        without = np.asarray(draw_detections(picture, boxes, labels_, scores, names)).astype(int)
        union = masks.any(axis=0)
        # the masks are there (where no tag covers them: with random weights many boxes are a tag's height)
        assert np.any(drawn != without, axis=-1)[union].sum() > 100
        # up to rounding of the boxes in the records (2 decimals) the pictures are the same
        assert np.mean(np.abs(drawn - with_masks)[union] <= 1) > 0.95
        # --save-coco: polygons of each mask that rasterise back to it (holes filled, corners cut)
        image = next(im for im in document["images"] if im["file_name"] == name)
        annotations = [a for a in document["annotations"] if a["image_id"] == image["id"]]
        assert len(annotations) == len(mine)
        for annotation, mask in zip(annotations, masks):
            assert annotation["area"] == int(mask.sum())
            polygons = annotation["segmentation"]
            assert polygons and all(len(p) >= 6 for p in polygons)
            back = coco_mask.decode(coco_mask.merge(coco_mask.frPyObjects(polygons, picture.height,
                                                                          picture.width))).astype(bool)
            assert (back & mask).sum() >= 0.9 * max(back.sum(), mask.sum())


def test_tiling_a_segmentation_model_is_refused_in_one_line(seg_dir, pictures, tmp_path, capsys) -> None:
    assert main(["predict", str(pictures), "--model", str(seg_dir), "--output", str(tmp_path / "o"),
                 "--tile", "640", "--no-progress"]) == 2
    error = capsys.readouterr().err.strip()
    assert "not instance masks" in error and len(error.splitlines()) == 1


def test_video_frames_show_the_masks(seg_dir, tmp_path) -> None:
    pytest.importorskip("av")
    from dfine.imaging.video import VideoReader, VideoWriter

    source = tmp_path / "clip.mp4"
    frames = natural_images(2, 160, seed=6)
    with VideoWriter(source, 5) as writer:
        for frame in frames:
            writer.write(frame)
    out = tmp_path / "out"
    with VideoReader(source) as decoded:  # the frames as the command reads them (the codec changes them a little)
        threshold = _threshold(seg_dir, [frame.image for frame in decoded], keep=8)
    assert main(["predict", str(source), "--model", str(seg_dir), "--output", str(out), "--threshold", threshold,
                 "--no-progress"]) == 0
    records = json.loads((out / "predictions.json").read_text())
    assert {r["frame"] for r in records} == {0, 1} and all("segmentation" in r for r in records)
    with VideoReader(source) as original, VideoReader(out / "clip.mp4") as annotated:
        before, after = [np.asarray(f.image).astype(int) for f in original], [np.asarray(f.image).astype(int)
                                                                             for f in annotated]
    for index in (0, 1):
        union = np.stack([_decoded(r) for r in records if r["frame"] == index]).any(axis=0)
        boxes = np.zeros_like(union)
        for r in (r for r in records if r["frame"] == index):
            x, y, w, h = (round(v) for v in r["bbox"])
            boxes[max(0, y - 12):y + h + 3, max(0, x - 3):x + w + 3] = True  # the box, its outline and its tag
        change = np.abs(after[index] - before[index]).mean(axis=-1)
        # masks drawn; elsewhere only the video codec's noise (a few levels)
        assert change[union].mean() > 30 and change[union].mean() > 4 * change[~boxes].mean()
