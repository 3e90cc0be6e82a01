"""A tiny D-FINE-seg model with random weights, saved as a user's model folder, whose instances are visible: boxes
large enough to hold a mask and masks that cover part of their box (plain random weights give boxes of a few pixels
and near-empty masks)."""

from __future__ import annotations

from pathlib import Path

import torch
from hf_oracle import randomize_weights

import dfine


def tiny_segmentation_model(seed: int = 4, num_queries: int = 100,
                            id2label: dict[int, str] | None = None) -> dfine.DFineForInstanceSegmentation:
    """``id2label``: the classes (default COCO's 80)."""
    labels = {} if id2label is None else {"id2label": id2label}
    model = dfine.DFineForInstanceSegmentation(dfine.DFineConfig.from_preset("dfine-n-coco", num_queries=num_queries,
                                                                             **labels))
    randomize_weights(model, seed=seed)
    with torch.no_grad():
        # proposals about a third of the picture wide (sigmoid(logit(anchor) + 2)) instead of the anchors' 5-10 %
        model.model.enc_bbox_head.layers[-1].bias[2:].fill_(2.0)
        # positive mask embeddings: a query's logit is positive where the (non-negative) pixel features are
        model.model.mask_head.layers[-1].bias.fill_(0.5)
    return model.eval()


def save_tiny_segmentation_model(directory: Path, image_size: int = 160, seed: int = 4,
                                 id2label: dict[int, str] | None = None) -> Path:
    tiny_segmentation_model(seed, id2label=id2label).save_pretrained(directory)
    dfine.DFineImageProcessor(size={"height": image_size, "width": image_size}).save_pretrained(directory)
    return directory
