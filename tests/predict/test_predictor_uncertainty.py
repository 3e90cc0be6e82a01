"""Predictor gives each detection's box uncertainty, in the training form and in the fast deploy form alike, and
tracks frames read by the caller."""

from __future__ import annotations

import pytest
import torch
from hf_oracle import natural_images

from dfine.errors import ConfigError
from dfine.predict.predictor import Predictor

SIZE = 160  # with 100 queries: 10² + 5² = 125 encoder tokens are enough


def test_uncertainty_comes_with_every_detection_and_matches_the_post_processing(model_dir) -> None:
    predictor = Predictor.from_pretrained(model_dir, device="cpu", image_size=SIZE)
    picture = natural_images(1, SIZE, seed=3)[0].resize((200, 120))
    [result] = predictor.predict(picture, threshold=0.0)
    assert set(result) == {"scores", "labels", "boxes", "edge_uncertainty", "uncertainty"}
    assert result["edge_uncertainty"].shape == (len(result["scores"]), 4) and (result["uncertainty"] >= 0).all()
    processor = predictor.processor
    with torch.no_grad():
        outputs = predictor.model(processor(picture)["pixel_values"], output_uncertainty=True)
    [expected] = processor.post_process_object_detection(outputs, threshold=0.0, target_sizes=[(120, 200)],
                                                         return_uncertainty=True)
    torch.testing.assert_close(result["edge_uncertainty"], expected["edge_uncertainty"])
    # the fast deploy form (bf16 body, fp32 head) gives them too, close to the float32 ones
    fast = Predictor.from_pretrained(model_dir, device="cpu", image_size=SIZE, bf16=True)
    [quick] = fast.predict(picture, threshold=0.0)
    assert quick["uncertainty"].shape == quick["scores"].shape
    assert abs(quick["uncertainty"].median() - result["uncertainty"].median()) < 0.1 * result["uncertainty"].median()


def test_track_yields_ids_frame_by_frame_and_checks_its_arguments_at_the_call(model_dir) -> None:
    pytest.importorskip("trackers")
    predictor = Predictor.from_pretrained(model_dir, device="cpu", image_size=SIZE)
    pictures = natural_images(3, SIZE, seed=5)
    results = list(predictor.track(iter(pictures), tracker="sort", threshold=0.0, classes=[0, 1, 2]))
    assert len(results) == 3
    for result in results:
        assert result["track_ids"].shape == result["scores"].shape and result["track_ids"].dtype == torch.int64
        assert set(result["labels"].tolist()) <= {0, 1, 2} and "uncertainty" in result
    with pytest.raises(ConfigError, match="unknown tracker"):
        predictor.track(pictures, tracker="kalman")
    with pytest.raises(ConfigError, match="threshold"):
        predictor.track(pictures, threshold=2)
