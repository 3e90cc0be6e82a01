"""post_process_object_detection(return_uncertainty=True): each detection keeps its own query's edge spreads, in
pixels of its image, and one number per box."""

from __future__ import annotations

import pytest
import torch

from dfine.processing.processor import DFineImageProcessor

# three queries, two classes: query 2 scores best (class 1), then query 0 (class 0); query 1 stays below 0.5
LOGITS = torch.tensor([[[2.0, -5.0], [-5.0, -5.0], [-5.0, 4.0]]])
BOXES = torch.tensor([[[0.5, 0.5, 0.2, 0.4], [0.1, 0.1, 0.1, 0.1], [0.3, 0.6, 0.4, 0.2]]])  # cxcywh
EDGES = torch.tensor([[[0.01, 0.02, 0.03, 0.04], [0.5, 0.5, 0.5, 0.5], [0.001, 0.002, 0.003, 0.004]]])


def _post(outputs, **options):
    return DFineImageProcessor().post_process_object_detection(outputs, return_uncertainty=True, **options)


def test_each_detection_carries_its_own_querys_spreads_in_pixels() -> None:
    [result] = _post({"logits": LOGITS, "pred_boxes": BOXES, "edge_uncertainty": EDGES}, target_sizes=[[200, 100]])
    assert result["labels"].tolist() == [1, 0]  # query 2, then query 0
    scale = torch.tensor([100.0, 200.0, 100.0, 200.0])  # x edges in widths, y edges in heights
    torch.testing.assert_close(result["edge_uncertainty"], torch.stack([EDGES[0, 2], EDGES[0, 0]]) * scale)
    # one number per box: σ over the side along its axis, averaged (query 2's box is 40 x 40 pixels)
    expected_first = (0.1 / 40 + 0.4 / 40 + 0.3 / 40 + 0.8 / 40) / 4
    assert result["uncertainty"][0].item() == pytest.approx(expected_first)
    assert result["uncertainty"][1] > result["uncertainty"][0]  # query 0 is ten times less sure
    plain = DFineImageProcessor().post_process_object_detection({"logits": LOGITS, "pred_boxes": BOXES},
                                                                target_sizes=[[200, 100]])[0]
    assert torch.equal(plain["boxes"], result["boxes"]) and torch.equal(plain["scores"], result["scores"])


def test_normalised_boxes_keep_normalised_spreads_and_softmax_scoring_works_too() -> None:
    logits = torch.cat([LOGITS, torch.zeros(1, 3, 1)], dim=-1)  # a "no object" column
    [result] = _post({"logits": logits, "pred_boxes": BOXES, "edge_uncertainty": EDGES}, use_focal_loss=False,
                     threshold=0.0)
    assert result["edge_uncertainty"].shape == (3, 4) and result["uncertainty"].shape == (3,)
    torch.testing.assert_close(result["edge_uncertainty"], EDGES[0])  # query order, no scaling


def test_outputs_without_spreads_or_of_the_wrong_shape_are_one_line_errors() -> None:
    with pytest.raises(ValueError, match="output_uncertainty=True"):
        _post({"logits": LOGITS, "pred_boxes": BOXES})
    with pytest.raises(ValueError, match=r"must be \(batch, queries, 4\) = \(1, 3, 4\)"):
        _post({"logits": LOGITS, "pred_boxes": BOXES, "edge_uncertainty": EDGES[:, :2]})
