"""The whole recipe can learn: D-FINE-N from a random backbone overfits six images to AP50 >= 0.9.

Everything real is exercised (data pipeline, denoising, the full criterion, AdamW groups, warm-up, clipping, EMA,
evaluation of the EMA weights, ``best/``); only the schedule is shortened: no strong augmentation (``stop_epoch=0``),
a larger learning rate, a short EMA, and the training images listed 8 times per epoch to cut per-epoch overhead.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from trainhelpers import TINY, same_images_for_val, tiny_data

import dfine


@pytest.mark.slow
def test_overfits_a_handful_of_images(tmp_path: Path) -> None:
    data = same_images_for_val(tiny_data(tmp_path / "data", num_train=6, num_val=1, seed=0), repeats=8)
    # 30 epochs of 12 steps. Measured on this data (seed 0, evaluated every 2 epochs): AP50 climbs noisily from 0.39
    # (epoch 6) through 0.94 (epoch 18) and holds 1.0 from epoch 26 on; training is deterministic on the CPU.
    result = dfine.train(data, epochs=30, batch_size=4, output=tmp_path / "run", eval_interval=5, lr=1e-3,
                         warmup_iters=20, stop_epoch=0, ema_decay=0.9, ema_restart_decay=0.9, ema_warmups=0,
                         **TINY)
    history = [h["eval"]["AP50"] for h in result.history if "eval" in h]
    assert result.metrics["AP50"] >= 0.9, f"AP50 per evaluation: {history}"
    # the saved best model scores the same with the standalone evaluation (inference preprocessing)
    again = dfine.val(result.best_model, data, batch_size=6, workers=0)
    assert again.AP50 == pytest.approx(result.metrics["AP50"], abs=1e-9)
