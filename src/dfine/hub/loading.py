"""Strict loading of a state dict into a module: every missing, unexpected or wrongly shaped key is named.

The only tolerated differences are derived buffers (batch-norm ``num_batches_tracked`` counters), class-sized heads
the caller asked to replace (another class count, no denoising) and, when asked, heads a file lacks entirely. Used
for whole models (:mod:`dfine.model.pretrained`), training checkpoints and ImageNet backbones alike.
"""

from __future__ import annotations

import re

from torch import Tensor, nn

from dfine.errors import CheckpointError
from dfine.hub.class_rows import CLASS_SIZED

_DERIVED = re.compile(r"\.num_batches_tracked$")


def short_list(keys: list[str], limit: int = 4) -> str:
    shown = ", ".join(keys[:limit])
    return shown + (f" (+{len(keys) - limit} more)" if len(keys) > limit else "")


def load_state_dict_checked(model: nn.Module, state_dict: dict[str, Tensor], source: str,
                            allow_new_heads: bool = False, fresh: re.Pattern[str] | None = None) -> list[str]:
    """Copy ``state_dict`` into ``model``; raise a CheckpointError naming every problem.

    Args:
        allow_new_heads: when True, class-sized tensors whose shape differs (another class count) or that the
            model does not have (denoising disabled) are skipped; the model keeps fresh values for them.
        fresh: model keys matching this pattern that ``state_dict`` lacks keep their fresh values.

    Returns:
        The keys that were skipped (re-initialised heads, or checkpoint keys the model does not have), for reporting.
    """
    expected = model.state_dict()
    state_dict = dict(state_dict)
    skipped = [k for k in expected if fresh is not None and fresh.search(k) and k not in state_dict]
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
        problems.append(f"{len(missing)} missing keys: {short_list(sorted(missing))}")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected keys: {short_list(sorted(unexpected))}")
    if mismatched:
        problems.append(f"{len(mismatched)} wrongly shaped: {short_list(sorted(mismatched))}")
    if problems:
        raise CheckpointError(f"{source} does not fit this model: " + "; ".join(problems))
    model.load_state_dict(state_dict, strict=False)
    return skipped
