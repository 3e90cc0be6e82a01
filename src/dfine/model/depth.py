"""How many decoder layers inference runs: a speed / accuracy knob that needs no retraining.

D-FINE's GO-LSD (paper §3.3) supervises every decoder layer with the same matching and box losses, and distils the
final layer's corner distributions into the earlier ones, so each layer ``k`` already predicts usable boxes (its FDR
corners decoded around the shared pre-box reference) and scores (its own class head and LQE). Stopping the decoder
after ``k`` layers and reading layer ``k``'s heads therefore gives a faster detector that is slightly less accurate.

The original does the same with ``eval_idx`` (``DFINETransformer``: the eval forward stops at ``eval_idx``); here the
knob only changes the decoder's ``eval_idx`` at inference, never the configuration: the saved model and training are
unaffected, and :mod:`dfine.model.deploy.head` builds the deploy head with as many layers as the decoder's
``eval_idx`` asks.
"""

from __future__ import annotations

import numbers
from typing import Any

from torch import nn

from dfine.errors import ConfigError

__all__ = ["check_decoder_layers", "decoder_layers_run", "set_decoder_layers"]


def _decoder(model: nn.Module) -> Any:
    """The :class:`~dfine.model.decoder.DFineDecoder` of a detection model or a bare network."""
    for candidate in (getattr(getattr(model, "model", None), "decoder", None), getattr(model, "decoder", None)):
        if candidate is not None and hasattr(candidate, "eval_idx"):
            return candidate
    raise TypeError(f"{type(model).__name__} has no D-FINE decoder")


def check_decoder_layers(layers: Any, available: int) -> int:
    """``layers`` as an int in 1..``available``; a one-line :class:`ConfigError` otherwise."""
    if not isinstance(layers, numbers.Integral) or isinstance(layers, bool) or not 1 <= layers <= available:
        raise ConfigError(f"decoder layers must be an integer from 1 to {available} (the model's decoder depth), "
                          f"got {layers!r}")
    return int(layers)


def set_decoder_layers(model: nn.Module, layers: int | None) -> nn.Module:
    """Make inference of ``model`` (in place) stop after ``layers`` decoder layers and return that layer's boxes and
    scores; None restores the configuration's choice (``eval_idx``, the last layer for every released model).

    Training still runs (and supervises) every layer. Returns ``model``.
    """
    decoder = _decoder(model)
    if layers is None:
        decoder.eval_idx = _config_eval_idx(model, decoder)
    else:
        decoder.eval_idx = check_decoder_layers(layers, decoder.num_layers) - 1
    return model


def _config_eval_idx(model: nn.Module, decoder: Any) -> int:
    """The configuration's evaluated layer (0-based), as the decoder was built with it."""
    config = getattr(model, "config", None)
    eval_idx = getattr(config, "eval_idx", -1)
    return eval_idx % decoder.num_layers


def decoder_layers_run(model: nn.Module) -> int:
    """How many decoder layers inference of ``model`` runs."""
    return _decoder(model).eval_idx + 1
