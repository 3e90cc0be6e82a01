"""The forward API a Hugging Face user relies on: keyword arguments, return_dict, hidden states, the eval loss,
dict-like outputs, model attributes, and one-line errors for malformed inputs."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hf_oracle import calibrate_batch_norms, hf_model_from_ours, natural_images, randomize_weights, to_pixel_values

import dfine
from dfine.errors import ModelInputError, ModelInputTypeError, UnsupportedFeatureError

transformers = pytest.importorskip("transformers")

SIZE = 320


def _labels() -> list[dict[str, torch.Tensor]]:
    return [
        {"class_labels": torch.tensor([0, 2]), "boxes": torch.tensor([[0.5, 0.5, 0.2, 0.3], [0.3, 0.3, 0.1, 0.1]])},
        {"class_labels": torch.tensor([1]), "boxes": torch.tensor([[0.4, 0.6, 0.3, 0.3]])},
    ]


@pytest.fixture(scope="module")
def pixel_values() -> torch.Tensor:
    return to_pixel_values(natural_images(2, SIZE, seed=7), SIZE)


@pytest.fixture(scope="module")
def pair(pixel_values, tmp_path_factory):
    """(ours, transformers') nano models with 3 classes and the same perturbed weights, in eval mode."""
    directory = tmp_path_factory.mktemp("forward_api")
    config = dfine.DFineConfig.from_preset("dfine-n-coco", num_labels=3)
    hf = hf_model_from_ours(config, directory / "config")
    randomize_weights(hf, seed=4)
    calibrate_batch_norms(hf, pixel_values)
    hf.save_pretrained(directory / "hf")
    ours = dfine.DFineForObjectDetection.from_pretrained(directory / "hf")
    return ours.eval(), hf.eval()


# -- 1. loss whenever labels are given -----------------------------------------------------------------------------
def test_eval_mode_with_labels_gives_a_loss_and_unchanged_predictions(pair, pixel_values) -> None:
    ours, hf = pair
    with torch.no_grad():
        plain = ours(pixel_values)
        out = ours(pixel_values, labels=_labels())
        expected = hf(pixel_values=pixel_values, labels=_labels())
    assert plain.loss is None and plain.loss_dict is None
    assert out.loss is not None and torch.isfinite(out.loss)
    assert torch.equal(out.loss, sum(out.loss_dict.values()))
    # no denoising in eval mode: the final (evaluated) layer's terms and the encoder's
    assert sorted(out.loss_dict) == sorted(["loss_vfl", "loss_bbox", "loss_giou", "loss_fgl", "loss_vfl_enc_0",
                                            "loss_bbox_enc_0", "loss_giou_enc_0"])
    assert out.denoising_meta_values is None
    assert torch.equal(out.logits, plain.logits) and torch.equal(out.pred_boxes, plain.pred_boxes)
    assert expected.loss is not None  # transformers gives one too, on the same (eval) outputs
    assert len(out.auxiliary_outputs) == len(expected.auxiliary_outputs) == 1
    assert torch.equal(out.auxiliary_outputs[0]["logits"], out.enc_topk_logits)


def test_eval_loss_is_differentiable_in_eval_mode(pair, pixel_values) -> None:
    ours, _ = pair
    out = ours(pixel_values, labels=_labels())
    out.loss.backward()
    assert ours.model.decoder.class_embed[-1].weight.grad is not None
    ours.zero_grad(set_to_none=True)


def test_training_auxiliary_outputs_count_like_transformers() -> None:
    config = dfine.DFineConfig.from_preset("dfine-n-coco", num_labels=3)
    model = dfine.DFineForObjectDetection(config).train()
    out = model(torch.rand(2, 3, 256, 256), labels=_labels())
    num_dn = out.denoising_meta_values["dn_num_split"][0]
    # decoder layers 0 and 1 (of 3), then the encoder proposals; matching queries only
    assert len(out.auxiliary_outputs) == 3
    assert torch.equal(out.auxiliary_outputs[0]["logits"], out.intermediate_logits[:, 1, num_dn:])
    assert torch.equal(out.auxiliary_outputs[1]["pred_boxes"], out.intermediate_reference_points[:, 2, num_dn:])
    assert torch.equal(out.auxiliary_outputs[2]["pred_boxes"], out.enc_topk_bboxes)


# -- 2. keyword arguments ---------------------------------------------------------------------------------------
def test_return_dict_false_gives_the_tuple_loss_first(pair, pixel_values) -> None:
    ours, _ = pair
    with torch.no_grad():
        out = ours(pixel_values, labels=_labels())
        as_tuple = ours(pixel_values, labels=_labels(), return_dict=False)
        base = ours.model(pixel_values, return_dict=False)
    assert type(as_tuple) is tuple and len(as_tuple) == len(out.to_tuple())
    assert torch.equal(as_tuple[0], out.loss) and torch.equal(as_tuple[2], out.logits)
    assert type(base) is tuple and torch.equal(base[0], out.last_hidden_state)


def test_unknown_keyword_is_pythons_type_error(pair, pixel_values) -> None:
    ours, _ = pair
    with pytest.raises(TypeError, match="unexpected keyword argument 'pixel_valuez'"):
        ours(pixel_valuez=pixel_values)
    with pytest.raises(TypeError, match="unexpected keyword argument 'colour'"):
        ours.model(pixel_values, colour=1)


def test_output_attentions_is_a_clear_error(pair, pixel_values) -> None:
    ours, _ = pair
    with pytest.raises(UnsupportedFeatureError, match="output_attentions=True is not supported"):
        ours(pixel_values, output_attentions=True)
    with pytest.raises(ValueError):  # also a ValueError, as transformers' refusals are
        ours.model(pixel_values, output_attentions=True)
    with torch.no_grad():
        assert ours(pixel_values, output_attentions=False).logits.shape == (2, 300, 3)


def test_hidden_states_and_fields_match_transformers(pair, pixel_values) -> None:
    ours, hf = pair
    with torch.no_grad():
        got = ours(pixel_values, output_hidden_states=True)
        expected = hf(pixel_values=pixel_values, output_hidden_states=True)
        plain = ours(pixel_values)
    for name in ("encoder_hidden_states", "decoder_hidden_states"):
        mine, theirs = getattr(got, name), getattr(expected, name)
        assert len(mine) == len(theirs) > 0, name
        for a, b in zip(mine, theirs):
            assert torch.equal(a, b), name  # bit-identical, like the eval outputs
    assert len(got.decoder_hidden_states) == ours.config.decoder_layers + 1
    # the same fields as transformers, but for the all-token encoder boxes we do not compute (see outputs.py)
    assert list(got.keys()) == [k for k in expected.keys() if k != "enc_outputs_coord_logits"]
    assert plain.encoder_hidden_states is None and plain.decoder_hidden_states is None
    assert torch.equal(got.logits, plain.logits) and torch.equal(got.logits, expected.logits)


def test_inputs_embeds_and_encoder_outputs_skip_the_earlier_stages(pair, pixel_values) -> None:
    ours, _ = pair
    net = ours.model
    with torch.no_grad():
        reference = ours(pixel_values)
        projected = [proj(f) for proj, f in zip(net.encoder_input_proj, net.backbone(pixel_values))]
        from_embeds = ours(None, inputs_embeds=projected)
        from_encoder = ours(None, encoder_outputs=(reference.encoder_last_hidden_state,))
    assert torch.equal(from_embeds.logits, reference.logits)
    assert torch.equal(from_encoder.pred_boxes, reference.pred_boxes)
    with pytest.raises(ModelInputError, match="pass pixel_values"):
        ours(None)
    with pytest.raises(ModelInputError, match="inputs_embeds must be a list of 2 feature maps"):
        ours(None, inputs_embeds=projected[:1])


# -- 3. dict-like outputs ---------------------------------------------------------------------------------------
def test_outputs_behave_like_model_output(pair, pixel_values) -> None:
    ours, hf = pair
    with torch.no_grad():
        out = ours(pixel_values)
        expected = hf(pixel_values=pixel_values)
    assert "logits" in out and "loss" not in out and ("logits" in expected) and ("loss" not in expected)
    assert list(out) == out.keys() == list(out.keys())
    assert list(out)[:2] == list(expected)[:2] == ["logits", "pred_boxes"]
    assert len(out) == len(out.keys())
    assert out.get("loss") is None and out.get("logits") is out.logits
    assert [k for k, _ in out.items()] == out.keys() and out.values()
    assert all(a is b for a, b in zip(out.values(), out.to_tuple()))
    assert dict(out)["pred_boxes"] is out.pred_boxes
    assert out["logits"] is out[0] is out.logits
    with pytest.raises(KeyError):
        out["loss"]


# -- 4. model attributes ------------------------------------------------------------------------------------------
def test_model_attributes_like_transformers(pair) -> None:
    ours, hf = pair
    for model in (ours, ours.model):
        assert model.device == torch.device("cpu") and model.dtype == torch.float32
    for options in ({}, {"only_trainable": True}, {"exclude_embeddings": True}):
        assert ours.num_parameters(**options) == hf.num_parameters(**options), options
    assert ours.model.num_parameters() == ours.num_parameters()  # the heads live in the decoder
    with pytest.raises(UnsupportedFeatureError, match="DFineForObjectDetection does not support gradient"):
        ours.gradient_checkpointing_enable()
    with pytest.raises(ValueError):
        ours.model.gradient_checkpointing_enable()
    assert not ours.is_gradient_checkpointing and not ours.supports_gradient_checkpointing


def test_dtype_follows_the_parameters() -> None:
    model = dfine.DFineModel(dfine.DFineConfig.from_preset("dfine-n-coco")).to(torch.bfloat16)
    assert model.dtype == torch.bfloat16


def test_a_bf16_model_on_the_cpu_detects_one_image() -> None:
    """model.to(torch.bfloat16) on the CPU with a single image: the deformable attention's value maps are then views,
    which PyTorch's CPU grid_sample misread in bf16, and every logit and box came out NaN."""
    from dfine.export.synthetic import synthetic_detector

    model = synthetic_detector("dfine-n-coco", 320, seed=0)  # well-conditioned random weights
    pixels = to_pixel_values(natural_images(1, 320, seed=8), 320)
    with torch.inference_mode():
        reference = model(pixels)
        low = model.to(torch.bfloat16)(pixels.bfloat16())
    assert torch.isfinite(low.logits.float()).all() and torch.isfinite(low.pred_boxes.float()).all()
    # the best-scored query is found again, at its place (bf16 is coarse: within 4 px at 320)
    best = reference.logits.sigmoid().amax(-1).argmax()
    distance = (low.pred_boxes[0].float() - reference.pred_boxes[0, best]).abs().amax(-1) * 320
    assert distance.min() <= 4


# -- 5. one-line errors for malformed inputs -------------------------------------------------------------------
BAD_LABELS = [
    ([{"labels": torch.tensor([0]), "boxes": torch.rand(1, 4)}] * 2, ModelInputError,
     r"labels\[0\] has no 'class_labels' key \(rename \"labels\" to \"class_labels\"\)"),
    (_labels()[0], ModelInputTypeError, "labels is one dict for a batch of 2 images"),
    (_labels()[:1], ModelInputError, "labels has 1 dicts for a batch of 2 images"),
    ([{"class_labels": [0], "boxes": [[0.5, 0.5, 0.1, 0.1]]}] * 2, ModelInputTypeError,
     r"labels\[0\]\[\"class_labels\"\] is a list, not a tensor"),
    ([{"class_labels": torch.tensor([0.0]), "boxes": torch.rand(1, 4)}] * 2, ModelInputTypeError,
     r"labels\[0\]\[\"class_labels\"\] is torch.float32"),
    ([{"class_labels": torch.tensor([0]), "boxes": torch.rand(1, 2)}] * 2, ModelInputError,
     r"labels\[0\] has \"class_labels\" of shape \(1,\) and \"boxes\" of shape \(1, 2\)"),
    ([{"class_labels": torch.tensor([0, 1]), "boxes": torch.rand(1, 4)}] * 2, ModelInputError,
     r"\"boxes\" of shape \(1, 4\)"),
]


@pytest.mark.parametrize("train", [False, True])
@pytest.mark.parametrize(("labels", "error", "message"), BAD_LABELS)
def test_malformed_labels_are_one_line_errors(pair, labels, error, message, train) -> None:
    ours, _ = pair
    ours.train(train)
    try:
        with pytest.raises(error, match=message) as caught:
            ours(torch.rand(2, 3, SIZE, SIZE), labels=labels)
    finally:
        ours.eval()
    text = str(caught.value)
    assert "\n" not in text and text.endswith('"boxes" (N, 4) normalised cxcywh float tensors')
    assert isinstance(caught.value, dfine.DFineError)


@pytest.mark.parametrize(("pixels", "error", "message"), [
    (np.zeros((1, 3, SIZE, SIZE), np.float32), ModelInputTypeError,
     r"pixel_values must be a torch.Tensor of shape \(B, 3, H, W\); got numpy.ndarray"),
    (torch.zeros(3, SIZE, SIZE), ModelInputError, r"must have shape \(B, 3, H, W\); got \(3, 320, 320\)"),
    (torch.zeros(1, 3, SIZE, SIZE, dtype=torch.uint8), ModelInputTypeError, "must be a float tensor"),
    (torch.zeros(1, 3, 330, 330), ModelInputError, "multiples of 32; got 330x330"),
    (torch.zeros(1, 3, SIZE, SIZE, device="meta"), ModelInputError, "pixel_values is on meta but the model is on cpu"),
])
def test_malformed_pixel_values_are_one_line_errors(pair, pixels, error, message) -> None:
    ours, _ = pair
    with pytest.raises(error, match=message) as caught:
        ours(pixels)
    assert "\n" not in str(caught.value)


def test_inference_forward_has_no_host_round_trips(pair, pixel_values, monkeypatch) -> None:
    """The input checks must not sync with the device (the inference forward stays capturable)."""
    ours, _ = pair
    with torch.inference_mode():
        ours(pixel_values)  # warm the caches

        def forbidden(*args, **kwargs):
            raise AssertionError("host round trip inside forward")

        for name in ["item", "cpu", "tolist", "numpy", "__bool__", "__int__", "__float__", "nonzero"]:
            monkeypatch.setattr(torch.Tensor, name, forbidden)
        monkeypatch.setattr(torch, "tensor", forbidden)
        ours(pixel_values)
