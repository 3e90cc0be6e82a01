"""Class rows carried over by name when fine-tuning on another class list."""

from __future__ import annotations

import torch

from dfine.config.presets import COCO_CLASSES, preset_config
from dfine.hub.class_rows import carry_class_rows, describe_carried_rows, match_class_names


def test_names_match_across_case_spacing_order_and_alternatives() -> None:
    source = ["Person", "traffic_light", "Moniter/TV", "dog", "cat"]
    target = ["cat", "Traffic Light", "tv", "horse", "PERSON"]
    assert match_class_names(source, target) == [4, 1, 2, None, 0]


def test_a_source_row_is_used_once() -> None:
    assert match_class_names(["car", "truck"], ["car", "Car", "truck"]) == [0, None, 1]


def test_every_coco_class_finds_its_own_objects365_row() -> None:
    """The original fine-tunes Objects365 -> COCO with a fixed 80-row table; names and synonyms cover all 80."""
    objects365 = preset_config("dfine-s-obj365").class_names
    matches = match_class_names(objects365, list(COCO_CLASSES))
    assert None not in matches and len(set(matches)) == 80
    pairs = {coco: objects365[m] for coco, m in zip(COCO_CLASSES, matches)}  # type: ignore[index]
    assert pairs["person"] == "Person" and pairs["tv"] == "Moniter/TV" and pairs["bird"] == "Wild Bird"
    assert pairs["dining table"] == "Dinning Table" and pairs["hair drier"] == "Hair Dryer"
    assert pairs["handbag"] == "Handbag/Satchel" and pairs["teddy bear"] == "Stuffed Toy"
    # and back: an Objects365 data set fine-tuned from COCO weights finds the same rows
    back = match_class_names(list(COCO_CLASSES), objects365)
    assert sum(m is not None for m in back) == 80
    assert all(back[m] == i for i, m in enumerate(matches))  # type: ignore[index]


def test_rows_follow_the_names_and_the_rest_stay_fresh() -> None:
    old = {"model.enc_score_head.weight": torch.arange(12.0).reshape(3, 4),
           "model.enc_score_head.bias": torch.tensor([10.0, 11.0, 12.0]),
           "model.denoising_class_embed.weight": torch.arange(16.0).reshape(4, 4),
           "model.backbone.x": torch.ones(2)}
    fresh = {"model.enc_score_head.weight": torch.full((2, 4), -1.0),
             "model.enc_score_head.bias": torch.full((2,), -4.6),
             "model.denoising_class_embed.weight": torch.full((3, 4), -1.0),
             "model.backbone.x": torch.zeros(2)}
    out = carry_class_rows(old, fresh, [2, None])
    assert torch.equal(out["model.enc_score_head.weight"], torch.tensor([[8.0, 9, 10, 11], [-1, -1, -1, -1]]))
    assert torch.equal(out["model.enc_score_head.bias"], torch.tensor([12.0, -4.6]))
    # the denoising embedding's last row is the padding label, carried as such
    assert torch.equal(out["model.denoising_class_embed.weight"],
                       torch.tensor([[8.0, 9, 10, 11], [-1, -1, -1, -1], [12, 13, 14, 15]]))
    assert out["model.backbone.x"] is old["model.backbone.x"]  # only class-sized tensors change
    assert old["model.enc_score_head.weight"].shape == (3, 4)  # the checkpoint is not changed
    assert fresh["model.enc_score_head.weight"][0, 0] == -1.0


def test_the_log_line_counts_and_names_the_fresh_classes() -> None:
    line = describe_carried_rows(["a", "b", "c"], [0, None, None])
    assert line == "1 of 3 classes start from the checkpoint's class rows of the same name; 2 start fresh: b, c"
    assert describe_carried_rows(["a"], [0]).endswith("of the same name")


def test_a_list_in_the_same_order_with_new_names_is_a_renaming() -> None:
    from dfine.hub.class_rows import is_renaming

    for source, target in ((["0", "1"], ["cat", "dog"]), (["cat", "tv"], ["cat", "television"])):
        assert is_renaming(source, target, match_class_names(source, target))
    for source, target in ((["cat", "dog"], ["dog", "cat"]), (["cat", "dog"], ["cat", "dog", "bird"]),
                           (["cat", "dog", "bird"], ["cat", "fish", "dog"])):
        assert not is_renaming(source, target, match_class_names(source, target))
