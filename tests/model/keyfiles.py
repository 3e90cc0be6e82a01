"""Read the state-dict key fixtures (every key with its shape): the hub's ``model.safetensors`` as
transformers' ``save_pretrained`` writes it, and the original's released ``.pth`` (its ``model`` entry)."""

from __future__ import annotations

import gzip
from pathlib import Path

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "keys"


def read_keys(layout: str, size: str) -> dict[str, tuple[int, ...]]:
    """``layout`` "hf" or "original"; returns {key: shape}."""
    out = {}
    with gzip.open(FIXTURES / f"{layout}_{size}_coco.txt.gz", "rt") as f:
        for line in f:
            if line.startswith("#") or not line.strip():
                continue
            key, shape = line.split("\t")[:2]
            out[key] = tuple(int(v) for v in shape.strip("()").split(",") if v.strip())
    return out
