"""State-dict key translation between the three layouts (the original's and transformers';
transformers' ``models/d_fine/convert_d_fine_original_pytorch_checkpoint_to_hf.py`` maps the first to the second).

- **internal**: our module names, equal to Hugging Face's in-memory names without the tied top-level
  ``class_embed`` / ``bbox_embed`` aliases (``model.encoder.aifi.0.layers.0.self_attn.o_proj.weight`` …);
- **hub**: what ``model.safetensors`` files on the hub hold (legacy names: ``encoder.encoder.N``, ``out_proj``,
  ``fc1`` / ``fc2``); :func:`to_hub_names` writes them, :func:`to_internal_names` reads either. A ``DFineModel``
  folder (ours or transformers') holds the same names without the ``model.`` prefix, and a transformers one has no
  detection heads (``decoder.class_embed`` / ``decoder.bbox_embed`` belong to ``DFineForObjectDetection`` there);
- **original**: the Peterande/D-FINE ``.pth`` state dicts (``backbone.stem.stem1.conv.weight`` …), translated by
  one declarative table, :data:`ORIGINAL_RENAMES`, plus the q/k/v split of packed attention weights. D-FINE-seg's
  ``.pt`` files (ArgoHA/D-FINE-seg) share this layout and add the mask branch, ``decoder.mask_decoder.*`` and
  ``decoder.mask_head.*``, whose names only lose the ``decoder.`` prefix (:data:`MASK_BRANCH`).
"""

from __future__ import annotations

import re

from torch import Tensor

# (pattern, replacement) applied in order to every original key; the first matching rule of each group applies.
ORIGINAL_RENAMES: list[tuple[str, str]] = [
    # backbone
    (r"^backbone\.stem\.", "model.backbone.model.embedder."),
    (r"^backbone\.stages\.", "model.backbone.model.encoder.stages."),
    (r"^(model\.backbone\..*)\.conv\.(weight)$", r"\1.convolution.\2"),
    (r"^(model\.backbone\..*)\.bn\.", r"\1.normalization."),
    # encoder
    (r"^encoder\.input_proj\.(\d+)\.conv\.", r"model.encoder_input_proj.\1.0."),
    (r"^encoder\.input_proj\.(\d+)\.norm\.", r"model.encoder_input_proj.\1.1."),
    (r"^encoder\.encoder\.(\d+)\.layers\.(\d+)\.self_attn\.out_proj\.",
     r"model.encoder.aifi.\1.layers.\2.self_attn.o_proj."),
    (r"^encoder\.encoder\.(\d+)\.layers\.(\d+)\.self_attn\.in_proj_",
     r"model.encoder.aifi.\1.layers.\2.self_attn.in_proj_"),
    (r"^encoder\.encoder\.(\d+)\.layers\.(\d+)\.linear1\.", r"model.encoder.aifi.\1.layers.\2.mlp.layers.0."),
    (r"^encoder\.encoder\.(\d+)\.layers\.(\d+)\.linear2\.", r"model.encoder.aifi.\1.layers.\2.mlp.layers.1."),
    (r"^encoder\.encoder\.(\d+)\.layers\.(\d+)\.norm1\.", r"model.encoder.aifi.\1.layers.\2.self_attn_layer_norm."),
    (r"^encoder\.encoder\.(\d+)\.layers\.(\d+)\.norm2\.", r"model.encoder.aifi.\1.layers.\2.final_layer_norm."),
    (r"^encoder\.downsample_convs\.(\d+)\.0\.cv([12])\.", r"model.encoder.downsample_convs.\1.conv\2."),
    (r"^encoder\.(fpn|pan)_blocks\.(\d+)\.cv1\.", r"model.encoder.\1_blocks.\2.conv1."),
    (r"^encoder\.(fpn|pan)_blocks\.(\d+)\.cv2\.0\.", r"model.encoder.\1_blocks.\2.csp_rep1."),
    (r"^encoder\.(fpn|pan)_blocks\.(\d+)\.cv2\.1\.", r"model.encoder.\1_blocks.\2.conv2."),
    (r"^encoder\.(fpn|pan)_blocks\.(\d+)\.cv3\.0\.", r"model.encoder.\1_blocks.\2.csp_rep2."),
    (r"^encoder\.(fpn|pan)_blocks\.(\d+)\.cv3\.1\.", r"model.encoder.\1_blocks.\2.conv3."),
    (r"^encoder\.(fpn|pan)_blocks\.(\d+)\.cv4\.", r"model.encoder.\1_blocks.\2.conv4."),
    (r"^encoder\.lateral_convs\.", "model.encoder.lateral_convs."),
    # decoder
    (r"^decoder\.input_proj\.(\d+)\.conv\.", r"model.decoder_input_proj.\1.0."),
    (r"^decoder\.input_proj\.(\d+)\.norm\.", r"model.decoder_input_proj.\1.1."),
    (r"^decoder\.decoder\.layers\.(\d+)\.self_attn\.out_proj\.", r"model.decoder.layers.\1.self_attn.o_proj."),
    (r"^decoder\.decoder\.layers\.(\d+)\.self_attn\.in_proj_", r"model.decoder.layers.\1.self_attn.in_proj_"),
    (r"^decoder\.decoder\.layers\.(\d+)\.cross_attn\.", r"model.decoder.layers.\1.encoder_attn."),
    (r"^decoder\.decoder\.layers\.(\d+)\.gateway\.", r"model.decoder.layers.\1.gateway."),
    (r"^decoder\.decoder\.layers\.(\d+)\.norm1\.", r"model.decoder.layers.\1.self_attn_layer_norm."),
    (r"^decoder\.decoder\.layers\.(\d+)\.norm3\.", r"model.decoder.layers.\1.final_layer_norm."),
    (r"^decoder\.decoder\.layers\.(\d+)\.linear1\.", r"model.decoder.layers.\1.mlp.layers.0."),
    (r"^decoder\.decoder\.layers\.(\d+)\.linear2\.", r"model.decoder.layers.\1.mlp.layers.1."),
    (r"^decoder\.decoder\.lqe_layers\.", "model.decoder.lqe_layers."),
    (r"^decoder\.dec_score_head\.", "model.decoder.class_embed."),
    (r"^decoder\.dec_bbox_head\.", "model.decoder.bbox_embed."),
    (r"^decoder\.(pre_bbox_head|query_pos_head)\.", r"model.decoder.\1."),
    (r"^decoder\.denoising_class_embed\.", "model.denoising_class_embed."),
    (r"^decoder\.enc_output\.proj\.", "model.enc_output.0."),
    (r"^decoder\.enc_output\.norm\.", "model.enc_output.1."),
    (r"^decoder\.(enc_score_head|enc_bbox_head)\.", r"model.\1."),
    (r"^decoder\.(up|reg_scale)$", r"model.decoder.\1"),
    # D-FINE-seg's mask branch (dfine_seg_*_coco.pt): its own module names, only the prefix moves
    (r"^decoder\.(mask_decoder|mask_head)\.", r"model.\1."),
]

# Derived or duplicated entries of original checkpoints: anchors/valid_mask depend on the export size, and the
# decoder keeps a second copy of up/reg_scale.
ORIGINAL_DROPPED = re.compile(r"^decoder\.(anchors|valid_mask|decoder\.up|decoder\.reg_scale)$")

# Hub files use the names of older transformers versions for these modules (transformers'
# ``conversion_mapping.py``, entry ``d_fine``).
_HUB_TO_INTERNAL = [
    (r"^model\.encoder\.encoder\.(\d+)\.layers\.", r"model.encoder.aifi.\1.layers."),
    (r"\.self_attn\.out_proj\.", ".self_attn.o_proj."),
    (r"(layers\.\d+)\.fc1\.", r"\1.mlp.layers.0."),
    (r"(layers\.\d+)\.fc2\.", r"\1.mlp.layers.1."),
]
_INTERNAL_TO_HUB = [
    (r"^model\.encoder\.aifi\.(\d+)\.layers\.", r"model.encoder.encoder.\1.layers."),
    (r"\.self_attn\.o_proj\.", ".self_attn.out_proj."),
    (r"(layers\.\d+)\.mlp\.layers\.0\.", r"\1.fc1."),
    (r"(layers\.\d+)\.mlp\.layers\.1\.", r"\1.fc2."),
]
# The per-layer detection heads: absent as a whole from a transformers DFineModel file (see absent_detection_heads).
# The prefix is optional so that the pattern also fits DFineModel's own names.
DETECTION_HEADS = re.compile(r"^(model\.)?decoder\.(class_embed|bbox_embed)\.")
# The mask branch of segmentation models (internal names; the prefix is optional as above).
MASK_BRANCH = re.compile(r"^(model\.)?(mask_decoder|mask_head)\.")
_LAYER_MLP = re.compile(r"^model\.(encoder\.(aifi|encoder)\.\d+\.layers|decoder\.layers)\.\d+\.")


def is_original_layout(state_dict: dict[str, Tensor]) -> bool:
    """True for Peterande/D-FINE key names (top-level ``backbone.`` / ``encoder.`` / ``decoder.``)."""
    return any(k.startswith("decoder.dec_score_head.") or k.startswith("backbone.stem.") for k in state_dict)


def is_base_model_layout(state_dict: dict[str, Tensor]) -> bool:
    """True for a ``DFineModel`` state dict (ours or transformers'): hub names without the ``model.`` prefix."""
    return (not any(k.startswith("model.") for k in state_dict)
            and any(k.startswith("backbone.model.") for k in state_dict) and not is_original_layout(state_dict))


def absent_detection_heads(state_dict: dict[str, Tensor]) -> re.Pattern[str] | None:
    """:data:`DETECTION_HEADS` when no key of the decoder's class/box heads is present (internal names): a
    transformers DFineModel file, whose heads a model initialises fresh; else None. A partial set is not this
    case, and stays a missing-key error."""
    return None if any(DETECTION_HEADS.match(k) for k in state_dict) else DETECTION_HEADS


def _rename(key: str, rules: list[tuple[str, str]]) -> str:
    for pattern, replacement in rules:
        key = re.sub(pattern, replacement, key)
    return key


def from_original(state_dict: dict[str, Tensor]) -> dict[str, Tensor]:
    """Translate an original D-FINE state dict into internal names (packed q/k/v split into three)."""
    out: dict[str, Tensor] = {}
    for key, value in state_dict.items():
        if ORIGINAL_DROPPED.match(key):
            continue
        new_key = _rename(key, ORIGINAL_RENAMES)
        if ".self_attn.in_proj_" in new_key:
            prefix, kind = new_key.split(".in_proj_")  # kind: "weight" or "bias"
            for name, chunk in zip(("q_proj", "k_proj", "v_proj"), value.chunk(3, dim=0)):
                out[f"{prefix}.{name}.{kind}"] = chunk.clone()
            continue
        out[new_key] = value
    return out


def to_internal_names(state_dict: dict[str, Tensor]) -> dict[str, Tensor]:
    """Hub (legacy or current transformers names, with or without the ``model.`` prefix of
    DFineForObjectDetection) or original layout -> internal names.

    The tied top-level ``class_embed.*`` / ``bbox_embed.*`` aliases of transformers' in-memory state dict are
    dropped: they are the same tensors as ``model.decoder.class_embed.*`` / ``bbox_embed.*``.
    """
    if is_original_layout(state_dict):
        return from_original(state_dict)
    if is_base_model_layout(state_dict):
        # internal names always carry the prefix: one set of rename rules, and a DFineModel file loads in both classes
        state_dict = {f"model.{k}": v for k, v in state_dict.items()}
    out = {}
    for key, value in state_dict.items():
        if key.startswith(("class_embed.", "bbox_embed.")):
            continue
        out[_rename(key, _HUB_TO_INTERNAL) if (key.startswith("model.encoder.encoder.") or _LAYER_MLP.match(key)
                                               or ".self_attn.out_proj." in key) else key] = value
    return out


def to_hub_names(state_dict: dict[str, Tensor]) -> dict[str, Tensor]:
    """Internal names -> the names hub ``model.safetensors`` files use."""
    return {(_rename(key, _INTERNAL_TO_HUB) if _LAYER_MLP.match(key) else key): value
            for key, value in state_dict.items()}
