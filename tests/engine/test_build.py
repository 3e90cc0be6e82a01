"""Building the training model from a preset: ImageNet backbone loading and its failure modes, L/X freezing."""

from __future__ import annotations

import pytest

import dfine.hub.backbone
from dfine.config.image_size import check_image_size
from dfine.config.presets import preset_config
from dfine.engine.build import build_training_model
from dfine.errors import ConfigError, DFineError
from dfine.model.layers import FrozenBatchNorm2d

SHAPES = ["circle", "square", "triangle"]


def test_backbone_download_failure_names_the_way_out(monkeypatch: pytest.MonkeyPatch) -> None:
    def offline(model, variant=None, **kwargs):
        raise DFineError("could not download the ImageNet-pretrained HGNetv2-B0 backbone: offline?")

    monkeypatch.setattr(dfine.hub.backbone, "load_pretrained_backbone", offline)
    with pytest.raises(DFineError) as info:
        build_training_model("dfine-n-coco", SHAPES)
    message = str(info.value)
    assert "offline?" in message and "pretrained_backbone=False (--no-pretrained-backbone)" in message
    assert "\n" not in message


def test_backbone_weights_are_loaded_for_the_variant(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []
    monkeypatch.setattr(dfine.hub.backbone, "load_pretrained_backbone", lambda model, variant: calls.append(variant))
    _, report = build_training_model("dfine-s-coco", SHAPES)
    assert calls == ["B0"] and report.backbone == "ImageNet-pretrained HGNetv2-B0"


def test_large_sizes_freeze_backbone_norm_and_stem() -> None:
    model, report = build_training_model("dfine-l-coco", SHAPES, pretrained_backbone=False)
    backbone = model.model.backbone
    assert all(isinstance(m, FrozenBatchNorm2d) for m in backbone.modules() if "Norm" in type(m).__name__)
    assert report.frozen and all(not p.requires_grad for p in backbone.model.embedder.parameters())
    assert all(p.requires_grad for p in backbone.model.encoder.parameters())
    assert model.config.freeze_backbone_batch_norms is True and model.config.class_names == SHAPES


def test_image_size_must_give_enough_queries() -> None:
    config = preset_config("dfine-n-coco")  # strides 16 and 32
    check_image_size(config, 256)  # 16*16 + 8*8 = 320 >= 300
    with pytest.raises(ConfigError, match="224x224 gives 245 encoder positions") as info:
        check_image_size(config, 224)
    # the ways out: the smallest size that works, and fewer queries (for the command line and for Python)
    assert "use an image size of at least 256x256, or fewer queries (--set num_queries=N on the command line, " \
           "num_queries=N in Python)" in str(info.value)
    with pytest.raises(ConfigError) as info:  # a trained model's query count is what it is: only the size helps
        check_image_size(config, 224, training=False)
    assert str(info.value).endswith("queries: use an image size of at least 256x256")
    check_image_size(preset_config("dfine-s-coco"), 160)  # strides 8/16/32: 400 + 100 + 25
