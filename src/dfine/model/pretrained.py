"""``from_pretrained`` / ``save_pretrained`` / ``push_to_hub`` with strict loading, shared by the model classes.

Loading is strict (:func:`dfine.hub.loading.load_state_dict_checked`): a missing, unexpected or wrongly shaped key is
an error that names the keys. The tolerated differences are the class-sized heads when the caller asks for another
class count or no denoising (re-initialised, or dropped, and reported), and the decoder's detection heads when a
file has none of them at all (transformers' ``DFineModel`` does not own them; they are freshly initialised and
reported), and the mask branch when only one of the checkpoint and the model class has one (a segmentation
checkpoint in a detector: not used; a detection checkpoint in a segmentation model: fresh; both reported).

``from_pretrained`` also takes the loading options of transformers that make sense here (``dtype`` /
``torch_dtype``, a single-device ``device_map``, the hub options); any other keyword must be a config field.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

import torch
from torch import Tensor, nn

from dfine.config.fields import METADATA_KEYS
from dfine.errors import ConfigError, UnsupportedFeatureError, first_line
from dfine.hub.loading import load_state_dict_checked, short_list

logger = logging.getLogger("dfine")


T = TypeVar("T", bound="PretrainedMixin")


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
                        map_location: str | torch.device | None = None, dtype: torch.dtype | str | None = None,
                        torch_dtype: torch.dtype | str | None = None, device_map: Any = None,
                        cache_dir: str | Path | None = None, token: str | bool | None = None,
                        local_files_only: bool | None = None, force_download: bool | None = None,
                        config: Any = None, **overrides: Any) -> T:
        """Load a model from a directory, a file, a hub id or a preset name (see :mod:`dfine.model.resolve`).

        ``overrides`` replace config fields, e.g. ``num_labels=5`` or ``id2label={...}`` to fine-tune on other
        classes (the rows of classes the checkpoint also names are carried over by name, whatever their order; the
        others are re-initialised; both are reported), or ``num_denoising=0``; any other keyword
        is an error. As in transformers, ``dtype`` (or its older name ``torch_dtype``: a torch dtype, its name, or
        ``"auto"`` for the stored weights' dtype) casts the model, ``device_map`` (one device: ``"cpu"``,
        ``"cuda:0"``, a ``torch.device``) or ``map_location`` moves it, and ``revision`` / ``cache_dir`` /
        ``token`` / ``local_files_only`` / ``force_download`` go to the hub download. ``config`` (a
        :class:`~dfine.config.DFineConfig`) replaces the checkpoint's configuration: the weights must fit it, except
        for the class heads, which are re-initialised when its class list differs (``overrides`` apply on top).
        """
        from dfine.config import DFineConfig
        from dfine.hub.convert import absent_detection_heads
        from dfine.model.resolve import ResolvedCheckpoint, resolve_checkpoint

        DFineConfig.check_keywords(overrides, f"{cls.__name__}.from_pretrained", _LOADING_OPTIONS)
        if config is not None:
            overrides = {**_config_fields(config, f"{cls.__name__}.from_pretrained"), **overrides}
        wanted_dtype = requested_dtype(dtype, torch_dtype)
        device = requested_device(device_map, map_location)
        hub = {k: v for k, v in (("cache_dir", cache_dir), ("token", token), ("local_files_only", local_files_only),
                                 ("force_download", force_download)) if v is not None}
        # the class list is applied after resolving, so that the checkpoint's own class names are known: rows of
        # the classes both lists name are carried over by name (dfine.hub.class_rows)
        class_overrides = {k: v for k, v in overrides.items() if k in _CLASS_LIST_FIELDS}
        others = {k: v for k, v in overrides.items() if k not in _CLASS_LIST_FIELDS}
        resolved = resolve_checkpoint(name_or_path, revision=revision, hub_options=hub, **others)
        source_names = resolved.config.class_names
        if class_overrides:
            resolved = ResolvedCheckpoint(DFineConfig.from_dict(resolved.config.to_dict(), **class_overrides),
                                          resolved.state_dict, resolved.source)
        model = cls(resolved.config)  # type: ignore[call-arg]
        if resolved.state_dict is not None:
            own = cls._to_own_keys(resolved.state_dict)
            if class_overrides:
                own = _carry_rows_by_name(own, model.state_dict(), source_names,  # type: ignore[attr-defined]
                                          resolved.config.class_names)
            own = fit_mask_branch(own, model.state_dict(), type(model).__name__, resolved.source)  # type: ignore[attr-defined]
            new_heads = any(k in overrides for k in ("num_labels", "id2label", "label2id", "num_denoising"))
            # transformers' DFineModel files have no detection heads: ours get fresh ones, as in transformers
            fresh = absent_detection_heads(resolved.state_dict)
            skipped = load_state_dict_checked(model, own, resolved.source, allow_new_heads=new_heads,  # type: ignore[arg-type]
                                              fresh=fresh)
            _report_skipped(skipped, model.state_dict(), resolved.config.num_labels, fresh)  # type: ignore[attr-defined]
            model.sync_config_with_weights()
        if wanted_dtype is not None:
            target = _auto_dtype(resolved) if wanted_dtype == "auto" else wanted_dtype
            model.to(target)  # type: ignore[attr-defined]
            model.config.extra["dtype"] = str(target).removeprefix("torch.")  # the config describes the model
        if device is not None:
            _move(model, device)  # type: ignore[arg-type]
        return model.eval()  # type: ignore[attr-defined]

    def sync_config_with_weights(self) -> None:
        """Make ``config.reg_scale`` / ``config.up`` equal the stored values, which are what inference uses."""
        decoder = self.model.decoder if hasattr(self, "model") and hasattr(self.model, "decoder") else self.decoder  # type: ignore[attr-defined]
        self.config.reg_scale = float(decoder.reg_scale.detach().reshape(-1)[0])
        self.config.up = float(decoder.up.detach().reshape(-1)[0])

    def save_pretrained(self, save_directory: str | Path, *, is_main_process: bool = True,
                        safe_serialization: bool = True, push_to_hub: bool = False, **hub_options: Any) -> Path:
        """Write ``config.json`` and ``model.safetensors`` (hub key names) that transformers can load too.

        The keywords of transformers' ``save_pretrained`` that apply: ``is_main_process=False`` writes nothing
        (for the other ranks of a distributed run); ``safe_serialization`` must stay True (safetensors is the only
        format written, as untrusted pickles are never loaded either); ``push_to_hub=True`` then uploads the folder
        with :meth:`push_to_hub` (``repo_id`` defaults to the folder's name; ``hub_options`` are its keywords).
        """
        from safetensors.torch import save_file

        from dfine.hub.convert import to_hub_names
        from dfine.utils.files import atomic_write

        if not safe_serialization:
            raise UnsupportedFeatureError("save_pretrained writes safetensors only (safe_serialization=False would "
                                          "mean a pickle, which dfine never loads)")
        directory = Path(save_directory)
        if push_to_hub:
            repo_id = hub_options.pop("repo_id", directory.name)
            self.save_pretrained(directory, is_main_process=is_main_process)
            if is_main_process:
                self.push_to_hub(repo_id, **hub_options)
            return directory
        if hub_options:
            raise TypeError(f"save_pretrained() got unexpected keyword(s): {', '.join(sorted(hub_options))} (hub "
                            "options go with push_to_hub=True)")
        if not is_main_process:
            return directory
        self.sync_config_with_weights()
        self._record_provenance()
        self.config.to_json_string()  # a value config.json cannot hold is reported before any file is written
        directory.mkdir(parents=True, exist_ok=True)
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

    def push_to_hub(self, repo_id: str, *, commit_message: str | None = None, private: bool | None = None,
                    token: str | bool | None = None, revision: str | None = None, create_pr: bool = False) -> str:
        """Upload the model's ``save_pretrained`` files to the hub repository ``repo_id`` (created when missing),
        with a model card when the repository has no ``README.md``; returns the commit's URL. Push the processor
        too (``processor.push_to_hub(repo_id)``) so that the repository preprocesses as the model was trained.

        Raises:
            DFineError: the hub refused the upload or could not be reached (one line with its reason).
        """
        from functools import partial

        from dfine.hub.upload import model_card, push_files

        return push_files(self.save_pretrained, repo_id, card=partial(model_card, self.config),
                          commit_message=commit_message, private=private, token=token, revision=revision,
                          create_pr=create_pr)

    def _record_provenance(self) -> None:
        """Write what transformers writes on save: the class (so a DFineModel folder says so) and the dtype."""
        extra = self.config.extra
        extra["architectures"] = [type(self).__name__]
        dtype = next((p.dtype for p in self.parameters() if p.is_floating_point()), None)  # type: ignore[attr-defined]
        if dtype is not None:
            extra["dtype"] = str(dtype).removeprefix("torch.")
            if "torch_dtype" in extra:  # older files' name for it: kept, and kept true
                extra["torch_dtype"] = extra["dtype"]


def _config_fields(config: Any, where: str) -> dict[str, Any]:
    """A given config as overrides of every field: the checkpoint's own values are all replaced, and its weights
    are then checked against the result like any override's (a different class list re-initialises the heads)."""
    from dfine.config import DFineConfig

    if not isinstance(config, DFineConfig):
        raise ConfigError(f"{where}: config must be a DFineConfig, got {type(config).__name__}")
    names = DFineConfig.keyword_names() - METADATA_KEYS - {"model_type"}
    return {k: v for k, v in config.to_dict().items() if k in names}


# Keyword arguments of from_pretrained besides the config fields (for "did you mean" suggestions).
_LOADING_OPTIONS = {"revision", "map_location", "dtype", "torch_dtype", "device_map", "cache_dir", "token",
                    "local_files_only", "force_download"}


_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16, "float64": torch.float64}


def requested_dtype(dtype: Any, torch_dtype: Any) -> torch.dtype | str | None:
    """The dtype asked for with ``dtype`` or its older name ``torch_dtype``: a floating torch dtype, "auto", or None."""
    if dtype is not None and torch_dtype is not None and dtype != torch_dtype:
        raise ConfigError(f"dtype={dtype!r} and torch_dtype={torch_dtype!r} disagree: give one of them")
    value = dtype if dtype is not None else torch_dtype
    if value is None or value == "auto":
        return value
    if isinstance(value, str) and value.removeprefix("torch.") in _DTYPES:
        return _DTYPES[value.removeprefix("torch.")]
    if isinstance(value, torch.dtype) and value.is_floating_point:
        return value
    raise ConfigError(f"dtype={value!r} is not supported: use torch.float32, torch.float16, torch.bfloat16 (or "
                      "their names) or 'auto'")


def requested_device(device_map: Any, map_location: Any) -> torch.device | None:
    """The one device ``device_map`` or ``map_location`` names (None: stay on the CPU). A D-FINE model fits on one
    device, so a per-module map or a placement strategy ("auto", "balanced") is refused."""
    if device_map is not None and map_location is not None:
        raise ConfigError("give device_map or map_location, not both")
    name, value = ("device_map", device_map) if device_map is not None else ("map_location", map_location)
    if value is None:
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        value = f"cuda:{value}"  # transformers reads an integer device_map as a GPU index
    device = None
    if isinstance(value, str | torch.device):
        try:
            device = torch.device(value)
        except RuntimeError:
            pass
    if device is None:
        raise ConfigError(f"{name}={value!r} is not supported: give one device ('cpu', 'cuda', 'cuda:0' or a "
                          "torch.device); a D-FINE model is not split across devices")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"{name}={value!r}, but CUDA is not available on this machine")
    return device


def _move(model: nn.Module, device: torch.device) -> None:
    try:
        model.to(device)
    except (RuntimeError, AssertionError) as e:  # an index past the last GPU, a backend torch was built without
        raise ConfigError(f"cannot move the model to {device}: {first_line(e)}") from None


def _auto_dtype(resolved: Any) -> torch.dtype:
    """dtype="auto": the stored weights' dtype; for weightless sources the config's "dtype", else float32."""
    if resolved.state_dict is not None:
        for tensor in resolved.state_dict.values():
            if tensor.is_floating_point():
                return tensor.dtype
    return _DTYPES.get(str(resolved.config.extra.get("dtype", "float32")), torch.float32)


# config fields that set the class list (the class heads' rows)
_CLASS_LIST_FIELDS = frozenset({"id2label", "label2id", "num_labels"})


def _carry_rows_by_name(state_dict: dict[str, Tensor], fresh: Mapping[str, Tensor], source: list[str],
                        target: list[str]) -> dict[str, Tensor]:
    """``state_dict`` with its class rows rearranged for the ``target`` class list, when it shares names with the
    checkpoint's ``source`` list other than by a plain renaming (see :mod:`dfine.hub.class_rows`); said in the log."""
    from dfine.hub.class_rows import carry_class_rows, describe_carried_rows, is_renaming, match_class_names

    if source == target:
        return state_dict
    matches = match_class_names(source, target)
    if is_renaming(source, target, matches) or not any(m is not None for m in matches):
        return state_dict
    logger.warning("class heads for the new class list: %s", describe_carried_rows(target, matches))
    return carry_class_rows(state_dict, dict(fresh), matches)


def fit_mask_branch(state_dict: dict[str, Tensor], expected: Mapping[str, Tensor], model_name: str,
                     source: str) -> dict[str, Tensor]:
    """``state_dict`` fitted to whether the model has a mask branch, when the checkpoint is of the other kind:
    a segmentation checkpoint loaded as a detector loses its mask branch, and a detection checkpoint starts a
    segmentation model with a fresh one (the model's own initial values). Both are said in the log; a partial mask
    branch is left to the strict loading, which names the missing keys."""
    from dfine.hub.convert import MASK_BRANCH

    given = [k for k in state_dict if MASK_BRANCH.match(k)]
    wanted = [k for k in expected if MASK_BRANCH.match(k)]
    if given and not wanted:
        logger.warning("%s: a segmentation checkpoint loaded as %s; its mask branch (%d tensors) is not used (load "
                       "it with DFineForInstanceSegmentation for masks)", source, model_name, len(given))
        return {k: v for k, v in state_dict.items() if k not in set(given)}
    if wanted and not given:
        logger.warning("%s: a detection checkpoint; the mask branch of %s (%d tensors) starts freshly initialised",
                       source, model_name, len(wanted))
        return {**state_dict, **{k: expected[k] for k in wanted}}
    return state_dict


def _report_skipped(skipped: list[str], expected: Mapping[str, Tensor], num_labels: int,
                    fresh: re.Pattern[str] | None) -> None:
    """Log what was not loaded, each kind as what it is: class-sized tensors re-initialised for another class count,
    detection heads the checkpoint lacks, and checkpoint tensors the model has no place for (num_denoising=0)."""
    heads = [k for k in skipped if k in expected and fresh is not None and fresh.search(k)]
    resized = [k for k in skipped if k in expected and k not in heads]
    dropped = [k for k in skipped if k not in expected]
    if resized:
        logger.warning("re-initialised %d class-sized tensors for %d classes: %s", len(resized), num_labels,
                       short_list(resized))
    if heads:
        logger.warning("initialised %d detection-head tensors the checkpoint does not have (a DFineModel without "
                       "decoder.class_embed / bbox_embed): %s", len(heads), short_list(heads))
    if dropped:
        logger.warning("dropped %d checkpoint tensors this model has no place for (num_denoising=0): %s",
                       len(dropped), short_list(dropped))
