"""load_model: a checkpoint loads as the class it is for (masks or boxes only)."""

from __future__ import annotations

from pathlib import Path

import torch

import dfine
from dfine.config import DFineConfig
from dfine.model import load_model, model_class_for


def test_each_checkpoint_loads_as_its_own_class(tmp_path: Path) -> None:
    config = DFineConfig.from_preset("dfine-n-coco", num_labels=2, num_queries=20)
    torch.manual_seed(0)
    dfine.DFineForInstanceSegmentation(config).save_pretrained(tmp_path / "seg")
    dfine.DFineForObjectDetection(config).save_pretrained(tmp_path / "det")
    seg, det = load_model(tmp_path / "seg"), load_model(str(tmp_path / "det"))
    assert type(seg) is dfine.DFineForInstanceSegmentation and type(det) is dfine.DFineForObjectDetection
    assert model_class_for(seg.config) is dfine.DFineForInstanceSegmentation
    assert model_class_for(config) is dfine.DFineForObjectDetection
    with torch.no_grad():
        out = seg.eval()(torch.rand(1, 3, 64, 64))
    assert out.pred_masks.shape == (1, 20, 16, 16)
