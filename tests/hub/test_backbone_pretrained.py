"""ImageNet backbone weights: timm's HGNetv2 state dicts load into our backbone and give the same feature maps."""

from __future__ import annotations

import time

import pytest
import torch

from dfine.config.presets import preset_config
from dfine.errors import CheckpointError, ConfigError, DFineError
from dfine.hub.backbone import convert_timm_hgnetv2, infer_variant, load_pretrained_backbone, timm_repo_id
from dfine.model import DFineForObjectDetection, DFineModel

timm = pytest.importorskip("timm")

# (D-FINE size, timm variant): N/S use B0 with LAB, M B2 with LAB, L B4 and X B5 without (timm: LAB for B0-B3).
CASES = [("n", "hgnetv2_b0"), ("m", "hgnetv2_b2"), ("l", "hgnetv2_b4"), ("x", "hgnetv2_b5")]


@torch.no_grad()
def _timm_model(name: str, seed: int = 0) -> torch.nn.Module:
    """A timm HGNetv2 with random weights, batch-norm statistics and affine-block values (none left at init)."""
    torch.manual_seed(seed)
    model = timm.create_model(name, pretrained=False)
    g = torch.Generator().manual_seed(seed)
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            n = module.num_features
            module.weight.copy_(torch.rand(n, generator=g) + 0.5)
            module.bias.copy_(torch.randn(n, generator=g) * 0.1)
            module.running_mean.copy_(torch.randn(n, generator=g) * 0.1)
            module.running_var.copy_(torch.rand(n, generator=g) + 0.5)
        elif type(module).__name__ == "LearnableAffineBlock":
            module.scale.copy_(torch.rand(1, generator=g) + 0.5)
            module.bias.copy_(torch.randn(1, generator=g) * 0.1)
    return model.eval()


def _our_stages(model: DFineModel, x: torch.Tensor) -> list[torch.Tensor]:
    backbone = model.backbone.model
    h = backbone.embedder(x)
    outputs = []
    for stage in backbone.encoder.stages:
        h = stage(h)
        outputs.append(h)
    return outputs


@pytest.mark.parametrize("frozen_bn", [False, True], ids=["bn", "frozen_bn"])
@pytest.mark.parametrize(("size", "timm_name"), CASES, ids=[c[0] for c in CASES])
@torch.no_grad()
def test_timm_weights_give_same_features(size, timm_name, frozen_bn, tmp_path):
    from safetensors.torch import save_file

    reference = _timm_model(timm_name)
    path = tmp_path / "model.safetensors"
    save_file({k: v.contiguous() for k, v in reference.state_dict().items()}, str(path))

    config = preset_config(f"dfine-{size}-coco", freeze_backbone_batch_norms=frozen_bn)
    model = DFineModel(config).eval()
    assert infer_variant(config.backbone_config) == timm_name[-2:].upper()
    load_pretrained_backbone(model, path=path)

    x = torch.rand(2, 3, 256, 256, generator=torch.Generator().manual_seed(1))
    expected = reference.forward_intermediates(x, indices=[0, 1, 2, 3], intermediates_only=True)
    ours = _our_stages(model, x)
    diffs = [float((a - b).abs().max()) for a, b in zip(ours, expected, strict=True)]
    print(f"{size} ({timm_name}, {'frozen ' if frozen_bn else ''}BN) stage max|diff|: "
          + ", ".join(f"{d:.2e}" for d in diffs))
    assert max(diffs) <= 1e-4
    # the features D-FINE actually uses (stage indices 1..4 = timm 0..3)
    used = model.backbone(x)
    for ours_map, index in zip(used, config.backbone_config.out_indices, strict=True):
        torch.testing.assert_close(ours_map, expected[index - 1], atol=1e-4, rtol=0)


def test_convert_names_and_head_dropped():
    state = _timm_model("hgnetv2_b0").state_dict()
    converted = convert_timm_hgnetv2(state)
    assert not any(k.startswith("head") for k in converted)
    assert len(converted) == len([k for k in state if not k.startswith("head.")])
    assert converted["embedder.stem1.convolution.weight"] is state["stem.stem1.conv.weight"]
    assert "encoder.stages.2.blocks.0.layers.0.conv1.normalization.running_var" in converted
    assert "encoder.stages.1.downsample.convolution.weight" in converted
    assert "encoder.stages.0.blocks.0.aggregation.1.lab.scale" in converted
    prefixed = convert_timm_hgnetv2(state, prefix="model.backbone.model.")
    config = preset_config("dfine-s-coco", freeze_backbone_batch_norms=False)
    model_keys = {k for k in DFineForObjectDetection(config).state_dict() if k.startswith("model.backbone.")}
    assert set(prefixed) == model_keys


def test_convert_features_only_state_dict():
    features = timm.create_model("hgnetv2_b0", pretrained=False, features_only=True, out_indices=(0, 1, 2, 3))
    full = convert_timm_hgnetv2(_timm_model("hgnetv2_b0").state_dict())
    assert set(convert_timm_hgnetv2(features.state_dict())) == set(full)


def test_convert_is_strict_about_unknown_keys():
    state = dict(_timm_model("hgnetv2_b0").state_dict())
    state["stages.0.blocks.0.extra.weight"] = torch.zeros(1)
    state["neck.conv.weight"] = torch.zeros(1)
    with pytest.raises(CheckpointError, match=r"2 unknown keys: .*extra.*neck"):
        convert_timm_hgnetv2(state)


def test_wrong_variant_file_names_the_keys(tmp_path):
    from safetensors.torch import save_file

    path = tmp_path / "b2.safetensors"
    save_file({k: v.contiguous() for k, v in _timm_model("hgnetv2_b2").state_dict().items()}, str(path))
    model = DFineModel(preset_config("dfine-n-coco"))
    with pytest.raises(CheckpointError, match="wrongly shaped"):
        load_pretrained_backbone(model, path=path)


def test_variant_and_lab_checks():
    model = DFineModel(preset_config("dfine-n-coco"))
    with pytest.raises(ConfigError, match="is HGNetv2-B0, not B4"):
        load_pretrained_backbone(model, "B4")
    config = preset_config("dfine-n-coco")
    config.backbone_config.use_learnable_affine_block = False
    with pytest.raises(ConfigError, match="learnable affine"):
        load_pretrained_backbone(DFineModel(config))


def test_offline_error_is_one_line_and_fast(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    model = DFineModel(preset_config("dfine-n-coco"))
    start = time.perf_counter()
    with pytest.raises(DFineError) as info:
        load_pretrained_backbone(model, cache_dir=tmp_path)  # an empty cache
    assert time.perf_counter() - start < 5
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith("could not download the ImageNet-pretrained HGNetv2-B0 backbone "
                              f"({timm_repo_id('B0')}): offline?")
    assert "--no-pretrained-backbone" in message and "HF_HUB_OFFLINE=0" in message


def test_unreachable_hub_fails_fast(monkeypatch, tmp_path):
    from huggingface_hub import constants

    # Online mode against an endpoint that refuses connections: one probe, no retry loop.
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "ENDPOINT", "http://127.0.0.1:9")
    monkeypatch.setattr(constants, "HUGGINGFACE_CO_URL_TEMPLATE",
                        "http://127.0.0.1:9/{repo_id}/resolve/{revision}/{filename}", raising=False)
    model = DFineModel(preset_config("dfine-l-coco"))
    start = time.perf_counter()
    with pytest.raises(DFineError) as info:
        load_pretrained_backbone(model, cache_dir=tmp_path)
    assert time.perf_counter() - start < 15
    assert "\n" not in str(info.value)
    assert "HGNetv2-B4" in str(info.value) and "offline?" in str(info.value)
