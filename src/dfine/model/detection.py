"""The public model classes: ``DFineModel`` (the network with ``from_pretrained``) and
``DFineForObjectDetection`` (the network, the loss when ``labels`` are given, and the deploy form on request).

``forward`` takes the keyword arguments of transformers' ``forward`` (``return_dict``, ``output_hidden_states`` ...).
"""

from __future__ import annotations

from functools import cached_property
from typing import Any

import torch
from torch import Tensor, nn

from dfine.config import DFineConfig
from dfine.model.hf_compat import TransformersModelMixin
from dfine.model.network import DFineNetwork
from dfine.model.outputs import DFineModelOutput, DFineObjectDetectionOutput
from dfine.model.pretrained import PretrainedMixin
from dfine.ops.fdr import weighting_function
from dfine.ops.uncertainty import edge_uncertainty


def _auxiliary_outputs(outputs: DFineModelOutput) -> list[dict[str, Tensor]]:
    """``{"logits", "pred_boxes"}`` (and ``"pred_masks"`` when masks were predicted) of the matching queries of
    decoder layers 0 … L−2 (training outputs only), then of the encoder proposals: the outputs the criterion
    supervises besides the final layer and the pre head."""
    meta = outputs.denoising_meta_values
    num_dn = meta["dn_num_split"][0] if meta is not None else 0
    logits = outputs.intermediate_logits[:, :, num_dn:]
    boxes = outputs.intermediate_reference_points[:, :, num_dn:]
    # training stacks are (pre, layer 0 … L−1); eval stacks hold the evaluated layer only (range is then empty)
    layers = [{"logits": logits[:, i], "pred_boxes": boxes[:, i]} for i in range(1, logits.shape[1] - 1)]
    masks = outputs.intermediate_predicted_masks
    if masks is not None and masks.shape[1] > 1:  # layers 0 … L−1, without a pre entry
        for i, layer in enumerate(layers):
            layer["pred_masks"] = masks[:, i, num_dn:]
    return layers + [{"logits": outputs.enc_topk_logits, "pred_boxes": outputs.enc_topk_bboxes}]


def _with_mask_head(config: DFineConfig, enabled: bool) -> DFineConfig:
    """``config`` itself when its mask head flag is ``enabled``, else a copy with it set so: a model class decides
    whether it has a mask branch, whatever checkpoint its config came from."""
    if config.use_mask_head == enabled:
        return config
    data = config.to_dict()
    del data["architectures"]  # names the other class; derived again from the flag
    return DFineConfig.from_dict(data, use_mask_head=enabled)


class DFineModel(PretrainedMixin, DFineNetwork):
    """The D-FINE network without the loss (transformers' ``DFineModel``). ``forward(pixel_values)`` ->
    :class:`~dfine.model.outputs.DFineModelOutput`; see :class:`~dfine.model.network.DFineNetwork`."""


class DFineForObjectDetection(PretrainedMixin, TransformersModelMixin):
    """D-FINE with the detection outputs and, whenever ``labels`` are given (training or eval mode), the loss.

    ``forward(pixel_values)`` -> :class:`DFineObjectDetectionOutput` with ``logits`` (B, Q, C) and ``pred_boxes``
    (B, Q, 4) normalised cxcywh. Post-process with :meth:`dfine.DFineImageProcessor.post_process_object_detection`.
    """

    base_model_prefix = "model"
    output_type: type[DFineObjectDetectionOutput] = DFineObjectDetectionOutput
    has_mask_head = False  # DFineForInstanceSegmentation: True

    def __init__(self, config: DFineConfig) -> None:
        super().__init__()
        config = _with_mask_head(config, self.has_mask_head)
        self.config = config
        self.model = DFineModel(config)

    @cached_property
    def criterion(self) -> nn.Module:
        """The training loss (stateless; built on first use so inference never imports scipy)."""
        from dfine.loss import build_criterion

        return build_criterion(self.config)

    def deploy(self, image_size: int | tuple[int, int] | None = None, decoder_layers: int | None = None) -> nn.Module:
        """An inference-only copy in deploy form (folded batch norm, merged RepVGG, precomputed buffers).

        See :func:`dfine.model.deploy.deployed.deploy`; this model is not changed. ``forward(pixel_values)`` of the copy
        returns ``(logits, pred_boxes)`` as a named tuple, equal to this model's outputs to float rounding.
        ``decoder_layers`` keeps only the first K decoder layers (:meth:`set_decoder_layers`).
        """
        from dfine.model.deploy.deployed import deploy

        return deploy(self, image_size, decoder_layers)

    def set_decoder_layers(self, layers: int | None) -> DFineForObjectDetection:
        """Stop inference after ``layers`` decoder layers (None: the configured depth, every layer), in place.

        Each D-FINE decoder layer predicts boxes (GO-LSD supervises them all), so fewer layers trade a little
        accuracy for speed without retraining; training is not affected. See :mod:`dfine.model.depth`. Returns
        the model.
        """
        from dfine.model.depth import set_decoder_layers

        set_decoder_layers(self, layers)
        return self

    def optimize_for_inference(self, dtype: torch.dtype | str | None = None, compile: bool = False,
                               cuda_graph: bool = False, image_size: int | tuple[int, int] | None = None,
                               batch_size: int = 1, **kwargs: Any) -> nn.Module:
        """A fast inference copy: deploy form, fp16/bf16 (head in fp32), channels-last, torch.compile, CUDA graph.

        See :func:`dfine.model.deploy.fast.optimize_for_inference` for all options; this model is not changed.
        """
        from dfine.model.deploy.fast import optimize_for_inference

        return optimize_for_inference(self, dtype=dtype, compile=compile, cuda_graph=cuda_graph,
                                      image_size=image_size, batch_size=batch_size, **kwargs)

    def _edge_uncertainty(self, outputs: DFineModelOutput) -> Tensor:
        """σ of each edge of the final layer's boxes (the last entry of the corner and reference stacks, which line
        up with ``pred_boxes`` in training and in eval mode)."""
        decoder = self.model.decoder
        project = weighting_function(decoder.max_num_bins, decoder.up, decoder.reg_scale)
        return edge_uncertainty(outputs.intermediate_predicted_corners[:, -1], outputs.initial_reference_points[:, -1],
                                project, decoder.reg_scale)

    def forward(
        self,
        pixel_values: Tensor | None,
        pixel_mask: Tensor | None = None,
        encoder_outputs: Any = None,
        inputs_embeds: list[Tensor] | None = None,
        labels: list[dict[str, Tensor]] | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        output_uncertainty: bool = False,
    ) -> DFineObjectDetectionOutput | tuple[Any, ...]:
        """The arguments of transformers' ``DFineForObjectDetection.forward`` (see :meth:`DFineModel.forward`).

        With ``labels`` the loss is computed in training mode (with denoising queries) and in eval mode (without:
        the final-layer and encoder terms on what the eval forward computes), as transformers does.
        ``return_dict=False`` returns ``to_tuple()``, the loss first when present.

        ``output_uncertainty`` (ours, not transformers') also fills ``edge_uncertainty`` (B, Q, 4), the spread of
        each edge of ``pred_boxes`` under the final layer's FDR distributions (:mod:`dfine.ops.uncertainty`);
        ``logits`` and ``pred_boxes`` are the same with or without it.
        """
        outputs = self.model(pixel_values, pixel_mask=pixel_mask, encoder_outputs=encoder_outputs,
                             inputs_embeds=inputs_embeds, labels=labels, output_attentions=output_attentions,
                             output_hidden_states=output_hidden_states, return_dict=True)
        loss = loss_dict = auxiliary_outputs = None
        if labels is not None:
            loss_dict = self.criterion(outputs, labels, up=self.model.decoder.up,
                                       reg_scale=self.model.decoder.reg_scale)
            loss = sum(loss_dict.values())
            auxiliary_outputs = _auxiliary_outputs(outputs)
        final = {"logits": outputs.intermediate_logits[:, -1],
                 "pred_boxes": outputs.intermediate_reference_points[:, -1]}
        if outputs.intermediate_predicted_masks is not None:
            final["pred_masks"] = outputs.intermediate_predicted_masks[:, -1]
        result = self.output_type(
            loss=loss,
            loss_dict=loss_dict,
            auxiliary_outputs=auxiliary_outputs,
            **final,
            **{name: getattr(outputs, name) for name in outputs.keys()},
            edge_uncertainty=self._edge_uncertainty(outputs) if output_uncertainty else None,
        )
        return result.to_tuple() if return_dict is False else result
