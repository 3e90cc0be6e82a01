"""Instance segmentation can learn: D-FINE-N with D-FINE-seg's mask branch, from a random backbone, overfits four
synthetic images with polygon masks to mask AP50 >= 0.9.

Everything real is exercised (masks rasterised from COCO polygons through the training transforms, the mask losses on
every decoder and denoising layer, the mask matching costs, the COCO segm evaluation of the EMA weights, ``best/``);
only the schedule is shortened as in ``test_overfit.py``, at 96 px with 30 queries (6x6 + 3x3 encoder positions).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from trainhelpers import TINY, same_images_for_val

import dfine
from dfine.data import make_synthetic_dataset


@pytest.mark.slow
def test_overfits_a_handful_of_images_with_masks(tmp_path: Path) -> None:
    data = make_synthetic_dataset(tmp_path / "data", num_train=4, num_val=1, image_size=(96, 96), seed=0,
                                  empty_fraction=0.0, masks=True)
    data = same_images_for_val(data, repeats=8)
    # 15 epochs of 8 steps. Measured on this data (seed 0, evaluated every 3 epochs): mask AP50 0.0 (epoch 6), 0.78
    # (epoch 9), 1.0 from epoch 12 on, box AP50 alike; training is deterministic on the CPU.
    result = dfine.train(data, epochs=15, batch_size=4, output=tmp_path / "run", eval_interval=5, lr=1e-3,
                         warmup_iters=20, stop_epoch=0, ema_decay=0.9, ema_restart_decay=0.9, ema_warmups=0,
                         task="segment", **{**TINY, "image_size": 96, "num_queries": 30})
    history = [(h["eval"]["AP50"], h["eval"]["segm"]["AP50"]) for h in result.history if "eval" in h]
    assert result.metrics["segm"]["AP50"] >= 0.9, f"(box, mask) AP50 per evaluation: {history}"
    # the saved best model loads as a segmentation model and scores the same with the standalone evaluation
    again = dfine.val(result.best_model, data, batch_size=4, workers=0)
    assert again.segm is not None
    assert again.segm.AP50 == pytest.approx(result.metrics["segm"]["AP50"], abs=1e-9)
