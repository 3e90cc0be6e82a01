"""Parameter groups, the warm-up schedule and the recipe scaling rules."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from torch import nn

from dfine.config.presets import RECIPES, preset_config
from dfine.engine.hparams import (
    LARGE_DATASET,
    MAX_SCHEDULE_FRACTION,
    SMALL_DATA_LR_SCALING,
    Hyperparameters,
    default_eval_interval,
    resolve_hyperparameters,
)
from dfine.engine.optim import build_optimizer, freeze_stem, parameter_groups
from dfine.errors import ConfigError
from dfine.model import DFineForObjectDetection
from dfine.model.layers import FrozenBatchNorm2d


def _model(size: str) -> DFineForObjectDetection:
    recipe = RECIPES[size]
    config = preset_config(f"dfine-{size}-coco", num_labels=3, freeze_backbone_batch_norms=recipe.freeze_backbone_norm)
    with torch.device("meta"):  # shapes and module types only: fast even for X
        model = DFineForObjectDetection(config)
    if recipe.freeze_backbone_norm:
        freeze_stem(model)
    return model


def _groups(model: nn.Module, size: str, **kwargs) -> dict[str, set[str]]:
    recipe = RECIPES[size]
    names = {id(p): n for n, p in model.named_parameters()}
    groups = parameter_groups(model, lr=recipe.lr, backbone_lr=recipe.backbone_lr, weight_decay=recipe.weight_decay,
                              no_decay_bias=recipe.no_decay_bias, **kwargs)
    return {g["name"]: {names[id(p)] for p in g["params"]} for g in groups}


def _owners(model: nn.Module) -> dict[str, nn.Module]:
    return {f"{m_name}.{p_name}" if m_name else p_name: module for m_name, module in model.named_modules()
            for p_name, _ in module.named_parameters(recurse=False)}


@pytest.mark.parametrize("size", ["n", "s", "m", "l", "x"])
def test_parameter_groups_follow_the_recipe(size: str) -> None:
    model = _model(size)
    recipe = RECIPES[size]
    groups = _groups(model, size)
    owners = _owners(model)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    # every trainable parameter in exactly one group; frozen ones in none
    assert sum(len(g) for g in groups.values()) == len(trainable)
    assert set().union(*groups.values()) == trainable
    assert "model.decoder.up" not in trainable and "model.decoder.reg_scale" not in trainable
    # backbone: everything trainable under model.backbone, with decay (the original's effective behaviour)
    assert groups["backbone"] == {n for n in trainable if n.startswith("model.backbone.")}
    norm_types = (nn.BatchNorm2d, nn.LayerNorm)
    for name in groups["no_decay"]:
        assert not name.startswith("model.backbone.")
        assert isinstance(owners[name], norm_types) or (recipe.no_decay_bias and name.endswith("bias")), name
    for name in groups["default"]:
        assert not isinstance(owners[name], norm_types), name
        if recipe.no_decay_bias:
            assert not name.endswith("bias"), name
    # encoder/decoder norms never decay; L/X keep decay on encoder/decoder biases
    assert "model.decoder.layers.0.final_layer_norm.weight" in groups["no_decay"]
    assert "model.enc_output.1.bias" in groups["no_decay"]
    assert "model.encoder_input_proj.0.1.weight" in groups["no_decay"]  # a BatchNorm named "1", not "norm"
    bias_group = "no_decay" if recipe.no_decay_bias else "default"
    assert "model.decoder.layers.0.self_attn.q_proj.bias" in groups[bias_group]
    assert "model.enc_score_head.bias" in groups[bias_group]
    if recipe.freeze_backbone_norm:
        assert not any(n.startswith("model.backbone.model.embedder.") for n in trainable)
        assert all(isinstance(m, FrozenBatchNorm2d) for m in model.modules() if "BatchNorm" in type(m).__name__
                   and m in set(model.model.backbone.modules()))
    else:
        assert "model.backbone.model.embedder.stem1.normalization.weight" in groups["backbone"]
        assert "model.backbone.model.embedder.stem1.lab.scale" in groups["backbone"]


def test_declared_backbone_norm_group_can_be_asked_for() -> None:
    model = _model("s")
    groups = _groups(model, "s", backbone_norm_decay=False)
    assert "model.backbone.model.embedder.stem1.normalization.weight" in groups["backbone_no_decay"]
    assert "model.backbone.model.embedder.stem1.lab.bias" in groups["backbone_no_decay"]
    assert "model.backbone.model.embedder.stem1.convolution.weight" in groups["backbone"]


def test_optimizer_settings() -> None:
    model = nn.Module()
    model.model = nn.Module()
    model.model.backbone = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))
    model.head = nn.Sequential(nn.Linear(4, 4), nn.LayerNorm(4))
    optimizer = build_optimizer(model, lr=1e-3, backbone_lr=1e-4, weight_decay=0.05, no_decay_bias=True)
    assert isinstance(optimizer, torch.optim.AdamW)
    settings = {g["name"]: (g["lr"], g["weight_decay"], len(g["params"]), g["betas"]) for g in optimizer.param_groups}
    assert settings == {"backbone": (1e-4, 0.05, 4, (0.9, 0.999)), "no_decay": (1e-3, 0.0, 3, (0.9, 0.999)),
                        "default": (1e-3, 0.05, 1, (0.9, 0.999))}


def test_recipe_unchanged_at_its_own_batch_on_coco() -> None:
    for size, recipe in RECIPES.items():
        hp = resolve_hyperparameters(size, num_train_images=117_266, batch_size=recipe.batch_size)
        assert (hp.lr, hp.backbone_lr, hp.weight_decay) == (recipe.lr, recipe.backbone_lr, recipe.weight_decay)
        assert (hp.epochs, hp.stop_epoch) == (recipe.epochs, recipe.stop_epoch)
        assert (hp.warmup_iters, hp.ema_warmups) == (500, 1000)
        assert hp.ema_decay == pytest.approx(0.9999) and hp.ema_restart_decay == pytest.approx(recipe.ema_restart_decay)
        assert hp.notes == []


def test_batch_scaling_rule_of_the_readme() -> None:
    # README of the original: D-FINE-L at batch 64 instead of 32 -> lr x2, decay 0.9998, warm-ups halved
    hp = resolve_hyperparameters("l", num_train_images=117_266, batch_size=64)
    assert hp.lr == pytest.approx(5e-4) and hp.backbone_lr == pytest.approx(2.5e-5)
    assert hp.ema_decay == pytest.approx(0.9998)
    assert (hp.warmup_iters, hp.ema_warmups) == (250, 500)
    # a quarter of the batch: lr / 4, EMA horizon x4, warm-ups x4
    hp = resolve_hyperparameters("s", num_train_images=117_266, batch_size=8)
    assert hp.lr == pytest.approx(5e-5) and hp.ema_decay == pytest.approx(1 - 4e-4 / 16)
    assert (hp.warmup_iters, hp.ema_warmups) == (2000, 4000)


def test_small_data_set_defaults_are_capped_to_the_run() -> None:
    hp = resolve_hyperparameters("n", num_train_images=200, batch_size=8)
    total = hp.epochs * (200 // 8)
    assert hp.epochs == 160 and hp.stop_epoch == 148
    assert hp.warmup_iters <= MAX_SCHEDULE_FRACTION * total and hp.ema_warmups <= MAX_SCHEDULE_FRACTION * total
    assert 1 / (1 - hp.ema_decay) <= MAX_SCHEDULE_FRACTION * total + 1e-6
    assert hp.lr == pytest.approx(8e-4 * {"linear": 1 / 16, "sqrt": 1 / 4, "none": 1.0}[SMALL_DATA_LR_SCALING])
    tiny = resolve_hyperparameters("n", num_train_images=40, batch_size=8)  # 5 steps per epoch
    assert tiny.epochs == 400 and tiny.stop_epoch == 370
    assert any("epochs" in note for note in tiny.notes)


def test_the_automatic_lr_rule_is_linear_on_large_data_only_and_said() -> None:
    large = resolve_hyperparameters("n", num_train_images=LARGE_DATASET, batch_size=8)
    small = resolve_hyperparameters("n", num_train_images=LARGE_DATASET - 1, batch_size=8)
    assert (large.lr_scaling, small.lr_scaling) == ("linear", SMALL_DATA_LR_SCALING)
    assert large.lr == pytest.approx(8e-4 / 16)
    assert any("lr_scaling=auto" in note for note in small.notes)
    assert not any("lr_scaling=auto" in note for note in large.notes)
    # any rule can be asked for by name, whatever the data set size
    for rule, factor in (("linear", 1 / 16), ("sqrt", 1 / 4), ("none", 1.0)):
        hp = resolve_hyperparameters("n", num_train_images=500, batch_size=8, overrides={"lr_scaling": rule})
        assert (hp.lr_scaling, hp.lr, hp.backbone_lr) == (rule, pytest.approx(8e-4 * factor),
                                                          pytest.approx(4e-4 * factor))
    with pytest.raises(ConfigError, match="lr_scaling must be one of"):
        resolve_hyperparameters("n", num_train_images=500, overrides={"lr_scaling": "cubic"})


def test_a_short_small_run_from_scratch_has_no_strong_augmentation() -> None:
    def resolve(**kwargs: object) -> Hyperparameters:
        return resolve_hyperparameters("n", batch_size=4, **kwargs)  # type: ignore[arg-type]

    short = resolve(num_train_images=36, epochs=60)  # 540 steps from scratch
    assert short.stop_epoch == 0
    assert any(note.startswith("no strong augmentation (stop epoch 0 instead of 56)") for note in short.notes)
    assert resolve(num_train_images=36).stop_epoch > 0  # the default epochs give >= 2000 steps: the recipe's stages
    assert resolve(num_train_images=36, epochs=60, overrides={"stop_epoch": 30}).stop_epoch == 30  # asked for
    assert resolve(num_train_images=36, epochs=60, recipe="deim").stop_epoch > 0  # DEIM schedules its augmentation
    assert resolve(num_train_images=LARGE_DATASET, epochs=1).stop_epoch == 1  # large data: the recipe as it is


def test_a_short_small_fine_tuning_run_keeps_the_augmentation_and_is_told() -> None:
    hp = resolve_hyperparameters("n", batch_size=4, num_train_images=36, epochs=30, fine_tune=True)
    assert hp.stop_epoch == 26
    assert any(note.startswith("a short run (270 steps)") for note in hp.notes)
    told = resolve_hyperparameters("n", batch_size=4, num_train_images=36, epochs=30, fine_tune=True,
                                   overrides={"stop_epoch": 0})
    assert not any(note.startswith("a short run") for note in told.notes)  # already off


def test_fine_tuning_and_overrides() -> None:
    hp = resolve_hyperparameters("s", num_train_images=50_000, batch_size=32, fine_tune=True)
    assert (hp.warmup_iters, hp.ema_warmups) == (0, 0)
    assert (hp.epochs, hp.stop_epoch) == (64, 56)
    hp = resolve_hyperparameters("n", num_train_images=64, batch_size=8, lr=1e-3, epochs=10,
                                 overrides={"stop_epoch": 0, "ema_decay": 0.99})
    assert hp.lr == 1e-3 and hp.backbone_lr == pytest.approx(5e-4)
    assert (hp.epochs, hp.stop_epoch, hp.ema_decay) == (10, 0, 0.99)
    with pytest.raises(ConfigError, match="unknown hyper-parameter"):
        resolve_hyperparameters("n", num_train_images=64, overrides={"warmup": 3})
    with pytest.raises(ConfigError, match="larger than"):
        resolve_hyperparameters("n", num_train_images=4, batch_size=8)


def test_default_batch_and_stop_epoch_proportion() -> None:
    hp = resolve_hyperparameters("s", num_train_images=1000, epochs=30)
    assert hp.batch_size == 8 and hp.stop_epoch == 30 - round(30 * 12 / 132)
    hp = resolve_hyperparameters("n", num_train_images=1000, epochs=2, batch_size=4, fine_tune=True)
    assert hp.stop_epoch == 1
    assert resolve_hyperparameters("n", num_train_images=1000, epochs=1, batch_size=4,
                                   fine_tune=True).stop_epoch == 1
    assert math.isfinite(hp.ema_decay) and 0 <= hp.ema_decay < 1


def test_an_explicit_warmup_replaces_the_cap_note_and_a_too_long_one_is_explained() -> None:
    # 8 images, batch 4, 1 epoch: 2 iterations, far fewer than the recipe's warm-up
    capped = resolve_hyperparameters("n", num_train_images=8, batch_size=4, epochs=1)
    assert any(n.startswith("LR warm-up capped") for n in capped.notes)
    hp = resolve_hyperparameters("n", num_train_images=8, batch_size=4, epochs=1, overrides={"warmup_iters": 100})
    assert hp.warmup_iters == 100
    assert not any(n.startswith("LR warm-up capped") for n in hp.notes)  # it would contradict the explicit value
    assert "warmup_iters=100 is longer than this run's 2 iterations: the LR ends at 2% of its target" in hp.notes
    fits = resolve_hyperparameters("n", num_train_images=8, batch_size=4, epochs=1, overrides={"warmup_iters": 1})
    assert not any("longer than this run" in n for n in fits.notes)


def test_large_data_at_batch_32_resolves_as_before_the_small_data_defaults() -> None:
    """The small-data defaults must not touch COCO-sized runs: every size, from scratch and fine-tuning, at batch 32
    on 10k (the threshold) and 118k images resolves to the hyper-parameters pinned at commit 7a53492, before they
    changed (tests/engine/data/hparams_batch32_large.json)."""
    pinned = json.loads((Path(__file__).parent / "data" / "hparams_batch32_large.json").read_text())
    for key, expected in pinned.items():
        size, fine_tune, images = key.split()
        hp = resolve_hyperparameters(size, num_train_images=int(images.removeprefix("images=")), batch_size=32,
                                     fine_tune=fine_tune == "fine_tune=True")
        resolved = hp.to_dict()
        resolved.pop("notes")
        assert resolved == expected, key


@pytest.mark.parametrize(("num_train", "num_val", "epochs", "interval"), [
    (118_287, 5_000, 72, 1),  # COCO: every epoch, as the original
    (36, 10, 60, 2),  # neon-trees: 10 validation images cost ~7% of an epoch, so every second epoch
    (36, 10, 10, 2),  # a short run on it keeps five evaluations, not ten
    (36, 36, 100, 5),  # a validation split as large as the training split: every fifth epoch
    (36, 36, 12, 2),  # ... but at least five evaluations
    (36, 10, 4, 1),  # fewer epochs than evaluations wanted: every epoch
    (36, 0, 60, 1),  # no validation split (nothing is evaluated anyway)
])
def test_default_eval_interval_spends_about_five_percent_and_keeps_five_evaluations(
        num_train: int, num_val: int, epochs: int, interval: int) -> None:
    assert default_eval_interval(num_train, num_val, epochs) == interval
