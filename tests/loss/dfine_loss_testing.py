"""Helpers shared by the loss tests: random inputs and tiny Hugging Face D-FINE models (a test oracle only)."""

from __future__ import annotations

import functools

import torch

from dfine.config import DFineConfig
from dfine.loss import DFineCriterion, HungarianMatcher, build_criterion, build_matcher

NUM_CLASSES = 5

#: VFL's α and γ as every released recipe (and DFineConfig's defaults) sets them
VFL_ALPHA, VFL_GAMMA = 0.75, 2.0


def make_criterion(**config_fields: object) -> DFineCriterion:
    """Our criterion as :func:`dfine.loss.build_criterion` makes it for a config with these fields."""
    return build_criterion(DFineConfig(num_labels=NUM_CLASSES, **config_fields))


def make_matcher() -> HungarianMatcher:
    """Our matcher as :func:`dfine.loss.build_matcher` makes it for the default config."""
    return build_matcher(DFineConfig(num_labels=NUM_CLASSES))


def random_boxes(n: int, generator: torch.Generator) -> torch.Tensor:
    """(n, 4) valid normalised cxcywh boxes well inside the image."""
    centre = 0.3 + 0.4 * torch.rand(n, 2, generator=generator)
    size = 0.05 + 0.3 * torch.rand(n, 2, generator=generator)
    return torch.cat([centre, size], dim=1)


def random_targets(sizes: list[int], generator: torch.Generator, num_classes: int = NUM_CLASSES) -> list[dict]:
    return [
        {"class_labels": torch.randint(0, num_classes, (n,), generator=generator), "boxes": random_boxes(n, generator)}
        for n in sizes
    ]


def tiny_hf_config(decoder_layers: int = 3, num_denoising: int = 10, reg_scale: float = 4.0):
    """A tiny D-FINE config in the style of transformers' own model tests (64×64 input, d = 32, 30 queries)."""
    from transformers import DFineConfig, HGNetV2Config

    backbone = HGNetV2Config(
        stage_in_channels=[16, 64, 128, 256],
        stage_mid_channels=[16, 32, 64, 128],
        stage_out_channels=[64, 128, 256, 512],
        stage_num_blocks=[1, 1, 2, 1],
        stage_downsample=[False, True, True, True],
        stage_light_block=[False, False, True, True],
        stage_kernel_size=[3, 3, 5, 5],
        stage_numb_of_layers=[3, 3, 3, 3],
        embeddings_size=10,
        hidden_sizes=[64, 128, 256, 512],
        depths=[1, 1, 2, 1],
        out_features=["stage2", "stage3", "stage4"],
        out_indices=[2, 3, 4],
        stem_channels=[3, 16, 16],
        use_lab=True,
    )
    return DFineConfig(
        backbone_config=backbone,
        encoder_hidden_dim=32,
        encoder_in_channels=[128, 256, 512],
        feat_strides=[8, 16, 32],
        encoder_layers=1,
        encoder_ffn_dim=64,
        encoder_attention_heads=2,
        dropout=0.0,
        encode_proj_layers=[2],
        d_model=32,
        num_queries=30,
        decoder_in_channels=[32, 32, 32],
        decoder_ffn_dim=64,
        num_feature_levels=3,
        decoder_n_points=[3, 6, 3],
        decoder_n_levels=3,
        decoder_layers=decoder_layers,
        decoder_attention_heads=2,
        num_denoising=num_denoising,
        image_size=64,
        depth_mult=0.34,
        hidden_expansion=0.5,
        reg_scale=reg_scale,
        num_labels=NUM_CLASSES,
    )


@functools.lru_cache(maxsize=None)
def tiny_hf_model(decoder_layers: int = 3, perturb: bool = True, seed: int = 0, **kwargs):
    """A tiny ``DFineForObjectDetection`` in training mode.

    With ``perturb`` the zero-initialised last layers (bbox heads, LQE, pre/enc box heads) get small random weights,
    so the layers predict different boxes and corners (otherwise every DDF is trivially 0 and gradients stop at the
    zero layers). Cached per arguments: callers must not change the weights and should clear gradients first.
    """
    from transformers import DFineForObjectDetection

    torch.manual_seed(seed)
    model = DFineForObjectDetection(tiny_hf_config(decoder_layers, **kwargs))
    if perturb:
        decoder = model.model.decoder
        last_layers = [head.layers[-1] for head in decoder.bbox_embed]
        last_layers += [lqe.reg_conf.layers[-1] for lqe in decoder.lqe_layers]
        last_layers += [decoder.pre_bbox_head.layers[-1], model.model.enc_bbox_head.layers[-1]]
        with torch.no_grad():
            for layer in last_layers:
                layer.weight.normal_(0, 0.05)
                layer.bias.normal_(0, 0.05)
    model.train()
    model.zero_grad(set_to_none=True)
    return model
