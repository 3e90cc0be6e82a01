"""Deploy form: equal to the training form for every size preset, lean, and free of host synchronisation."""

from __future__ import annotations

import copy

import pytest
import torch
from hf_oracle import calibrate_batch_norms, natural_images, randomize_weights, to_pixel_values

import dfine
from dfine.errors import DFineError
from dfine.export.benchmark import peak_activation_bytes
from dfine.export.verify import match_detections, top_detections
from dfine.model.deploy.deployed import DeployedDFine, DeployELAN, DeployStem, deploy
from dfine.model.deploy.fuse import FusedConv, fuse_convolutions
from dfine.model.layers import FrozenBatchNorm2d, RepNCSPELAN4, RepVggBlock

SIZES = ["n", "s", "m", pytest.param("l", marks=pytest.mark.slow), pytest.param("x", marks=pytest.mark.slow)]
# float64 exactness: S shares N's backbone and M has S's three levels, so S adds nothing there
SIZES64 = ["n", "m", pytest.param("l", marks=pytest.mark.slow), pytest.param("x", marks=pytest.mark.slow)]


def _float64_outputs(config: dfine.DFineConfig) -> tuple:
    """Training-form and deploy-form outputs in float64, with the usual oracle weights (every parameter perturbed,
    batch norm calibrated on real activations), whose chaotic amplification of rounding only float64 keeps below
    any tolerance."""
    model = dfine.DFineForObjectDetection(config).eval()
    randomize_weights(model, seed=1)
    pixels = to_pixel_values(natural_images(1, 320, seed=2), 320)
    calibrate_batch_norms(model, pixels)
    model = model.double()
    deployed = deploy(model, 320)
    with torch.inference_mode():
        return model(pixels.double()), deployed(pixels.double())


@pytest.mark.parametrize("size", SIZES64)
def test_deploy_is_exact_in_float64(size: str) -> None:
    """The folding and merging are exact maths: in float64 deploy and training form agree to ~1e-9."""
    reference, output = _float64_outputs(dfine.DFineConfig.from_preset(f"dfine-{size}-coco"))
    assert (reference.logits - output.logits).abs().max().item() < 1e-7
    assert (reference.pred_boxes - output.pred_boxes).abs().max().item() < 1e-8


def test_deploy_is_exact_with_discrete_sampling() -> None:
    """decoder_method="discrete" (nearest-cell sampling) folds as exactly as the default bilinear sampling."""
    reference, output = _float64_outputs(dfine.DFineConfig.from_preset("dfine-n-coco", decoder_method="discrete"))
    assert (reference.logits - output.logits).abs().max().item() < 1e-7
    assert (reference.pred_boxes - output.pred_boxes).abs().max().item() < 1e-8


@pytest.mark.parametrize("size", SIZES)
def test_deploy_matches_training_form_in_float32(size: str, synthetic_model) -> None:
    model = synthetic_model(f"dfine-{size}-coco")
    pixels = to_pixel_values(natural_images(1, 320, seed=3), 320)
    deployed = model.deploy(320)
    with torch.inference_mode():
        reference = model(pixels)
        output = deployed(pixels)
    ref = top_detections(reference.logits.numpy(), reference.pred_boxes.numpy(), k=None)
    got = top_detections(output.logits.numpy(), output.pred_boxes.numpy(), k=None)
    report = match_detections(ref, got, top=100, score_tol=1e-4, box_tol=1e-4)
    # (compared as detections: a near-tie in the top-300 query selection may order queries differently)
    assert report.fraction == 1.0, report.summary() + " " + report.worst


def test_deploy_structure_and_source_untouched(model_n) -> None:
    before = {k: v.clone() for k, v in model_n.state_dict().items()}
    deployed = deploy(model_n, 320)
    assert isinstance(deployed, DeployedDFine) and not deployed.training
    modules = list(deployed.modules())
    assert not any(isinstance(m, torch.nn.BatchNorm2d | FrozenBatchNorm2d | RepVggBlock) for m in modules)
    assert sum(isinstance(m, FusedConv) for m in modules) > 50
    names = [n for n, _ in deployed.named_parameters()]
    assert not any("denoising" in n or "lqe_layers" in n or "class_embed" in n for n in names)
    assert len(deployed.head.layers) == model_n.model.decoder.eval_idx + 1
    assert deployed.head.anchors.shape == (1, 20 * 20 + 10 * 10, 4)  # N: strides 16 and 32 at 320
    assert torch.isfinite(deployed.head.anchors).all()  # invalid anchors are finite, also in fp16/bf16
    after = model_n.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert isinstance(model_n.model.backbone.model.embedder.pool, torch.nn.MaxPool2d)
    assert isinstance(deployed.body.backbone.model.embedder, DeployStem)
    assert not any(isinstance(m, RepNCSPELAN4) for m in modules)
    assert sum(isinstance(m, DeployELAN) for m in modules) == 2 * (len(model_n.config.encoder_in_channels) - 1)


def test_deploy_elan_splits_the_convolution_not_its_output(model_n) -> None:
    """The GELAN block's first 1×1 conv becomes two convs over halves of its output channels (no channel split of
    a map, which ONNX Runtime's blocked CPU layout cannot keep): the same output."""
    block = fuse_convolutions(copy.deepcopy(model_n.model.encoder.fpn_blocks[0])).double()
    fast = DeployELAN(copy.deepcopy(block))
    maps = torch.randn(2, 2 * block.split, 12, 10, dtype=torch.float64)
    with torch.inference_mode():
        assert (block(maps) - fast(maps)).abs().max().item() < 1e-12
    assert fast.conv1_first.conv.out_channels == fast.conv1_second.conv.out_channels == block.split


def test_deploy_stem_equals_the_stem_with_a_lower_peak(model_n) -> None:
    """The deploy stem splits stem3 instead of concatenating: same output, and the stride-2 temporaries that set
    the peak memory of a large-batch forward are freed early."""
    stem = fuse_convolutions(copy.deepcopy(model_n.model.backbone.model.embedder)).double()
    fast = DeployStem(copy.deepcopy(stem))
    pixels = torch.rand(2, 3, 128, 128, dtype=torch.float64)
    with torch.inference_mode():
        reference, output = stem(pixels), fast(pixels)
        peaks = [peak_activation_bytes(lambda module=module: module(pixels)) for module in (stem, fast)]
    assert (reference - output).abs().max().item() < 1e-12
    # training form at its peak holds padded x, pool(x), branch and their concatenation (2x) = 5 stride-2 maps;
    # the deploy form at most padded x, its half-width branch, the pooling temporary and pool(x) = 3.5
    assert peaks[1] < 0.75 * peaks[0], peaks


def test_max_pool_op_for_exporters_gives_identical_outputs(model_n) -> None:
    deployed = deploy(model_n, 320)
    pixels = to_pixel_values(natural_images(1, 320, seed=5), 320)
    with torch.inference_mode():
        shifted = deployed(pixels)
        assert deployed.use_max_pool_op() is deployed
        assert isinstance(deployed.body.backbone.model.embedder.pool, torch.nn.MaxPool2d)
        pooled = deployed(pixels)
    assert torch.equal(shifted.logits, pooled.logits) and torch.equal(shifted.pred_boxes, pooled.pred_boxes)


def test_deploy_runs_other_sizes_in_eager(model_n) -> None:
    deployed = deploy(model_n, 320)
    pixels = to_pixel_values(natural_images(1, 384, seed=4), 384)
    with torch.inference_mode():
        reference = model_n(pixels)
        output = deployed(pixels)
    assert (reference.pred_boxes - output.pred_boxes).abs().max().item() < 1e-4


def test_bad_image_size_is_one_line(model_n) -> None:
    with pytest.raises(DFineError, match="image size must be a positive multiple of 32, got 300"):
        deploy(model_n, 300)


_HOST_SYNCS = ["item", "cpu", "tolist", "numpy", "__bool__", "__int__", "__float__", "nonzero"]


@pytest.mark.parametrize("mode", ["deploy", "bf16-channels-last", "training-form-eval"])
def test_forward_has_no_host_round_trips(mode: str, model_n, monkeypatch) -> None:
    """What makes a forward capturable in a CUDA graph: no .item()/.cpu()/.tolist()/.numpy(), no tensor from
    Python data. Checked on the CPU by making those raise during the forward."""
    if mode == "deploy":
        network = deploy(model_n, 320)
    elif mode == "bf16-channels-last":
        network = model_n.optimize_for_inference(dtype=torch.bfloat16, image_size=320)
    else:
        network = model_n
    pixels = torch.rand(2, 3, 320, 320)
    with torch.inference_mode():
        network(pixels)  # warm-up fills the training form's caches (anchors, position embedding)

        def forbidden(*args, **kwargs):
            raise AssertionError("host round trip inside forward")

        for name in _HOST_SYNCS:
            monkeypatch.setattr(torch.Tensor, name, forbidden)
        monkeypatch.setattr(torch, "tensor", forbidden)
        network(pixels)


def test_bf16_agrees_with_fp32_roughly_on_cpu(model_n) -> None:
    pixels = to_pixel_values(natural_images(2, 320, seed=5), 320)
    fast = model_n.optimize_for_inference(dtype="bfloat16", image_size=320)
    assert fast.deployed.body_dtype == torch.bfloat16 and fast.deployed.head_dtype == torch.float32
    with torch.inference_mode():
        reference = model_n(pixels)
        output = fast(pixels)
    assert output.logits.dtype == torch.float32
    ref = top_detections(reference.logits.numpy(), reference.pred_boxes.numpy(), k=None)
    got = top_detections(output.logits.numpy(), output.pred_boxes.numpy(), k=None)
    # bf16 keeps 8 bits of mantissa: boxes within 4 px at 640 for most of the top 100, the same labels
    report = match_detections(ref, got, top=100, score_tol=0.05, box_tol=4 / 640)
    assert report.fraction >= 0.8, report.summary()
