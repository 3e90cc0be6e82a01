"""DFineForInstanceSegmentation: the D-FINE-seg mask branch's shapes and names for every size, its outputs in eval
and training mode, its files, and what happens when detection and segmentation checkpoints are mixed."""

from __future__ import annotations

import json

import pytest
import torch

import dfine
from dfine.errors import CheckpointError, ModelInputError
from dfine.model.network import DFineNetwork

# D-FINE-seg 0.6.2's mask tensors (names in its files) per size: the pixel decoder's input channels, finest first
# (N: the backbone's stride-8 map, 256 channels, then the encoder's two levels), D and d.
_MASK_BRANCH = {"n": ((256, 128, 128), 128, 128), "s": ((256, 256, 256), 256, 256),
                "m": ((256, 256, 256), 256, 256), "l": ((256, 256, 256), 256, 256),
                "x": ((384, 384, 384), 256, 256)}


def _dfine_seg_mask_shapes(size: str) -> dict[str, tuple[int, ...]]:
    channels, mask_dim, hidden = _MASK_BRANCH[size]
    shapes: dict[str, tuple[int, ...]] = {}
    for i, c in enumerate(channels):
        shapes[f"decoder.mask_decoder.lateral.{i}.weight"] = (mask_dim, c, 1, 1)
        shapes[f"decoder.mask_decoder.bn.{i}.weight"] = shapes[f"decoder.mask_decoder.bn.{i}.bias"] = (mask_dim,)
    for name in ("fusion_conv", "up_conv"):
        shapes[f"decoder.mask_decoder.{name}.weight"] = (mask_dim, mask_dim, 3, 3)
    for name in ("fusion_norm", "bn1"):
        shapes[f"decoder.mask_decoder.{name}.weight"] = shapes[f"decoder.mask_decoder.{name}.bias"] = (mask_dim,)
    for k, (rows, cols) in enumerate(((hidden, hidden), (hidden, hidden), (mask_dim, hidden))):
        shapes[f"decoder.mask_head.layers.{k}.weight"] = (rows, cols)
        shapes[f"decoder.mask_head.layers.{k}.bias"] = (rows,)
    return shapes


@pytest.mark.parametrize("size", ["n", "s", "m", "l", "x"])
def test_mask_branch_has_dfine_segs_21_tensors(size: str) -> None:
    config = dfine.DFineConfig.from_preset(f"dfine-{size}-coco", use_mask_head=True)
    with torch.device("meta"):
        network = DFineNetwork(config)
    ours = {f"decoder.{k}": tuple(v.shape) for k, v in network.state_dict().items() if k.startswith("mask_")}
    assert ours == _dfine_seg_mask_shapes(size)
    assert len(ours) == 21


@pytest.fixture(scope="module")
def nano_seg() -> dfine.DFineForInstanceSegmentation:
    torch.manual_seed(0)
    return dfine.DFineForInstanceSegmentation(dfine.DFineConfig.from_preset("dfine-n-coco", num_labels=3,
                                                                                num_queries=50)).eval()


@pytest.fixture(scope="module")
def pixels() -> torch.Tensor:
    return torch.rand(2, 3, 160, 160, generator=torch.Generator().manual_seed(1))


def _labels(with_masks: bool) -> list[dict[str, torch.Tensor]]:
    labels = []
    for _ in range(2):
        target = {"class_labels": torch.tensor([0, 2]), "boxes": torch.tensor([[0.5, 0.5, 0.3, 0.2],
                                                                              [0.3, 0.6, 0.2, 0.4]])}
        if with_masks:
            target["masks"] = torch.ones(2, 160, 160)
        labels.append(target)
    return labels


def test_eval_outputs_masks_of_the_evaluated_layer(nano_seg, pixels) -> None:
    with torch.no_grad():
        out = nano_seg(pixels)
    assert out.pred_masks.shape == (2, 50, 40, 40)
    assert out.intermediate_predicted_masks.shape == (2, 1, 50, 40, 40)
    assert torch.equal(out.pred_masks, out.intermediate_predicted_masks[:, -1])
    assert out.logits.shape == (2, 50, 3)


def test_training_outputs_every_layers_masks_denoising_queries_first(nano_seg, pixels) -> None:
    nano_seg.train()
    try:
        out = nano_seg(pixels, labels=_labels(with_masks=True))
        boxes_only = nano_seg(pixels, labels=_labels(with_masks=False))
    finally:
        nano_seg.eval()
    num_dn, num_queries = out.denoising_meta_values["dn_num_split"]
    assert num_dn > 0 and num_queries == 50
    layers = nano_seg.config.decoder_layers
    assert out.intermediate_predicted_masks.shape == (2, layers, num_dn + 50, 40, 40)
    assert out.pred_masks.shape == (2, num_dn + 50, 40, 40)  # like logits in training: denoising queries first
    layer_entries = out.auxiliary_outputs[:-1]  # the last entry is the encoder proposals: no masks
    assert len(layer_entries) == layers - 1
    for i, entry in enumerate(layer_entries):
        assert torch.equal(entry["pred_masks"], out.intermediate_predicted_masks[:, i, num_dn:])
    assert "pred_masks" not in out.auxiliary_outputs[-1]
    # a batch of boxes only trains detection alone, as D-FINE-seg
    assert boxes_only.pred_masks is None and boxes_only.loss is not None


def test_config_json_has_the_mask_fields_only_for_segmentation(tmp_path) -> None:
    detector = dfine.DFineConfig.from_preset("dfine-n-coco").to_dict()
    assert "use_mask_head" not in detector and "mask_dim" not in detector
    assert detector["architectures"] == ["DFineForObjectDetection"]
    seg = dfine.DFineConfig.from_preset("dfine-n-coco", use_mask_head=True)
    assert seg.to_dict()["use_mask_head"] is True and seg.to_dict()["mask_dim"] == 128  # N: d_model
    assert seg.mask_low_level_stage == 2
    assert dfine.DFineConfig.from_preset("dfine-s-coco", use_mask_head=True).mask_low_level_stage is None
    with pytest.raises(dfine.ConfigError, match="mask_dim must be a positive multiple of 32, got 100"):
        dfine.DFineConfig.from_preset("dfine-s-coco", use_mask_head=True, mask_dim=100)


def test_save_pretrained_folder_loads_back(nano_seg, pixels, tmp_path) -> None:
    nano_seg.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["use_mask_head"] is True and config["architectures"] == ["DFineForInstanceSegmentation"]
    again = dfine.DFineForInstanceSegmentation.from_pretrained(tmp_path)
    with torch.no_grad():
        assert torch.equal(again(pixels).pred_masks, nano_seg(pixels).pred_masks)
    assert torch.equal(again.model.mask_decoder.up_conv.weight, nano_seg.model.mask_decoder.up_conv.weight)


def test_detection_folder_starts_a_fresh_mask_branch(saved_nano, caplog) -> None:
    directory, detector = saved_nano
    model = dfine.DFineForInstanceSegmentation.from_pretrained(directory)
    assert "the mask branch of DFineForInstanceSegmentation (21 tensors) starts freshly initialised" in caplog.text
    assert model.config.use_mask_head and model.config.mask_dim == 128
    key = "model.decoder.class_embed.2.weight"
    assert torch.equal(model.state_dict()[key], detector.state_dict()[key])


def test_a_partial_mask_branch_is_an_error(nano_seg, tmp_path) -> None:
    state = {k: v for k, v in nano_seg.state_dict().items() if "mask_decoder.fusion" not in k}
    nano_seg.config.save_pretrained(tmp_path)
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in state.items()}, str(tmp_path / "model.safetensors"))
    with pytest.raises(CheckpointError, match=r"3 missing keys: model\.mask_decoder\.fusion_conv\.weight"):
        dfine.DFineForInstanceSegmentation.from_pretrained(tmp_path)


def test_detector_never_gets_a_mask_branch() -> None:
    config = dfine.DFineConfig.from_preset("dfine-n-coco", use_mask_head=True)
    torch.manual_seed(0)
    detector = dfine.DFineForObjectDetection(config)
    torch.manual_seed(0)
    plain = dfine.DFineForObjectDetection(dfine.DFineConfig.from_preset("dfine-n-coco"))
    assert not detector.config.use_mask_head and config.use_mask_head  # the caller's config is not changed
    assert detector.config.to_dict()["architectures"] == ["DFineForObjectDetection"]
    assert detector.state_dict().keys() == plain.state_dict().keys()


def test_nano_masks_need_pixel_values(nano_seg) -> None:
    embeds = [torch.zeros(1, 128, 10, 10), torch.zeros(1, 128, 5, 5)]
    with pytest.raises(ModelInputError, match="mask branch reads a backbone map"):
        nano_seg(None, inputs_embeds=embeds)


def test_deploy_and_fast_forms_give_the_models_masks_and_edge_spreads(nano_seg, pixels) -> None:
    """In float64 the deploy form computes the model's outputs exactly (masks and edge spreads included); the fast
    form in float32 agrees to the rounding of its folded float32 weights."""
    import copy

    model64 = copy.deepcopy(nano_seg).double()
    with torch.no_grad():
        expected = model64(pixels.double(), output_uncertainty=True)
        deployed = model64.deploy(160).set_uncertainty()(pixels.double())
        fast = nano_seg.optimize_for_inference(image_size=160, uncertainty=True)
        got = fast(pixels)
    assert type(deployed).__name__ == type(got).__name__ == "SegmentationWithUncertainty"
    assert fast.mode == "deploy+float32"
    for name in ("logits", "pred_boxes", "pred_masks", "edge_uncertainty"):
        assert (getattr(deployed, name) - getattr(expected, name)).abs().max() < 1e-7, name
        torch.testing.assert_close(getattr(got, name).double(), getattr(expected, name), atol=1e-4, rtol=1e-4)
    assert type(nano_seg.deploy(160)(pixels)).__name__ == "SegmentationOutput"  # no spreads unless asked


def test_fast_form_in_bf16_keeps_the_masks_of_float32() -> None:
    """bf16 runs the body and the pixel decoder in bf16, the head and the mask products in float32: each of
    float32's ten best queries has a bf16 query with nearly the same box whose mask probabilities are nearly the
    same (queries are paired by box, as bf16 may select or order them differently)."""
    from hf_oracle import natural_images
    from seghelpers import tiny_segmentation_model

    model = tiny_segmentation_model()
    processor = dfine.DFineImageProcessor(size={"height": 160, "width": 160})
    pixels = processor(natural_images(2, 160, seed=3))["pixel_values"]
    with torch.no_grad():
        reference = model(pixels)
        bf16 = model.optimize_for_inference(dtype="bf16", image_size=160)(pixels)
    assert bf16.pred_masks.dtype == torch.float32
    assert not torch.equal(bf16.pred_masks, reference.pred_masks)  # it did run in bf16
    for b in range(2):
        best = reference.logits[b].sigmoid().amax(-1).topk(10).indices
        distance, paired = (reference.pred_boxes[b, best, None] - bf16.pred_boxes[b][None]).abs().amax(-1).min(1)
        assert distance.max() < 0.01  # 1.6 px at 160 (measured: at most 0.0034)
        expected, got = reference.pred_masks[b, best].sigmoid(), bf16.pred_masks[b, paired].sigmoid()
        assert (expected - got).abs().mean() < 0.005  # measured 0.0011
        assert ((expected > 0.5) != (got > 0.5)).float().mean() < 0.01  # measured: no pixel flips


def test_fast_form_with_fewer_decoder_layers_gives_that_depths_masks(nano_seg, pixels) -> None:
    import copy

    with torch.no_grad():
        expected = nano_seg(pixels)
        shallow = copy.deepcopy(nano_seg).set_decoder_layers(1)(pixels)
        fast = nano_seg.optimize_for_inference(image_size=160, decoder_layers=1)(pixels)
    torch.testing.assert_close(fast.pred_masks, shallow.pred_masks, atol=1e-4, rtol=0)
    assert not torch.allclose(shallow.pred_masks, expected.pred_masks, atol=1e-2)  # one layer is another model


def test_mask_logits_backward_skips_masks_without_gradient_and_changes_nothing() -> None:
    """The mask losses read a few matched masks: the sparse backward gives the dense einsum's gradients exactly."""
    from dfine.model.mask_head import _SparseGradientMaskLogits

    torch.manual_seed(0)
    embedding = torch.randn(3, 2, 7, 5, dtype=torch.float64, requires_grad=True)
    pixels = torch.randn(2, 5, 4, 6, dtype=torch.float64, requires_grad=True)
    grad = torch.zeros(2, 3, 7, 4, 6, dtype=torch.float64)
    grad[0, 1, 2] = torch.randn(4, 6, dtype=torch.float64)
    grad[1, 2, 6] = torch.randn(4, 6, dtype=torch.float64)
    dense = torch.einsum("lbqc,bchw->blqhw", embedding, pixels)
    expected = torch.autograd.grad(dense, (embedding, pixels), grad)
    sparse = _SparseGradientMaskLogits.apply(embedding, pixels)
    assert torch.equal(sparse, dense)
    got = torch.autograd.grad(sparse, (embedding, pixels), grad)
    assert all(torch.allclose(g, e, rtol=0, atol=1e-12) for g, e in zip(got, expected, strict=True))
    assert torch.autograd.gradcheck(_SparseGradientMaskLogits.apply, (embedding, pixels))
