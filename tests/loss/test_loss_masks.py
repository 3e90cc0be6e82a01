"""D-FINE-seg's mask losses and matching costs (dfine.loss.masks) and their wiring in the criterion, checked against
D-FINE-seg 0.6.2's own criterion and matcher (the oracle, tests/dfine_seg_oracle.py) on the same outputs."""

from __future__ import annotations

import pytest
import torch
from dfine_loss_testing import NUM_CLASSES, random_boxes

from dfine.config import DFineConfig
from dfine.loss import build_criterion, build_matcher
from dfine.loss.masks import cropped_mask_losses, mask_box_region, mask_match_costs, resize_target_masks

INPUT = 64  # the network input's side: target masks come at this size
MASK = 16  # the mask logits' side (input / 4)
LAYERS = 3
QUERIES = 24
GROUPS = 2  # denoising groups


def _box_masks(boxes: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """(n, INPUT, INPUT) uint8: an ellipse inside each box, so that masks and boxes agree but differ in shape."""
    ys, xs = torch.meshgrid(torch.arange(INPUT) + 0.5, torch.arange(INPUT) + 0.5, indexing="ij")
    masks = []
    for cx, cy, w, h in (boxes * INPUT).tolist():
        squeeze = 0.6 + 0.4 * float(torch.rand((), generator=generator))
        inside = ((xs - cx) / (w / 2)) ** 2 + ((ys - cy) / (squeeze * h / 2)) ** 2 <= 1
        masks.append(inside.to(torch.uint8))
    return torch.stack(masks) if masks else torch.zeros(0, INPUT, INPUT, dtype=torch.uint8)


def _targets(sizes: list[int], seed: int) -> list[dict[str, torch.Tensor]]:
    generator = torch.Generator().manual_seed(seed)
    targets = []
    for n in sizes:
        boxes = random_boxes(n, generator)
        targets.append({"class_labels": torch.randint(0, NUM_CLASSES, (n,), generator=generator), "boxes": boxes,
                        "masks": _box_masks(boxes, generator)})
    return targets


def _outputs(targets: list[dict], seed: int) -> dict:
    """Random training outputs in our layout (with denoising rows first), with mask logits near the targets' masks
    for some queries so that the mask costs decide matchings."""
    generator = torch.Generator().manual_seed(seed)
    batch = len(targets)
    most = max(len(t["boxes"]) for t in targets)
    num_dn = 2 * GROUPS * most
    total = num_dn + QUERIES

    def rand(*shape: int) -> torch.Tensor:
        return torch.rand(*shape, generator=generator)

    masks = 6 * rand(batch, LAYERS, total, MASK, MASK) - 4
    for b, target in enumerate(targets):
        small = resize_target_masks(target["masks"], (MASK, MASK))
        for j in range(len(small)):  # a few queries of every layer learnt something about target j
            masks[b, :, num_dn + 3 * j] += 6 * small[j]
    positives = [torch.cat([g * 2 * most + torch.arange(len(t["boxes"])) for g in range(GROUPS)]) for t in targets]
    return {
        "intermediate_logits": 4 * rand(batch, LAYERS + 1, total, NUM_CLASSES) - 3,
        "intermediate_reference_points": torch.cat([0.2 + 0.6 * rand(batch, LAYERS + 1, total, 2),
                                                    0.05 + 0.3 * rand(batch, LAYERS + 1, total, 2)], -1),
        "intermediate_predicted_corners": 2 * rand(batch, LAYERS, total, 4 * 33),
        "initial_reference_points": torch.cat([0.2 + 0.6 * rand(batch, LAYERS, total, 2),
                                               0.05 + 0.3 * rand(batch, LAYERS, total, 2)], -1),
        "enc_topk_logits": 4 * rand(batch, QUERIES, NUM_CLASSES) - 3,
        "enc_topk_bboxes": torch.cat([0.2 + 0.6 * rand(batch, QUERIES, 2), 0.05 + 0.3 * rand(batch, QUERIES, 2)], -1),
        "intermediate_predicted_masks": masks,
        "denoising_meta_values": {"dn_positive_idx": positives, "dn_num_group": GROUPS,
                                  "dn_num_split": [num_dn, QUERIES]},
    }


def _oracle_layout(ours: dict, up: torch.Tensor, reg_scale: torch.Tensor) -> dict:
    """The same outputs as D-FINE-seg's decoder returns them in training (``DFINETransformer.forward``)."""
    meta = ours["denoising_meta_values"]
    num_dn = meta["dn_num_split"][0]
    logits, boxes = ours["intermediate_logits"], ours["intermediate_reference_points"]
    corners, refs = ours["intermediate_predicted_corners"], ours["initial_reference_points"]
    masks = ours["intermediate_predicted_masks"]

    def layers(rows: slice) -> list[dict]:
        return [{"pred_logits": logits[:, i + 1, rows], "pred_boxes": boxes[:, i + 1, rows],
                 "pred_corners": corners[:, i, rows], "ref_points": refs[:, i, rows],
                 "teacher_corners": corners[:, -1, rows], "teacher_logits": logits[:, -1, rows],
                 "pred_masks": masks[:, i, rows]} for i in range(LAYERS)]

    regular, denoising = layers(slice(num_dn, None)), layers(slice(None, num_dn))
    final = regular[-1]
    return {
        "pred_logits": final["pred_logits"], "pred_boxes": final["pred_boxes"],
        "pred_corners": final["pred_corners"], "ref_points": final["ref_points"], "pred_masks": final["pred_masks"],
        "up": up, "reg_scale": reg_scale,
        "aux_outputs": regular[:-1],
        "pre_outputs": {"pred_logits": logits[:, 0, num_dn:], "pred_boxes": boxes[:, 0, num_dn:]},
        "enc_aux_outputs": [{"pred_logits": ours["enc_topk_logits"], "pred_boxes": ours["enc_topk_bboxes"]}],
        "enc_meta": {"class_agnostic": False},
        "dn_outputs": denoising,
        "dn_pre_outputs": {"pred_logits": logits[:, 0, :num_dn], "pred_boxes": boxes[:, 0, :num_dn]},
        "dn_meta": meta,
    }


def _oracle_targets(targets: list[dict]) -> list[dict]:
    return [{"labels": t["class_labels"], "boxes": t["boxes"], "masks": t["masks"]} for t in targets]


def _segmentation_config() -> DFineConfig:
    return DFineConfig(num_labels=NUM_CLASSES, use_mask_head=True, decoder_layers=LAYERS)


@pytest.mark.parametrize("seed", [0, 1])
def test_mask_terms_and_matchings_match_dfine_seg(seed: int) -> None:
    from dfine_seg_oracle import oracle_criterion

    targets = _targets([3, 0, 5], seed)
    outputs = _outputs(targets, seed)
    up, reg_scale = torch.tensor([0.5]), torch.tensor([4.0])
    expected = oracle_criterion(NUM_CLASSES)(_oracle_layout(outputs, up, reg_scale), _oracle_targets(targets))
    got = build_criterion(_segmentation_config())(outputs, targets, up=up, reg_scale=reg_scale)

    mask_terms = sorted(name for name in expected if "mask" in name)
    # final, 2 auxiliary and 3 denoising layers, BCE and Dice each
    assert len(mask_terms) == 12 and mask_terms == sorted(name for name in got if "mask" in name)
    for name in mask_terms:
        assert got[name].item() == pytest.approx(expected[name].item(), rel=1e-5, abs=1e-6), name
    assert all(expected[name] > 0.01 for name in mask_terms)  # nothing trivially zero
    # VFL of the final and auxiliary layers is computed on their own matchings, which the mask costs helped decide
    for name in ("loss_vfl", "loss_vfl_aux_0", "loss_vfl_aux_1"):
        assert got[name].item() == pytest.approx(expected[name].item(), rel=1e-5), name


def test_matcher_with_mask_costs_matches_dfine_seg() -> None:
    from dfine_seg_oracle import oracle_criterion

    targets = _targets([4, 2], seed=3)
    outputs = _outputs(targets, seed=3)
    num_dn = outputs["denoising_meta_values"]["dn_num_split"][0]
    logits = outputs["intermediate_logits"][:, -1, num_dn:]
    boxes = outputs["intermediate_reference_points"][:, -1, num_dn:]
    masks = outputs["intermediate_predicted_masks"][:, -1, num_dn:]
    oracle = oracle_criterion(NUM_CLASSES).matcher
    expected = oracle({"pred_logits": logits, "pred_boxes": boxes, "pred_masks": masks},
                      _oracle_targets(targets))["indices"]
    matcher = build_matcher(_segmentation_config())
    got = matcher(logits, boxes, targets, masks=masks)
    for (q, t), (eq, et) in zip(got, expected, strict=True):
        assert torch.equal(q, eq) and torch.equal(t, et)
    # the mask costs change the assignment here: without them another one wins
    boxes_only = matcher(logits, boxes, targets)
    assert any(not torch.equal(a[0], b[0]) for a, b in zip(boxes_only, got, strict=True))


def test_mask_costs_equal_the_direct_formulas() -> None:
    generator = torch.Generator().manual_seed(0)
    logits = 8 * torch.rand(2, 5, 6, 7, generator=generator) - 4
    truth = torch.rand(2, 3, 6, 7, generator=generator)
    focal, dice = mask_match_costs(logits, truth, alpha=0.25, gamma=2.0)
    p, t = logits.sigmoid().flatten(2)[:, :, None], truth.flatten(2)[:, None]
    pos = 0.25 * (1 - p) ** 2 * -(p + 1e-8).log() * t
    neg = 0.75 * p**2 * -(1 - p + 1e-8).log() * (1 - t)
    assert torch.allclose(focal, (pos + neg).mean(-1), atol=1e-6)
    assert torch.allclose(dice, 1 - (2 * (p * t).sum(-1) + 1e-6) / (p.sum(-1) + t.sum(-1) + 1e-6), atol=1e-6)


def test_box_region_and_crop() -> None:
    # a box from x 2.5 to 6.5 and y 1 to 3 on an 8x8 mask: columns 3..6, rows 1..2
    box = torch.tensor([[4.5 / 8, 2 / 8, 4 / 8, 2 / 8]])
    inside, area = mask_box_region(box, (8, 8))
    assert inside[0].nonzero().tolist() == [[y, x] for y in (1, 2) for x in range(3, 7)]
    assert area.item() == pytest.approx(8.0)
    # whatever lies outside the box does not count: a perfect prediction inside it has a Dice loss of ~0
    target = torch.zeros(1, 8, 8)
    target[0, 1:3, 3:7] = 1
    logits = torch.full((1, 8, 8), 20.0)  # "everything is foreground", right inside the box, wrong outside
    logits[0, 1:3, 3:7] = 20.0
    bce, dice = cropped_mask_losses(logits, target, box)
    assert dice.item() < 1e-6 and bce.item() < 1e-6
    logits[0, 1, 3] = -20.0  # one wrong pixel inside: BCE 20 over an area of 8
    bce, _ = cropped_mask_losses(logits, target, box)
    assert bce.item() == pytest.approx(20 / 8, rel=1e-3)


def test_detection_batches_and_models_have_no_mask_terms() -> None:
    targets = _targets([2, 1], seed=5)
    outputs = _outputs(targets, seed=5)
    up, reg_scale = torch.tensor([0.5]), torch.tensor([4.0])
    boxes_only = [{k: v for k, v in t.items() if k != "masks"} for t in targets]
    seg = build_criterion(_segmentation_config())
    assert not any("mask" in name for name in seg(outputs, boxes_only, up=up, reg_scale=reg_scale))
    detector = build_criterion(DFineConfig(num_labels=NUM_CLASSES, decoder_layers=LAYERS))
    assert not any("mask" in name for name in detector(outputs, targets, up=up, reg_scale=reg_scale))
    assert build_matcher(DFineConfig(num_labels=NUM_CLASSES)).mask_cost == 0
