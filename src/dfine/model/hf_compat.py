"""The ``PreTrainedModel`` attributes transformers users rely on (``inputs.to(model.device)``, ``dtype``,
``num_parameters`` ...), shared by every model class.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from dfine.errors import UnsupportedFeatureError


class TransformersModelMixin(nn.Module):
    """The ``PreTrainedModel`` attributes transformers users rely on (``inputs.to(model.device)`` …)."""

    main_input_name = "pixel_values"
    supports_gradient_checkpointing = False

    @property
    def device(self) -> torch.device:
        """The device of the parameters (all on one device)."""
        return next(self.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        """The dtype of the floating-point parameters."""
        return next((p.dtype for p in self.parameters() if p.is_floating_point()), torch.get_default_dtype())

    def num_parameters(self, only_trainable: bool = False, exclude_embeddings: bool = False) -> int:
        """The number of (shared parameters counted once) parameters, as transformers counts them."""
        embeddings = {f"{name}.weight" for name, module in self.named_modules() if isinstance(module, nn.Embedding)}
        return sum(p.numel() for name, p in self.named_parameters()
                   if (p.requires_grad or not only_trainable) and not (exclude_embeddings and name in embeddings))

    def gradient_checkpointing_enable(self, gradient_checkpointing_kwargs: dict[str, Any] | None = None) -> None:
        # transformers' D-FINE refuses too; checkpointing the deformable decoder is not implemented by either.
        raise UnsupportedFeatureError(f"{type(self).__name__} does not support gradient checkpointing")

    def gradient_checkpointing_disable(self) -> None:
        """Nothing to undo: gradient checkpointing is never on."""

    @property
    def is_gradient_checkpointing(self) -> bool:
        return False
