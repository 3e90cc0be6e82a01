"""ImageNet-pretrained HGNetv2 backbones: timm's weights, renamed to our module names.

The original D-FINE starts every COCO training from ``PPHGNetV2_B*_stage1.pth`` (its ``src/nn/backbone/hgnetv2.py``,
class ``HGNetv2``): PaddleClas's PP-HGNetV2 "SSLD stage 1" ImageNet weights (distilled on ImageNet-22k + 1k, before
the ImageNet-1k-only fine-tuning of "stage 2"), converted to PyTorch; early versions of the original code loaded
them under PaddleClas's own name, ``PPHGNetV2_B*_ssld_stage1_pretrained``. timm converted the same PaddleClas
release and publishes it as ``timm/hgnetv2_b{0..6}.ssld_stage1_in22k_in1k`` on the Hugging Face hub (the "stage1 …
in22k_in1k" tag names that checkpoint). Both conversions keep one parameter layout (the original D-FINE code and
timm's ``hgnet.py`` share their module names), so the values should be identical; the two files were not compared
byte for byte. The timm files also carry the ImageNet classifier (``head.*``), which D-FINE never uses and which is
dropped here.

Key mapping, timm -> ours (relative to :class:`dfine.model.backbone.HGNetV2Backbone`, i.e. the module that sits
at ``model.backbone.model`` inside :class:`~dfine.DFineForObjectDetection`):

* ``stem.*`` -> ``embedder.*``;
* ``stages.{s}.*`` (and ``stages_{s}.*`` of timm's ``features_only`` models) -> ``encoder.stages.{s}.*``;
* the ``conv`` / ``bn`` of every conv layer -> ``convolution`` / ``normalization``;
* ``head.*`` (the ImageNet classifier) is dropped.

Everything else (``blocks``, ``layers``, ``conv1``/``conv2`` of light layers, ``aggregation.{0,1}``, ``downsample``,
``lab.scale``/``lab.bias``) keeps its name.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from torch import Tensor, nn

from dfine.errors import CheckpointError, ConfigError, DFineError

logger = logging.getLogger("dfine")

WEIGHTS_NAME = "model.safetensors"
# timm's HGNetv2 variants B0-B3 are built with learnable affine blocks (LAB), B4-B6 without; D-FINE uses B0 (N/S)
# and B2 (M) with LAB and B4 (L) and B5 (X) without, so the timm weights fit the presets as they are.
_VARIANTS = ("B0", "B1", "B2", "B3", "B4", "B5", "B6")
_LAB_VARIANTS = frozenset({"B0", "B1", "B2", "B3"})
# Only a HEAD request with this timeout goes out before the download proper: without it huggingface_hub retries a
# failing request five times with back-off (about 25 s when DNS fails, minutes when packets are dropped).
_PROBE_TIMEOUT_S = 10.0

_RENAMED_PARTS = {"conv": "convolution", "bn": "normalization"}
_KEPT_PARTS = frozenset({
    "stem1", "stem2a", "stem2b", "stem3", "stem4", "downsample", "blocks", "layers", "conv1", "conv2",
    "aggregation", "lab", "scale", "weight", "bias", "running_mean", "running_var", "num_batches_tracked",
})  # fmt: skip


def timm_repo_id(variant: str) -> str:
    """The hub repository of timm's SSLD stage-1 weights of an HGNetv2 variant (``"B0"`` … ``"B6"``)."""
    return f"timm/hgnetv2_{variant.lower()}.ssld_stage1_in22k_in1k"


def _rename(key: str) -> str | None:
    """Our name for one timm key; None for classifier keys; raises KeyError for anything unknown."""
    parts = key.split(".")
    if parts[0] == "head":
        return None
    if parts[0] == "stem":
        out = ["embedder"]
        rest = parts[1:]
    elif parts[0] == "stages" and len(parts) > 1 and parts[1].isdigit():
        out = ["encoder", "stages", parts[1]]
        rest = parts[2:]
    elif parts[0].startswith("stages_") and parts[0][len("stages_"):].isdigit():
        out = ["encoder", "stages", parts[0][len("stages_"):]]
        rest = parts[1:]
    else:
        raise KeyError(key)
    for part in rest:
        if part in _RENAMED_PARTS:
            out.append(_RENAMED_PARTS[part])
        elif part in _KEPT_PARTS or part.isdigit():
            out.append(part)
        else:
            raise KeyError(key)
    return ".".join(out)


def convert_timm_hgnetv2(state_dict: dict[str, Tensor], prefix: str = "") -> dict[str, Tensor]:
    """Rename a timm ``hgnetv2_b*`` state dict to our backbone's parameter names.

    Also accepts timm's ``features_only`` state dicts (``stages_{s}.*``) and the original D-FINE
    ``PPHGNetV2_B*_stage1.pth`` files, which use timm's names without the classifier.

    Args:
        state_dict: timm parameter names -> tensors.
        prefix: put before every converted key: ``""`` (default) gives names relative to the
            :class:`~dfine.model.backbone.HGNetV2Backbone`; ``"model.backbone.model."`` gives the full names inside
            :class:`~dfine.DFineForObjectDetection`.

    Returns:
        The renamed tensors (the same tensor objects, not copies); the classifier (``head.*``) is dropped.

    Raises:
        CheckpointError: a key is neither a backbone key nor a classifier key (all such keys are named), or no
            backbone key was found.
    """
    converted: dict[str, Tensor] = {}
    unknown = []
    for key, value in state_dict.items():
        try:
            new_key = _rename(key)
        except KeyError:
            unknown.append(key)
            continue
        if new_key is not None:
            converted[prefix + new_key] = value
    if unknown:
        shown = ", ".join(unknown[:6]) + (f" (+{len(unknown) - 6} more)" if len(unknown) > 6 else "")
        raise CheckpointError(f"not a timm HGNetv2 state dict: {len(unknown)} unknown keys: {shown}")
    if not converted:
        raise CheckpointError("not a timm HGNetv2 state dict: no stem.* or stages.* keys")
    return converted


def _backbone_parts(model: nn.Module) -> tuple[nn.Module, Any]:
    """The HGNetV2Backbone inside a DFineForObjectDetection / DFineModel, and its HGNetV2Config.

    The model classes sit above this layer, so they are recognised by their parts: a network has ``backbone.model``
    and ``config.backbone_config``; the detection model holds a network as ``.model``."""
    inner = getattr(model, "model", model)
    backbone = getattr(getattr(inner, "backbone", None), "model", None)
    backbone_config = getattr(getattr(inner, "config", None), "backbone_config", None)
    if not isinstance(backbone, nn.Module) or backbone_config is None:
        raise TypeError(f"expected a DFineForObjectDetection or DFineModel, got {type(model).__name__}")
    return backbone, backbone_config


def infer_variant(backbone_config: Any) -> str | None:
    """Which HGNetv2 variant (``"B0"`` … ``"B6"``) a backbone config describes, or None for a custom one."""
    from dfine.config.presets import backbone_config as preset_backbone

    fields = ("stem_channels", "stage_in_channels", "stage_mid_channels", "stage_out_channels", "stage_num_blocks",
              "stage_numb_of_layers", "stage_downsample", "stage_light_block", "stage_kernel_size")
    for variant in _VARIANTS:
        reference = preset_backbone(variant, [4], use_lab=False)
        if all(list(getattr(backbone_config, f)) == list(getattr(reference, f)) for f in fields):
            return variant
    return None


def _truthy(value: str | None) -> bool:
    return (value or "").strip().upper() in {"1", "ON", "YES", "TRUE"}


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    line = text.splitlines()[0] if text else ""
    return f"{type(error).__name__}: {line[:200]}" if line else type(error).__name__


def download_backbone_weights(variant: str, cache_dir: str | Path | None = None) -> Path:
    """Path of timm's ``model.safetensors`` for ``variant``, from the Hugging Face cache or downloaded into it.

    Offline (``HF_HUB_OFFLINE=1``) only the cache is looked at. Online, one HEAD request with a short timeout
    checks that the hub is reachable before downloading, so that a machine without network fails in seconds.

    Raises:
        DFineError: one line saying why, and how to train without the weights.
    """
    from huggingface_hub import constants, get_hf_file_metadata, hf_hub_download, hf_hub_url

    variant = variant.upper()
    if variant not in _VARIANTS:
        raise ConfigError(f"unknown HGNetv2 variant {variant!r}; known: {', '.join(_VARIANTS)}")
    repo = timm_repo_id(variant)

    def failure(reason: str, offline: bool = False) -> DFineError:
        fix = ("set HF_HUB_OFFLINE=0 on a machine with network access" if offline
               else "check the network connection (and HF_ENDPOINT / proxy settings)")
        return DFineError(
            f"could not download the ImageNet-pretrained HGNetv2-{variant} backbone ({repo}): {reason}. "
            f"Pass pretrained_backbone=False (--no-pretrained-backbone) to start from random weights, or {fix} "
            f"(the file is cached after the first download), or download {WEIGHTS_NAME} from "
            f"https://huggingface.co/{repo} and load it with dfine.hub.backbone.load_pretrained_backbone(model, "
            "path=...)")

    try:  # the cache first: no network at all when the weights were fetched before
        return Path(hf_hub_download(repo, WEIGHTS_NAME, cache_dir=cache_dir, local_files_only=True))
    except Exception:
        pass
    # huggingface_hub reads HF_HUB_OFFLINE once, at import; the environment is read again for a value set later.
    if constants.HF_HUB_OFFLINE or _truthy(os.environ.get("HF_HUB_OFFLINE")):
        raise failure("offline? (HF_HUB_OFFLINE is set and the file is not in the Hugging Face cache)", True)
    try:
        get_hf_file_metadata(hf_hub_url(repo, WEIGHTS_NAME), timeout=_PROBE_TIMEOUT_S)
    except Exception as e:
        raise failure(f"offline? ({_first_line(e)})") from None
    try:
        return Path(hf_hub_download(repo, WEIGHTS_NAME, cache_dir=cache_dir, etag_timeout=_PROBE_TIMEOUT_S))
    except Exception as e:
        raise failure(f"download failed ({_first_line(e)})") from None


def _read_weights(path: Path) -> dict[str, Tensor]:
    """Tensors of a timm ``.safetensors`` / ``.pth`` file (or a folder holding ``model.safetensors``)."""
    from dfine.errors import InputFileError
    from dfine.hub.readers import load_safetensors_file, load_torch_file

    if path.is_dir():
        path = path / WEIGHTS_NAME
    if not path.is_file():
        raise InputFileError(path, "file not found")
    if path.suffix == ".safetensors":
        return load_safetensors_file(path)
    data = load_torch_file(path)  # weights_only: a file from the internet must not be able to run code
    for key in ("state_dict", "model"):  # common wrappers
        if isinstance(data.get(key), dict):
            data = data[key]
            break
    return {k: v for k, v in data.items() if isinstance(v, Tensor)}


def load_pretrained_backbone(model: nn.Module, variant: str | None = None, *, path: str | Path | None = None,
                             cache_dir: str | Path | None = None) -> None:
    """Load ImageNet-pretrained HGNetv2 weights into the backbone of ``model``, in place and strictly.

    Works with trainable and frozen batch norm alike (both hold weight, bias, running_mean and running_var).
    The rest of the model is not touched.

    Args:
        model: a :class:`~dfine.DFineForObjectDetection` or :class:`~dfine.DFineModel`.
        variant: ``"B0"`` … ``"B6"``; by default read off the model's backbone config (and checked against it when
            given).
        path: a local timm ``model.safetensors`` / ``.pth`` (or the original ``PPHGNetV2_B*_stage1.pth``), used
            instead of downloading ``timm/hgnetv2_b*.ssld_stage1_in22k_in1k``.
        cache_dir: Hugging Face cache folder (default: huggingface_hub's).

    Raises:
        DFineError: the weights cannot be downloaded (one line, e.g. offline), the model's backbone is not a
            standard variant, or its learnable-affine-block setting differs from the weights'.
        CheckpointError: the file does not fit the backbone (every missing, unexpected or wrongly shaped key is
            named).
    """
    from dfine.hub.loading import load_state_dict_checked

    backbone, backbone_config = _backbone_parts(model)
    inferred = infer_variant(backbone_config)
    if variant is not None:
        variant = variant.upper()
        if variant not in _VARIANTS:
            raise ConfigError(f"unknown HGNetv2 variant {variant!r}; known: {', '.join(_VARIANTS)}")
        if inferred is not None and inferred != variant:
            raise ConfigError(f"this model's backbone is HGNetv2-{inferred}, not {variant}")
    elif inferred is None and path is None:
        raise ConfigError("this model's backbone is not a standard HGNetv2 variant (B0-B6), so there are no "
                          "ImageNet weights for it; pass pretrained_backbone=False / --no-pretrained-backbone")
    variant = variant or inferred
    use_lab = bool(backbone_config.use_learnable_affine_block)
    if path is None and variant is not None and use_lab != (variant in _LAB_VARIANTS):
        has = "have" if variant in _LAB_VARIANTS else "have no"
        raise ConfigError(f"the ImageNet HGNetv2-{variant} weights {has} learnable affine blocks, but this model's "
                          f"backbone is built with use_learnable_affine_block={use_lab}")
    if path is not None:
        source = Path(path).expanduser()
    else:
        assert variant is not None
        source = download_backbone_weights(variant, cache_dir)
    converted = convert_timm_hgnetv2(_read_weights(source))
    load_state_dict_checked(backbone, converted, f"HGNetv2 weights {source}")
    logger.info("loaded ImageNet-pretrained HGNetv2%s backbone weights from %s", f"-{variant}" if variant else "",
                source)
