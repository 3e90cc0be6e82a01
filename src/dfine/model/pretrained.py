"""``from_pretrained`` / ``save_pretrained`` with strict loading (shared by the two model classes).

Loading is strict: a missing, unexpected or wrongly shaped key is an error that names the keys. The only
tolerated differences are derived buffers (batch-norm ``num_batches_tracked`` counters), and — when the caller
asks for another class count or no denoising — the class-sized heads, which are then re-initialised and reported.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any, TypeVar

import torch
from torch import Tensor, nn

from dfine.errors import CheckpointError

logger = logging.getLogger("dfine")

T = TypeVar("T", bound="PretrainedMixin")

# Parameters whose first dimension is the class count (plus the denoising label embedding, C + 1 rows).
CLASS_SIZED = re.compile(r"(^|\.)(enc_score_head|decoder\.class_embed\.\d+|denoising_class_embed)\.(weight|bias)$")
_DERIVED = re.compile(r"\.num_batches_tracked$")


def _short_list(keys: list[str], limit: int = 4) -> str:
    shown = ", ".join(keys[:limit])
    return shown + (f" (+{len(keys) - limit} more)" if len(keys) > limit else "")


def load_state_dict_checked(model: nn.Module, state_dict: dict[str, Tensor], source: str,
                            allow_new_heads: bool = False) -> list[str]:
    """Copy ``state_dict`` into ``model``; raise a CheckpointError naming every problem.

    Args:
        allow_new_heads: when True, class-sized tensors whose shape differs (another class count) or that the
            model does not have (denoising disabled) are skipped; the model keeps fresh values for them.

    Returns:
        The keys that were skipped (re-initialised heads), for reporting.
    """
    expected = model.state_dict()
    state_dict = dict(state_dict)
    skipped = []
    if allow_new_heads:
        for key in list(state_dict):
            if CLASS_SIZED.search(key) and (key not in expected or expected[key].shape != state_dict[key].shape):
                skipped.append(key)
                del state_dict[key]
        skipped += [k for k in expected if CLASS_SIZED.search(k) and k not in state_dict and k not in skipped]
    missing = [k for k in expected if k not in state_dict and not _DERIVED.search(k) and k not in skipped]
    unexpected = [k for k in state_dict if k not in expected and not _DERIVED.search(k)]
    mismatched = [f"{k} {tuple(state_dict[k].shape)} vs model {tuple(expected[k].shape)}"
                  for k in expected.keys() & state_dict.keys() if expected[k].shape != state_dict[k].shape]
    problems = []
    if missing:
        problems.append(f"{len(missing)} missing keys: {_short_list(sorted(missing))}")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected keys: {_short_list(sorted(unexpected))}")
    if mismatched:
        problems.append(f"{len(mismatched)} wrongly shaped: {_short_list(sorted(mismatched))}")
    if problems:
        raise CheckpointError(f"{source} does not fit this model: " + "; ".join(problems))
    model.load_state_dict(state_dict, strict=False)
    return skipped


class PretrainedMixin:
    """Adds Hugging Face style ``from_pretrained`` / ``save_pretrained`` to an ``nn.Module`` with a ``config``."""

    config: Any
    base_model_prefix = ""  # "model" for DFineForObjectDetection; DFineModel's keys have no prefix

    @classmethod
    def _to_own_keys(cls, state_dict: dict[str, Tensor]) -> dict[str, Tensor]:
        """Internal names always carry the ``model.`` prefix; DFineModel's own keys do not."""
        if cls.base_model_prefix:
            return state_dict
        return {k[len("model."):] if k.startswith("model.") else k: v for k, v in state_dict.items()}

    @classmethod
    def from_pretrained(cls: type[T], name_or_path: str | Path, *, revision: str | None = None,
                        map_location: str | torch.device | None = None, **overrides: Any) -> T:
        """Load a model from a directory, a file, a hub id or a preset name (see :mod:`dfine.hub.resolve`).

        ``overrides`` replace config fields, e.g. ``num_labels=5`` or ``id2label={...}`` to fine-tune on other
        classes (the class heads are then re-initialised and reported), or ``num_denoising=0``.
        """
        from dfine.hub.resolve import resolve_checkpoint

        resolved = resolve_checkpoint(name_or_path, revision=revision, **overrides)
        model = cls(resolved.config)  # type: ignore[call-arg]
        if resolved.state_dict is not None:
            own = cls._to_own_keys(resolved.state_dict)
            new_heads = any(k in overrides for k in ("num_labels", "id2label", "num_denoising"))
            skipped = load_state_dict_checked(model, own, resolved.source, allow_new_heads=new_heads)  # type: ignore[arg-type]
            if skipped:
                logger.warning("re-initialised %d class-sized tensors for %d classes: %s", len(skipped),
                               resolved.config.num_labels, _short_list(skipped))
            model.sync_config_with_weights()
        if map_location is not None:
            model.to(map_location)  # type: ignore[attr-defined]
        return model.eval()  # type: ignore[attr-defined]

    def sync_config_with_weights(self) -> None:
        """Make ``config.reg_scale`` / ``config.up`` equal the stored values, which are what inference uses."""
        decoder = self.model.decoder if hasattr(self, "model") and hasattr(self.model, "decoder") else self.decoder  # type: ignore[attr-defined]
        self.config.reg_scale = float(decoder.reg_scale.detach().reshape(-1)[0])
        self.config.up = float(decoder.up.detach().reshape(-1)[0])

    def save_pretrained(self, save_directory: str | Path) -> Path:
        """Write ``config.json`` and ``model.safetensors`` (hub key names) that transformers can load too."""
        from safetensors.torch import save_file

        from dfine.hub.convert import to_hub_names
        from dfine.hub.files import atomic_write

        directory = Path(save_directory)
        directory.mkdir(parents=True, exist_ok=True)
        self.sync_config_with_weights()
        state_dict = self.state_dict()  # type: ignore[attr-defined]
        if not self.base_model_prefix:
            state_dict = {f"model.{k}": v for k, v in state_dict.items()}
        if self.config.freeze_backbone_batch_norms:
            # frozen batch norm has no counter; keep the file identical to what transformers writes
            state_dict = {k: v for k, v in state_dict.items()
                          if not (k.startswith("model.backbone.") and k.endswith("num_batches_tracked"))}
        tensors = {k: v.detach().contiguous().cpu() for k, v in to_hub_names(state_dict).items()}
        if not self.base_model_prefix:
            tensors = {k[len("model."):]: v for k, v in tensors.items()}
        atomic_write(directory / "model.safetensors", lambda tmp: save_file(tensors, str(tmp), {"format": "pt"}))
        self.config.save_pretrained(directory)
        return directory
