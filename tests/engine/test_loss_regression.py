"""The first training steps' losses stay what they were before the speed work, and bf16 autocast stays close.

A fixed tiny run (D-FINE-N with 50 queries, 128x128 random images, fixed boxes, the engine's optimizer, schedule,
EMA and step) must give the losses that the code before the training-throughput changes gave (recorded at commit
1509e96, where AdamW ran its per-tensor loop): faster must not mean different. bf16 autocast on the CPU (``--amp``)
must follow fp32 within 3% per step: bf16 keeps 8 bits of mantissa, and a near tie in the Hungarian matching can
flip between the two, which moves a step's loss by a few percent, not more.
"""

from __future__ import annotations

import pytest
import torch

import dfine
from dfine.engine.ema import ModelEMA
from dfine.engine.optim import build_optimizer
from dfine.engine.schedule import LRSchedule
from dfine.engine.step import train_step

# losses of the first four steps, from the code at commit 1509e96
PINNED_FP32 = [37.616314, 37.089527, 37.088142, 41.235432]


def _first_losses(amp_dtype: torch.dtype | None) -> list[float]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the recorded values came from one thread: reductions in the same order
    try:
        torch.manual_seed(0)
        config = dfine.DFineConfig.from_preset("dfine-n-coco", num_labels=2, num_queries=50,
                                               freeze_backbone_batch_norms=False)
        model = dfine.DFineForObjectDetection(config).train()
        generator = torch.Generator().manual_seed(1)
        batches = []
        for _ in range(4):
            labels = []
            for _ in range(2):
                n = int(torch.randint(1, 6, (1,), generator=generator))
                wh = torch.rand(n, 2, generator=generator) * 0.3 + 0.1
                centre = wh / 2 + torch.rand(n, 2, generator=generator) * (1 - wh)
                labels.append({"class_labels": torch.randint(0, 2, (n,), generator=generator),
                               "boxes": torch.cat([centre, wh], 1)})
            batches.append({"pixel_values": torch.rand(2, 3, 128, 128, generator=generator), "labels": labels})
        optimizer = build_optimizer(model, lr=2e-4, backbone_lr=1e-4, weight_decay=1e-4, no_decay_bias=True)
        scheduler = LRSchedule(optimizer, "constant", warmup_iters=2, total_iters=4)
        ema = ModelEMA(model, 0.99, 2)
        scaler = torch.amp.GradScaler("cpu", enabled=False)
        return [train_step(model, batch, optimizer=optimizer, scheduler=scheduler, scaler=scaler, ema=ema,
                           device=torch.device("cpu"), amp_dtype=amp_dtype, clip_max_norm=0.1).loss
                for batch in batches]
    finally:
        torch.set_num_threads(threads)


def test_fp32_losses_are_those_before_the_speed_work() -> None:
    assert _first_losses(None) == pytest.approx(PINNED_FP32, rel=1e-5)


def test_bf16_autocast_follows_fp32_within_three_percent() -> None:
    bf16 = _first_losses(torch.bfloat16)
    assert bf16 == pytest.approx(PINNED_FP32, rel=0.03)
    assert bf16 != pytest.approx(PINNED_FP32, rel=1e-4)  # it did run in bf16
