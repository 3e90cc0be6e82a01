"""post_process_instance_segmentation (D-FINE-seg's inference post-processing) and masks as COCO RLE."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from faster_coco_eval.core import mask as coco_mask

import dfine
from dfine.processing.detections import mask_to_rle, to_coco_results


def _logit(p: float) -> float:
    return math.log(p / (1 - p))


def _outputs(scores: list[list[float]], boxes: list[list[float]], masks: torch.Tensor) -> dict[str, torch.Tensor]:
    """One image: per query its class scores, its (cx, cy, w, h) box and its mask logits."""
    return {"logits": torch.tensor([[[_logit(s) for s in row] for row in scores]]),
            "pred_boxes": torch.tensor([boxes]), "pred_masks": masks[None]}


@pytest.fixture()
def processor() -> dfine.DFineImageProcessor:
    return dfine.DFineImageProcessor()


def test_sigmoid_comes_before_the_resize(processor) -> None:
    """Columns of logits -1 | +10: the output pixel at 1/8 of the way between them is 0.875·σ(-1) + 0.125·σ(10)
    = 0.36 (out), while resizing the logits would give σ(0.375) = 0.59 (in); 3/8 of the way gives 0.54 (in)."""
    masks = torch.full((1, 2, 2), 10.0)
    masks[:, :, 0] = -1.0
    outputs = _outputs([[0.9]], [[0.5, 0.5, 1.0, 1.0]], masks)
    (result,) = processor.post_process_instance_segmentation(outputs, target_sizes=[(8, 8)])
    row = result["masks"][0, 0].tolist()
    assert row == [False, False, False, True, True, True, True, True]
    assert result["masks"].dtype == torch.bool and result["masks"].shape == (1, 8, 8)


def test_masks_are_zero_outside_their_box(processor) -> None:
    masks = torch.full((1, 4, 4), 10.0)
    # box (x1, y1, x2, y2) = (2.5, 1, 6, 3) in a 16×16 image: columns 3..5, rows 1..2 stay
    outputs = _outputs([[0.9]], [[4.25 / 16, 2 / 16, 3.5 / 16, 2 / 16]], masks)
    (result,) = processor.post_process_instance_segmentation(outputs, target_sizes=[(16, 16)])
    expected = torch.zeros(16, 16, dtype=torch.bool)
    expected[1:3, 3:6] = True
    assert torch.equal(result["masks"][0], expected)
    assert torch.allclose(result["boxes"], torch.tensor([[2.5, 1.0, 6.0, 3.0]]))


def test_threshold_top_pairs_and_clipped_boxes(processor) -> None:
    masks = torch.full((2, 2, 2), 0.1)  # probability 0.525 everywhere
    outputs = _outputs([[0.2, 0.8], [0.6, 0.4]], [[0.1, 0.5, 0.4, 0.2], [0.5, 0.5, 0.2, 0.2]], masks)
    (result,) = processor.post_process_instance_segmentation(outputs, threshold=0.5, target_sizes=[(10, 20)],
                                                             nms_threshold=None)
    assert result["labels"].tolist() == [1, 0]
    assert torch.allclose(result["scores"], torch.tensor([0.8, 0.6]))
    # the first box reaches past the left edge: clipped to the image, as D-FINE-seg
    assert torch.allclose(result["boxes"], torch.tensor([[0.0, 4.0, 6.0, 6.0], [8.0, 4.0, 12.0, 6.0]]))
    # 0.525 passes mask_threshold 0.5 inside the boxes; 0.6 empties the masks
    assert result["masks"].shape == (2, 10, 20) and result["masks"][1, 4:6, 8:12].all()
    (stricter,) = processor.post_process_instance_segmentation(outputs, threshold=0.5, target_sizes=[(10, 20)],
                                                               mask_threshold=0.6)
    assert not stricter["masks"].any()


def test_class_agnostic_nms_is_optional(processor) -> None:
    masks = torch.zeros(2, 2, 2)
    boxes = [[0.5, 0.5, 0.4, 0.4], [0.5, 0.5, 0.4, 0.38]]  # IoU 0.95, different classes
    outputs = _outputs([[0.9, 0.01], [0.01, 0.8]], boxes, masks)
    (with_nms,) = processor.post_process_instance_segmentation(outputs, target_sizes=[(100, 100)])
    assert with_nms["labels"].tolist() == [0]
    (without,) = processor.post_process_instance_segmentation(outputs, target_sizes=[(100, 100)],
                                                              nms_threshold=None)
    assert without["labels"].tolist() == [0, 1]


def test_without_target_sizes_masks_are_at_the_input_size(processor) -> None:
    outputs = _outputs([[0.9]], [[0.5, 0.5, 0.5, 0.5]], torch.full((1, 5, 6), 10.0))
    (result,) = processor.post_process_instance_segmentation(outputs)
    assert result["masks"].shape == (1, 20, 24)
    assert torch.allclose(result["boxes"], torch.tensor([[0.25, 0.25, 0.75, 0.75]]))
    assert result["masks"][0].sum() == 10 * 12


def test_bad_outputs_are_one_line_errors(processor) -> None:
    detection = {"logits": torch.zeros(1, 3, 2), "pred_boxes": torch.zeros(1, 3, 4)}
    with pytest.raises(ValueError, match="no pred_masks: instance segmentation needs a DFineForInstanceSegmentation"):
        processor.post_process_instance_segmentation(detection)
    outputs = _outputs([[0.9]], [[0.5, 0.5, 0.5, 0.5]], torch.zeros(1, 4, 4))
    with pytest.raises(ValueError, match="one \\(height, width\\) per image: 1 expected"):
        processor.post_process_instance_segmentation(outputs, target_sizes=[(4, 4), (4, 4)])


def test_model_outputs_end_to_end(processor) -> None:
    torch.manual_seed(0)
    model = dfine.DFineForInstanceSegmentation(dfine.DFineConfig.from_preset("dfine-n-coco", num_labels=2)).eval()
    with torch.no_grad():
        outputs = model(torch.rand(1, 3, 256, 256))
    (result,) = processor.post_process_instance_segmentation(outputs, threshold=0.0, target_sizes=[(120, 90)],
                                                             nms_threshold=None)
    assert result["masks"].shape == (300, 120, 90) and len(result["scores"]) == 300
    detections = processor.post_process_object_detection(outputs, threshold=0.0, target_sizes=[(120, 90)])[0]
    assert torch.equal(result["labels"], detections["labels"])  # the same pairs, in the same order


def test_rle_round_trips_and_goes_into_coco_results() -> None:
    masks = torch.zeros(2, 5, 7, dtype=torch.bool)
    masks[0, 1:3, 2:5] = True
    masks[1, 4, 6] = True
    rles = mask_to_rle(masks)
    assert [r["size"] for r in rles] == [[5, 7], [5, 7]]
    decoded = coco_mask.decode([{"size": r["size"], "counts": r["counts"].encode()} for r in rles])
    assert np.array_equal(decoded.transpose(2, 0, 1), masks.numpy().astype(np.uint8))
    assert mask_to_rle(torch.zeros(0, 5, 7, dtype=torch.bool)) == []

    result = {"scores": torch.tensor([0.9, 0.8]), "labels": torch.tensor([1, 0]),
              "boxes": torch.tensor([[2.0, 1.0, 5.0, 3.0], [6.0, 4.0, 7.0, 5.0]]), "masks": masks}
    records = to_coco_results([result], [7])
    assert [r["segmentation"] for r in records] == rles
    assert records[0]["bbox"] == [2.0, 1.0, 3.0, 2.0]
    json.dumps(records)  # plain data only
    boxes_only = to_coco_results([{k: v for k, v in result.items() if k != "masks"}], [7])
    assert all("segmentation" not in r for r in boxes_only)
