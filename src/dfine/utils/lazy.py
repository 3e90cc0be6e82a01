"""Lazy public names for a package (PEP 562): a name is imported from its module on first use.

The package root, :mod:`dfine.engine` and :mod:`dfine.ops` export names this way, so that importing one light
module (the torch-free runtime, the NumPy box overlaps, one engine module) does not import PyTorch or the training
stack through its package's ``__init__``.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import Any


def lazy_exports(package: str, exports: Mapping[str, str], public: Sequence[str]
                 ) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """The ``__getattr__`` and ``__dir__`` of ``package``: ``exports`` maps each lazy name to the module defining
    it, ``public`` is the package's ``__all__``. A name once imported is stored in the package, so later look-ups do
    not come back here."""
    namespace = vars(sys.modules[package])

    def __getattr__(name: str) -> Any:
        module = exports.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(module), name)
        namespace[name] = value
        return value

    def __dir__() -> list[str]:
        return list(public)

    return __getattr__, __dir__
