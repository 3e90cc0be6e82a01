"""The DEIM recipe: its hyper-parameters at COCO scale and on small data, and a short run that uses all of it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from trainhelpers import TINY

import dfine
from dfine.engine.hparams import resolve_hyperparameters
from dfine.errors import ConfigError


def test_deim_on_coco_keeps_deims_proportions() -> None:
    hp = resolve_hyperparameters("s", num_train_images=118_287, batch_size=32, recipe="deim")
    assert (hp.recipe, hp.epochs, hp.stop_epoch) == ("deim", 132, 120)
    assert hp.strong_aug_start == 4 and hp.dense_o2o_epochs == (4, 66)
    assert (hp.lr_schedule, hp.lr_flat_epochs, hp.lr_min_ratio) == ("flat-cosine", 66, 0.5)
    assert (hp.mosaic_prob, hp.mixup_prob, hp.mal_gamma) == (0.5, 0.5, 1.5)
    assert hp.warmup_iters == 4 * resolve_hyperparameters("s", num_train_images=118_287, batch_size=32).warmup_iters
    assert "DEIM recipe" in hp.summary() and "MAL (gamma 1.5)" in hp.summary()


def test_deim_keeps_dfine_n_flat_and_the_original_recipe_is_untouched() -> None:
    assert resolve_hyperparameters("n", num_train_images=100_000, batch_size=128, recipe="deim").lr_min_ratio == 1.0
    dfine_hp = resolve_hyperparameters("s", num_train_images=118_287, batch_size=32)
    assert (dfine_hp.recipe, dfine_hp.lr_schedule, dfine_hp.mosaic_prob, dfine_hp.mal_gamma) == (
        "dfine", "constant", 0.0, None)


def test_small_runs_scale_the_deim_epochs() -> None:
    hp = resolve_hyperparameters("n", num_train_images=36, batch_size=4, epochs=60, recipe="deim")
    assert hp.strong_aug_start == 2 and hp.dense_o2o_epochs == (2, 30) and hp.lr_flat_epochs == 30
    assert hp.dense_o2o_epochs[1] <= hp.stop_epoch


def test_an_unknown_recipe_is_one_line() -> None:
    with pytest.raises(ConfigError, match="unknown recipe 'yolo': choose dfine or deim"):
        resolve_hyperparameters("n", num_train_images=36, batch_size=4, recipe="yolo")
    with pytest.raises(ConfigError, match="unknown recipe"):
        dfine.train("data.yaml", recipe="yolo")


@pytest.mark.slow
def test_a_deim_run_trains_with_mal_mosaic_and_mixup(tiny_yaml: Path, tmp_path: Path) -> None:
    result = dfine.train(tiny_yaml, epochs=3, batch_size=4, output=tmp_path / "deim", recipe="deim",
                         **{**TINY, "workers": 1})
    hparams = json.loads((tmp_path / "deim" / "hparams.json").read_text())
    assert hparams["recipe"] == "deim" and hparams["dense_o2o_epochs"] == [1, 2]
    assert json.loads((result.best_model / "config.json").read_text())["mal_gamma"] == 1.5
    first = result.history[0]["train"]
    assert "loss_mal" in first and "loss_vfl" not in first
    with pytest.raises(dfine.DFineError, match="deim recipe: resume it with that one"):
        dfine.train(tiny_yaml, epochs=4, output=tmp_path / "deim", resume=True, recipe="dfine", **TINY)
