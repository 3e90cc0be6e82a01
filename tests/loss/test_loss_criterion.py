"""The full criterion on real (tiny) D-FINE training outputs from transformers' model."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch
from dfine_loss_testing import NUM_CLASSES, VFL_ALPHA, VFL_GAMMA, make_criterion, make_matcher, tiny_hf_model

from dfine.config import DFineConfig
from dfine.errors import DFineError
from dfine.loss import LOSS_NAMES, DFineCriterion, union_matching
from dfine.loss.functional import box_losses, varifocal_loss

LAYER_TERMS = list(LOSS_NAMES)
UNIT_WEIGHTS = {name.replace("loss_", "weight_loss_"): 1.0 for name in LOSS_NAMES}


def expected_keys(num_layers: int, denoising: bool = True) -> list[str]:
    keys = LAYER_TERMS[:4]
    for i in range(num_layers - 1):
        keys += [k + f"_aux_{i}" for k in LAYER_TERMS]
    keys += [k + "_pre" for k in LAYER_TERMS[:3]] + [k + "_enc_0" for k in LAYER_TERMS[:3]]
    if denoising:
        for i in range(num_layers):
            keys += [k + f"_dn_{i}" for k in LAYER_TERMS]
        keys += [k + "_dn_pre" for k in LAYER_TERMS[:3]]
    return keys


def _labels(sizes: list[int], seed: int = 0) -> list[dict]:
    gen = torch.Generator().manual_seed(seed)
    labels = []
    for n in sizes:
        centre = 0.3 + 0.4 * torch.rand(n, 2, generator=gen)
        size = 0.1 + 0.3 * torch.rand(n, 2, generator=gen)
        labels.append({"class_labels": torch.randint(0, NUM_CLASSES, (n,), generator=gen),
                       "boxes": torch.cat([centre, size], 1)})
    return labels


def _run(sizes=(3, 1), num_layers=3, perturb=True, seed=0):
    model = tiny_hf_model(num_layers, perturb=perturb, seed=seed)
    model.zero_grad(set_to_none=True)
    labels = _labels(list(sizes), seed)
    torch.manual_seed(seed)
    outputs = model(torch.rand(len(sizes), 3, 64, 64), labels=labels)
    decoder = model.model.decoder
    return model, outputs, labels, decoder.up, decoder.reg_scale


@pytest.mark.parametrize("num_layers, count", [(3, 38), (6, 68)])
def test_keys_and_count(num_layers, count):
    _, outputs, labels, up, reg_scale = _run(num_layers=num_layers)
    losses = make_criterion()(outputs, labels, up, reg_scale)
    assert list(losses) == expected_keys(num_layers)
    assert len(losses) == count
    assert all(v.dim() == 0 and torch.isfinite(v) for v in losses.values())


def test_backward_reaches_every_head():
    model, outputs, labels, up, reg_scale = _run()
    losses = make_criterion()(outputs, labels, up, reg_scale)
    sum(losses.values()).backward()
    heads = ["model.decoder.class_embed", "model.decoder.bbox_embed", "model.decoder.pre_bbox_head",
             "model.decoder.lqe_layers", "model.decoder.query_pos_head", "model.decoder.layers",
             "model.enc_score_head", "model.enc_bbox_head", "model.enc_output", "model.denoising_class_embed"]
    checked = 0
    for name, param in model.named_parameters():
        if param.requires_grad and any(name.startswith(h) for h in heads):
            assert param.grad is not None and param.grad.abs().sum() > 0, name
            checked += 1
    assert checked > 100
    # GO-LSD: every student layer is distilled (non-zero DDF); the last dn layer is its own teacher (0).
    assert all(losses[f"loss_ddf_aux_{i}"] > 0 for i in range(2))
    assert losses["loss_ddf_dn_0"] > 0 and losses["loss_ddf_dn_1"] > 0 and losses["loss_ddf_dn_2"] == 0


def test_dict_holds_weighted_terms():
    _, outputs, labels, up, reg_scale = _run()
    default = make_criterion()
    weighted = default(outputs, labels, up, reg_scale)
    unit = make_criterion(**UNIT_WEIGHTS)(outputs, labels, up, reg_scale)
    weights = DFineConfig()
    for name, value in weighted.items():
        base = "_".join(name.split("_")[:2])
        assert torch.allclose(value, unit[name] * getattr(weights, base.replace("loss_", "weight_loss_")))
    partial = DFineCriterion(NUM_CLASSES, default.matcher, {"loss_vfl": 1.0}, default.alpha, default.gamma,
                             default.reg_max)(outputs, labels, up, reg_scale)
    assert all(k.startswith("loss_vfl") for k in partial) and len(partial) == 3 + 2 + 3 + 1


def test_wiring_vfl_own_matching_boxes_union_matching():
    _, outputs, labels, up, reg_scale = _run()
    losses = make_criterion(**UNIT_WEIGHTS)(outputs, labels, up, reg_scale)
    num_dn = outputs.denoising_meta_values["dn_num_split"][0]
    logits = outputs.intermediate_logits[:, :, num_dn:].detach()
    boxes = outputs.intermediate_reference_points[:, :, num_dn:].detach()
    match = make_matcher()
    heads = {"": (logits[:, 3], boxes[:, 3]), "_aux_0": (logits[:, 1], boxes[:, 1]),
             "_aux_1": (logits[:, 2], boxes[:, 2]), "_pre": (logits[:, 0], boxes[:, 0]),
             "_enc_0": (outputs.enc_topk_logits.detach(), outputs.enc_topk_bboxes.detach())}
    own = {suffix: match(lg, bx, labels) for suffix, (lg, bx) in heads.items()}
    go = union_matching(list(own.values()))
    num_go = sum(len(q) for q, _ in go)
    assert num_go >= 4  # at least one query per target

    def flat(matching):
        b = torch.cat([torch.full_like(q, i) for i, (q, _) in enumerate(matching)])
        q = torch.cat([q for q, _ in matching])
        lab = torch.cat([t["class_labels"][g] for t, (_, g) in zip(labels, matching)])
        box = torch.cat([t["boxes"][g] for t, (_, g) in zip(labels, matching)])
        return b, q, lab, box

    gb, gq, _, gbox = flat(go)
    for suffix, (lg, bx) in heads.items():
        b, q, lab, box = flat(own[suffix])
        expected = varifocal_loss(lg, bx, b, q, lab, box, 4.0, VFL_ALPHA, VFL_GAMMA).item()
        assert losses["loss_vfl" + suffix].item() == pytest.approx(expected, rel=1e-6)
        l1, giou = box_losses(bx[gb, gq], gbox, float(num_go))
        assert losses["loss_bbox" + suffix].item() == pytest.approx(l1.item(), rel=1e-6)
        assert losses["loss_giou" + suffix].item() == pytest.approx(giou.item(), rel=1e-6)


def test_agrees_with_transformers_where_the_wirings_coincide():
    # Untouched init: every layer's box equals the pre box (zero FDR heads) and lies inside (0, 1), so transformers'
    # off-by-one dn pairing and its [0, 1] clamp change nothing for these terms. Its dn_{i+1} is our dn_{i}; its dn_0
    # is our dn_pre; its main vfl is our final vfl (own matching in both).
    _, outputs, labels, up, reg_scale = _run(perturb=False)
    assert (outputs.intermediate_reference_points > 0).all() and (outputs.intermediate_reference_points < 1).all()
    ours = make_criterion()(outputs, labels, up, reg_scale)
    theirs = outputs.loss_dict
    pairs = {"loss_vfl": "loss_vfl"}
    for term in ("vfl", "bbox", "giou"):
        pairs[f"loss_{term}_dn_0"] = f"loss_{term}_dn_pre"
        pairs.update({f"loss_{term}_dn_{i + 1}": f"loss_{term}_dn_{i}" for i in range(2)})
    pairs.update({f"loss_fgl_dn_{i}": f"loss_fgl_dn_{i}" for i in range(3)})
    for hf_name, our_name in pairs.items():
        assert abs(theirs[hf_name].item() - ours[our_name].item()) < 1e-5, (hf_name, our_name)


def test_one_image_without_targets():
    model, outputs, labels, up, reg_scale = _run(sizes=(3, 0, 2))
    losses = make_criterion()(outputs, labels, up, reg_scale)
    assert list(losses) == expected_keys(3)
    assert all(torch.isfinite(v) for v in losses.values())
    sum(losses.values()).backward()
    assert model.model.decoder.bbox_embed[0].layers[0].weight.grad.abs().sum() > 0


def test_no_targets_at_all():
    model, outputs, labels, up, reg_scale = _run(sizes=(0, 0))
    assert outputs.denoising_meta_values is None
    losses = make_criterion()(outputs, labels, up, reg_scale)
    assert list(losses) == expected_keys(3, denoising=False)
    assert all(torch.isfinite(v) for v in losses.values())
    # Nothing to localise; classification still pushes every query down and DDF still distils every query.
    assert all(v == 0 for k, v in losses.items() if k.split("_")[1] in ("bbox", "giou", "fgl"))
    assert all(v > 0 for k, v in losses.items() if k.split("_")[1] in ("vfl", "ddf"))
    sum(losses.values()).backward()
    assert model.model.decoder.class_embed[2].weight.grad.abs().sum() > 0


def test_empty_denoising_meta_keeps_the_key_set():
    # The original returns an empty denoising meta when no image has a target; the dn terms are then 0.
    _, outputs, labels, up, reg_scale = _run(sizes=(0, 0))
    fields = {k: getattr(outputs, k) for k in ("intermediate_logits", "intermediate_reference_points",
                                               "intermediate_predicted_corners", "initial_reference_points",
                                               "enc_topk_logits", "enc_topk_bboxes")}
    empty = torch.zeros(0, dtype=torch.long)
    fields["denoising_meta_values"] = {"dn_positive_idx": [empty, empty], "dn_num_group": 1, "dn_num_split": [0, 30]}
    losses = make_criterion()(fields, labels, up, reg_scale)
    assert list(losses) == expected_keys(3)
    assert all(losses[k] == 0 for k in losses if "_dn_" in k)


def test_stateless_and_access_by_key_or_attribute():
    _, outputs, labels, up, reg_scale = _run()
    _, other, other_labels, _, _ = _run(sizes=(2, 5), seed=1)
    criterion = make_criterion()
    first = criterion(outputs, labels, up, reg_scale)
    criterion(other, other_labels, up, reg_scale)
    again = criterion(dict(outputs), labels, up, reg_scale)
    as_attributes = criterion(SimpleNamespace(**dict(outputs)), labels, up, reg_scale)
    for name in first:
        assert torch.equal(first[name], again[name]) and torch.equal(first[name], as_attributes[name]), name
    assert not any(isinstance(v, torch.Tensor) for v in vars(criterion).values())


def test_uses_the_reg_scale_passed_in():
    _, outputs, labels, up, _ = _run()
    criterion = make_criterion()
    four = criterion(outputs, labels, up, torch.tensor([4.0]))
    eight = criterion(outputs, labels, up, torch.tensor([8.0]))
    assert four["loss_fgl"] != eight["loss_fgl"]
    assert four["loss_vfl"] == eight["loss_vfl"] and four["loss_ddf_aux_0"] == eight["loss_ddf_aux_0"]


def test_distributed_normalisation_single_rank(tmp_path):
    import torch.distributed as dist

    _, outputs, labels, up, reg_scale = _run()
    criterion = make_criterion()
    local = criterion(outputs, labels, up, reg_scale)
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        reduced = criterion(outputs, labels, up, reg_scale)
    finally:
        dist.destroy_process_group()
    for name in local:
        assert math.isclose(local[name].item(), reduced[name].item(), rel_tol=1e-6), name


def test_bad_labels_are_a_user_error():
    _, outputs, labels, up, reg_scale = _run()
    labels[0]["class_labels"][0] = NUM_CLASSES
    with pytest.raises(DFineError, match="classes"):
        make_criterion()(outputs, labels, up, reg_scale)


def test_built_from_the_config_fields():
    """build_criterion reads every number from the config: the criterion and matcher have no defaults of their own."""
    built = make_criterion(weight_loss_fgl=0.3, focal_loss_alpha=0.5, focal_loss_gamma=1.5, matcher_giou_cost=3.0,
                           matcher_alpha=0.4, max_num_bins=16)
    assert built.weight_dict == {"loss_vfl": 1.0, "loss_bbox": 5.0, "loss_giou": 2.0, "loss_fgl": 0.3, "loss_ddf": 1.5}
    assert (built.alpha, built.gamma, built.reg_max) == (0.5, 1.5, 16)
    assert (built.matcher.giou_cost, built.matcher.alpha, built.matcher.class_cost) == (3.0, 0.4, 2.0)


def test_config_defaults_are_the_transformers_defaults():
    transformers = pytest.importorskip("transformers")
    ours, theirs = DFineConfig(), transformers.DFineConfig()
    names = [*(n.replace("loss_", "weight_loss_") for n in LOSS_NAMES), "focal_loss_alpha", "focal_loss_gamma",
             "matcher_class_cost", "matcher_bbox_cost", "matcher_giou_cost", "matcher_alpha", "matcher_gamma",
             "max_num_bins"]
    assert {n: getattr(ours, n) for n in names} == {n: getattr(theirs, n) for n in names}
