"""Carrying a checkpoint's class rows over to a data set's classes by name, for fine-tuning.

The class-sized tensors (the encoder and decoder score heads, and the denoising label embedding) hold one row per
class. A checkpoint trained on COCO already knows what a "person" or a "dog" looks like; when a data set has some of
the same classes, possibly in another order or among new ones, starting those rows from the checkpoint's rows for the
same name converges faster than starting them fresh. The original repository does this for Objects365 -> COCO with a
fixed id table, and tells users with other classes to edit that table by hand; matching by name does the same for
any pair of class lists. A list of the same length whose shared names all sit at their own positions is taken for a
renaming (``["0", "1"]`` -> ``["cat", "dog"]``, or one class spelled anew): its rows stay in label order.

Names match after case folding, with ``_`` and ``-`` read as spaces and ``a/b`` standing for both ``a`` and ``b``
(Objects365 spells several classes that way, e.g. "Moniter/TV"). A few COCO classes have other names in Objects365;
:data:`SYNONYMS` makes them equal, which reproduces the original's Objects365 -> COCO table for all 80 classes.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from torch import Tensor

# Parameters whose first dimension is the class count (plus the denoising label embedding, C + 1 rows).
CLASS_SIZED = re.compile(r"(^|\.)(enc_score_head|decoder\.class_embed\.\d+|denoising_class_embed)\.(weight|bias)$")



# Names for the same class in the two published label sets (COCO, Objects365 as spelled in its annotation files).
SYNONYMS: tuple[tuple[str, ...], ...] = (
    ("bird", "wild bird"),
    ("suitcase", "luggage"),
    ("skis", "skating and skiing shoes"),
    ("sports ball", "baseball"),
    ("dining table", "dinning table"),
    ("teddy bear", "stuffed toy"),
    ("hair drier", "hair dryer"),
)
_CANONICAL = {name: group[0] for group in SYNONYMS for name in group}


def _name_keys(name: str) -> list[str]:
    """The comparable forms of one class name: folded case and spacing, each ``/`` alternative, synonyms merged."""
    keys = []
    for part in [name, *name.split("/")] if "/" in name else [name]:
        key = " ".join(re.sub(r"[_\-]", " ", part.casefold()).split())
        key = _CANONICAL.get(key, key)
        if key and key not in keys:
            keys.append(key)
    return keys


def match_class_names(source: Sequence[str], target: Sequence[str]) -> list[int | None]:
    """For each class of ``target``, the index of the ``source`` class of the same name, or None.

    The first source class of a name wins, and each source class is used at most once, so two data-set classes
    never share one row.
    """
    index: dict[str, int] = {}
    for i, name in enumerate(source):
        for key in _name_keys(name):
            index.setdefault(key, i)
    used: set[int] = set()
    matches: list[int | None] = []
    for name in target:
        found = next((index[key] for key in _name_keys(name) if key in index and index[key] not in used), None)
        if found is not None:
            used.add(found)
        matches.append(found)
    return matches


def is_renaming(source: Sequence[str], target: Sequence[str], matches: list[int | None]) -> bool:
    """Whether ``target`` is ``source`` with some classes renamed: the same count, and every shared name at its own
    position. Such a list keeps all rows in label order (a renamed class keeps what it learnt)."""
    return len(source) == len(target) and all(m is None or m == i for i, m in enumerate(matches))


def carry_class_rows(checkpoint: dict[str, Tensor], fresh: dict[str, Tensor],
                     matches: list[int | None]) -> dict[str, Tensor]:
    """``checkpoint`` with its class-sized tensors rebuilt for the target classes.

    Row ``i`` of each class-sized tensor is the checkpoint's row ``matches[i]``, or the freshly initialised model's
    row where ``matches[i]`` is None. The denoising label embedding's extra last row (the padding label) is the
    checkpoint's. Tensors the model does not have (denoising disabled) or the checkpoint lacks are left to the loader.

    Args:
        checkpoint: the checkpoint's state dict (not changed).
        fresh: the new model's state dict, whose class-sized tensors have the target's row count.
        matches: from :func:`match_class_names`.
    """
    out = dict(checkpoint)
    for key, old in checkpoint.items():
        if not CLASS_SIZED.search(key) or key not in fresh:
            continue
        new = fresh[key].detach().clone()
        extra = new.shape[0] - len(matches)  # 1 for the denoising embedding's padding row, else 0
        if extra not in (0, 1) or old.shape[1:] != new.shape[1:]:
            continue  # not shaped like this model's classes: strict loading reports it
        for row, source_row in enumerate(matches):
            if source_row is not None and source_row < old.shape[0] - extra:
                new[row] = old[source_row].to(new.dtype)
        if extra:
            new[-1] = old[-1].to(new.dtype)
        out[key] = new
    return out


def describe_carried_rows(target: Sequence[str], matches: list[int | None], limit: int = 6) -> str:
    """One line for the training log: how many classes start from the checkpoint's rows, and which start fresh."""
    carried = sum(m is not None for m in matches)
    new = [name for name, m in zip(target, matches) if m is None]
    line = f"{carried} of {len(target)} classes start from the checkpoint's class rows of the same name"
    if new:
        shown = ", ".join(new[:limit]) + (f" (+{len(new) - limit} more)" if len(new) > limit else "")
        line += f"; {len(new)} start fresh: {shown}"
    return line


__all__ = ["SYNONYMS", "carry_class_rows", "describe_carried_rows", "is_renaming", "match_class_names"]
