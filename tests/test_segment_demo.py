"""``dfine demo --task segment``: the end-to-end smoke run of the instance segmentation demo."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from dfine.cli.main import main
from dfine.demo.segmentation import fill_masks, run_segmentation_demo


@pytest.mark.slow
def test_segmentation_demo_smoke_run(tmp_path, capsys) -> None:
    from dfine.model import DFineForInstanceSegmentation

    result = run_segmentation_demo(output=tmp_path / "demo", epochs=1, device="cpu", seed=0, progress=False,
                                   num_train=4, num_val=2, batch_size=4)
    model = DFineForInstanceSegmentation.from_pretrained(result.model_dir)
    assert model.config.use_mask_head and model.config.class_names == ["circle", "square", "triangle"]
    metrics = json.loads((result.output_dir / "metrics.json").read_text())
    assert 0 <= (metrics["segm"]["AP"] or 0) <= 1 and set(metrics["segm"]["per_class_AP"]) == {
        "circle", "square", "triangle"}
    assert metrics == result.metrics
    Image.open(result.predictions_grid).verify()
    out = capsys.readouterr().out
    assert "mask AP" in out and "box AP" in out and "dfine train --task segment" in out


def test_the_command_line_picks_the_segmentation_demo(tmp_path, monkeypatch) -> None:
    seen = {}
    monkeypatch.setattr("dfine.demo.run_segmentation_demo", lambda **kwargs: seen.update(kwargs))
    assert main(["demo", "--task", "segment", "--epochs", "2", "--quiet"]) == 0
    assert seen["output"] == "runs/demo-segment" and seen["epochs"] == 2 and seen["progress"] is False


def test_fill_masks_colours_only_the_mask() -> None:
    image = Image.new("RGB", (8, 6), (0, 0, 0))
    mask = np.zeros((1, 6, 8), dtype=bool)
    mask[0, 2:4, 3:6] = True
    filled = np.asarray(fill_masks(image, mask, [1]))
    assert filled[2:4, 3:6].any(axis=-1).all() and not filled[~mask[0]].any()
