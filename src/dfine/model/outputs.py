"""Output containers with the field names and order of Hugging Face's D-FINE outputs (transformers'
``models/d_fine/modeling_d_fine.py: DFineModelOutput, DFineObjectDetectionOutput``).

They behave like Hugging Face ``ModelOutput`` (an ordered dict of the fields that are not None): attribute access,
``output["logits"]`` (a KeyError for a field that is None), ``"logits" in output``, ``keys()`` / ``values()`` /
``items()`` / ``get()``, iteration over the keys, ``len()``, ``dict(output)``, integer indexing and ``to_tuple()``
over the values, in field order.

One difference from transformers: ``enc_outputs_coord_logits`` stays None. transformers runs the encoder box head on
every encoder token (B, S, 4) and then keeps the top ``num_queries``; we run it on the selected tokens only, which
gives the same boxes for a fraction of the cost. So the eval ``to_tuple()`` has one entry fewer than transformers'
(the last one), and the entries before it line up.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, fields
from typing import Any

from torch import Tensor


class _Output(Mapping):
    """Mapping behaviour of ``ModelOutput``: the keys are the fields that are not None, in field order."""

    def __getitem__(self, key: str | int | slice) -> Any:
        if isinstance(key, str):
            # A field that is None is absent, as in ModelOutput (so ``.get`` and ``in`` agree with indexing).
            if key not in self.keys():
                raise KeyError(key)
            return getattr(self, key)
        return self.to_tuple()[key]

    def __contains__(self, key: object) -> bool:
        return key in self.keys()

    def __iter__(self) -> Iterator[str]:
        return iter(self.keys())

    def __len__(self) -> int:
        return len(self.keys())

    def keys(self) -> list[str]:  # type: ignore[override]
        return [f.name for f in fields(self) if getattr(self, f.name) is not None]  # type: ignore[arg-type]

    def to_tuple(self) -> tuple[Any, ...]:
        return tuple(getattr(self, name) for name in self.keys())


@dataclass
class _ModelFields(_Output):
    """The fields of the encoder-decoder's outputs, shared by both output classes."""

    last_hidden_state: Tensor | None = None
    intermediate_hidden_states: Tensor | None = None
    intermediate_logits: Tensor | None = None
    intermediate_reference_points: Tensor | None = None
    intermediate_predicted_corners: Tensor | None = None
    initial_reference_points: Tensor | None = None
    decoder_hidden_states: tuple[Tensor, ...] | None = None
    decoder_attentions: tuple[Tensor, ...] | None = None
    cross_attentions: tuple[Tensor, ...] | None = None
    encoder_last_hidden_state: list[Tensor] | None = None
    encoder_hidden_states: tuple[Tensor, ...] | None = None
    encoder_attentions: tuple[Tensor, ...] | None = None
    init_reference_points: Tensor | None = None
    enc_topk_logits: Tensor | None = None
    enc_topk_bboxes: Tensor | None = None
    enc_outputs_class: Tensor | None = None
    enc_outputs_coord_logits: Tensor | None = None
    denoising_meta_values: dict[str, Any] | None = None
    # segmentation models only (not a transformers field): (B, L', Q, H/4, W/4) mask logits, laid out like
    # intermediate_predicted_corners (training: every decoder layer, denoising queries first; eval: the evaluated one)
    intermediate_predicted_masks: Tensor | None = None


@dataclass
class _DetectionFields(_Output):
    """The fields the detection head and the loss add; in transformers they come before the model's."""

    loss: Tensor | None = None
    loss_dict: dict[str, Tensor] | None = None
    logits: Tensor | None = None
    pred_boxes: Tensor | None = None
    auxiliary_outputs: list[dict[str, Tensor]] | None = None


@dataclass
class DFineModelOutput(_ModelFields):
    """The encoder-decoder's outputs (``DFineModel``)."""

    # segmentation models only (not a transformers field): (B, L', Q, H/4, W/4) mask logits, laid out like
    # intermediate_predicted_corners (training: every decoder layer, denoising queries first; eval: the evaluated one)
    intermediate_predicted_masks: Tensor | None = None


# A dataclass takes its bases' fields in reverse method-resolution order, so _DetectionFields' come first: the field
# order (and so ``to_tuple()``) of transformers' DFineObjectDetectionOutput.
@dataclass
class DFineObjectDetectionOutput(_ModelFields, _DetectionFields):
    """``logits`` (B, Q, C) and ``pred_boxes`` (B, Q, 4, normalised cxcywh) of the evaluated decoder layer.

    With ``labels`` (in training and in eval mode, as in Hugging Face), ``loss`` is the sum of the weighted terms in
    ``loss_dict`` and ``auxiliary_outputs`` lists ``{"logits", "pred_boxes"}`` of the other supervised outputs of the
    matching queries: decoder layers 0 … L−2 (training mode only; eval mode runs no loss on them), then the encoder
    proposals. transformers lists the same number of entries but pairs layer i−1's predictions with layer i (see
    :mod:`dfine.loss.criterion`). In training mode with ``labels``, ``logits`` / ``pred_boxes`` include the
    denoising queries first (as in Hugging Face).

    ``encoder_hidden_states`` (the input of the first AIFI block, then each AIFI block's output, (B, C, H, W)) and
    ``decoder_hidden_states`` (the decoder's input queries, then each layer's output, (B, Q, d)) are filled when
    ``forward`` is called with ``output_hidden_states=True``, with transformers' shapes and meaning.

    ``edge_uncertainty`` (B, Q, 4), not in transformers, is filled when ``forward`` is called with
    ``output_uncertainty=True``: the standard deviation of each box edge (left, top, right, bottom) under the final
    layer's FDR distributions, as fractions of the image's width (left, right) and height (top, bottom); see
    :mod:`dfine.ops.uncertainty`. It is the last field, so the other fields keep transformers' order.
    """

    edge_uncertainty: Tensor | None = None


@dataclass
class DFineInstanceSegmentationOutput(DFineObjectDetectionOutput):
    """:class:`DFineObjectDetectionOutput` plus the masks of D-FINE-seg.

    ``pred_masks`` (B, Q, H/4, W/4) are the mask logits of the evaluated decoder layer's queries (denoising queries
    first in training mode, like ``logits``); post-process with
    :meth:`dfine.DFineImageProcessor.post_process_instance_segmentation`. ``intermediate_predicted_masks``
    (B, L', Q, H/4, W/4) holds every decoder layer's in training mode (the auxiliary and denoising layers' masks;
    each entry of ``auxiliary_outputs`` for a decoder layer also has its ``pred_masks``), the evaluated layer's in
    eval mode. Masks are not predicted in training mode when ``labels`` are given and no target carries ``masks``.
    """

    pred_masks: Tensor | None = None
    intermediate_predicted_masks: Tensor | None = None
