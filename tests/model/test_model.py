"""Model behaviour: shapes, training outputs, gradients reach every parameter, batch independence."""

from __future__ import annotations

import pytest
import torch
from hf_oracle import randomize_weights

import dfine


def _labels():
    return [
        {"class_labels": torch.tensor([0, 2]), "boxes": torch.tensor([[0.5, 0.5, 0.2, 0.3], [0.3, 0.3, 0.1, 0.1]])},
        {"class_labels": torch.tensor([1]), "boxes": torch.tensor([[0.4, 0.6, 0.3, 0.3]])},
    ]


@pytest.mark.parametrize("size", ["n", "s", "m"])
def test_every_trainable_parameter_gets_a_gradient(size: str) -> None:
    config = dfine.DFineConfig.from_preset(f"dfine-{size}-coco", num_labels=3)
    model = dfine.DFineForObjectDetection(config).train()
    randomize_weights(model, seed=1)  # zero-initialised last layers would block gradients on step 0
    out = model(torch.rand(2, 3, 256, 256), labels=_labels())
    out.loss.backward()
    missing = [n for n, p in model.named_parameters() if p.requires_grad and (p.grad is None or not p.grad.any())]
    assert missing == []
    assert torch.isfinite(out.loss)


def test_training_outputs_follow_the_contract() -> None:
    config = dfine.DFineConfig.from_preset("dfine-n-coco", num_labels=3)
    model = dfine.DFineForObjectDetection(config).train()
    out = model(torch.rand(2, 3, 256, 256), labels=_labels())
    meta = out.denoising_meta_values
    num_dn = meta["dn_num_split"][0]
    assert meta["dn_num_group"] == 50 and num_dn == 2 * 2 * 50
    assert out.intermediate_logits.shape == (2, 4, num_dn + 300, 3)  # pre + 3 layers
    assert out.intermediate_predicted_corners.shape == (2, 3, num_dn + 300, 132)
    assert out.logits.shape == (2, num_dn + 300, 3)
    assert torch.allclose(out.loss, sum(out.loss_dict.values()))
    assert len(out.loss_dict) == 38


def test_eval_outputs_are_batch_independent() -> None:
    config = dfine.DFineConfig.from_preset("dfine-n-coco")
    model = dfine.DFineForObjectDetection(config).eval()
    randomize_weights(model, seed=2)
    images = torch.rand(2, 3, 320, 320)
    with torch.no_grad():
        both = model(images)
        first = model(images[:1])
    assert torch.allclose(both.logits[:1], first.logits, atol=1e-5)
    assert torch.allclose(both.pred_boxes[:1], first.pred_boxes, atol=1e-6)


def test_non_square_and_other_sizes_run() -> None:
    model = dfine.DFineForObjectDetection(dfine.DFineConfig.from_preset("dfine-s-coco")).eval()
    with torch.no_grad():
        out = model(torch.rand(1, 3, 320, 480))
    assert out.logits.shape == (1, 300, 80) and torch.isfinite(out.pred_boxes).all()


def test_too_small_input_is_a_clear_error() -> None:
    model = dfine.DFineForObjectDetection(dfine.DFineConfig.from_preset("dfine-n-coco")).eval()
    with pytest.raises(dfine.DFineError, match="a 160x160 input gives 125 encoder tokens, fewer than the 300 queries"):
        model(torch.rand(1, 3, 160, 160))
