"""Output containers with the field names and order of Hugging Face's D-FINE outputs (SPEC Part A §6).

They behave like Hugging Face ``ModelOutput``: attribute access, ``output["logits"]``, and ``to_tuple()`` that
skips fields that are None.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

from torch import Tensor


class _Output:
    def __getitem__(self, key: str | int) -> Any:
        if isinstance(key, str):
            return getattr(self, key)
        return self.to_tuple()[key]

    def keys(self) -> list[str]:
        return [f.name for f in fields(self) if getattr(self, f.name) is not None]  # type: ignore[arg-type]

    def to_tuple(self) -> tuple[Any, ...]:
        return tuple(getattr(self, name) for name in self.keys())


@dataclass
class DFineModelOutput(_Output):
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


@dataclass
class DFineObjectDetectionOutput(_Output):
    """``logits`` (B, Q, C) and ``pred_boxes`` (B, Q, 4, normalised cxcywh) of the evaluated decoder layer.

    In training mode with ``labels``, ``loss`` is the sum of the weighted terms in ``loss_dict``, and ``logits`` /
    ``pred_boxes`` include the denoising queries first (as in Hugging Face).
    """

    loss: Tensor | None = None
    loss_dict: dict[str, Tensor] | None = None
    logits: Tensor | None = None
    pred_boxes: Tensor | None = None
    auxiliary_outputs: list[dict[str, Tensor]] | None = None
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
