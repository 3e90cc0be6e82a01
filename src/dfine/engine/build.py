"""Building what a training run needs: the model (from scratch or fine-tuned) and the data loaders.

Two ways to start (:func:`build_training_model`):

- a **preset name** (``"dfine-n-coco"``): the architecture of that size with the data set's classes, trained from
  scratch, the backbone initialised from ImageNet (HGNetv2 "stage 1" weights, as the original) unless
  ``pretrained_backbone=False``;
- **anything else** ``from_pretrained`` accepts (hub id, folder, ``.pth``/``.safetensors``, a ``last.pt``): its weights
  are fine-tuned. The class-sized tensors (the encoder and decoder score heads, and the denoising label embedding
  whose rows are the classes + 1) follow the class names: a data-set class the checkpoint also has starts from the
  checkpoint's rows for it, wherever it sits in either list (:mod:`dfine.hub.class_rows`); the other rows start
  fresh. A list of the same length whose shared names keep their positions is a renaming: its rows stay in label
  order. When no name is shared and the count differs, the tensors are re-initialised and listed.

For instance segmentation (``segment=True``) the model is a ``DFineForInstanceSegmentation``: a preset's mask branch
starts with the rest, a detection checkpoint's starts fresh (said in the report), a D-FINE-seg or saved segmentation
checkpoint's is fine-tuned. A segmentation checkpoint trained for detection (``segment=False``) drops its mask branch.

Either way the backbone batch norms follow the recipe: trainable for N/S/M (``freeze_backbone_batch_norms=False``),
frozen for L/X, whose stem is frozen too (``freeze_at``, ``freeze_norm`` in
``configs/dfine/dfine_hgnetv2_{l,x}_coco.yml``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from dfine.config import DFineConfig
from dfine.config.fields import check_field_range, coerce, type_description
from dfine.config.presets import SIZES, is_preset, preset_config, size_of
from dfine.data import BatchCollator, DetectionDataset, EpochDataLoader, build_dataloader
from dfine.data.mosaic import DenseO2OPolicy
from dfine.engine.distributed import barrier, is_main_process
from dfine.engine.optim import freeze_stem
from dfine.errors import CheckpointError, ConfigError, DFineError
from dfine.hub.class_rows import carry_class_rows, describe_carried_rows, is_renaming, match_class_names
from dfine.model import DFineForInstanceSegmentation, DFineForObjectDetection

if TYPE_CHECKING:
    from dfine.model.resolve import ResolvedCheckpoint

logger = logging.getLogger("dfine")


@dataclass
class ModelReport:
    """How the training model was made.

    Attributes:
        source: what the user passed as the model.
        size: the recipe letter used.
        fine_tune: started from trained detection weights.
        backbone: where the backbone weights came from.
        reinitialised: state-dict keys not taken from the checkpoint (new class heads), sorted.
        frozen: parameters frozen for the recipe (L/X stem).
        notes: anything else worth saying.
        resumed: ``source`` is a checkpoint whose run continues.
    """

    source: str
    size: str
    fine_tune: bool
    backbone: str
    reinitialised: list[str] = field(default_factory=list)
    frozen: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    resumed: bool = False

    def summary(self) -> str:
        if self.resumed:
            how = f"resuming {self.source} (a {'fine-tuning' if self.fine_tune else 'from-scratch'} run)"
        else:
            how = f"fine-tuning {self.source}" if self.fine_tune else f"training {self.source} from scratch"
        lines = [f"Model: D-FINE-{self.size.upper()}, {how}; backbone: {self.backbone}"]
        if self.reinitialised:
            lines.append(f"  re-initialised for the data set's classes ({len(self.reinitialised)} tensors): "
                         + ", ".join(self.reinitialised))
        if self.frozen:
            lines.append(f"  frozen (recipe): {len(self.frozen)} stem parameters")
        lines += [f"  - {note}" for note in self.notes]
        return "\n".join(lines)


def config_field_names() -> set[str]:
    """Keys a :class:`DFineConfig` understands (model overrides are checked against them)."""
    return set(DFineConfig().to_dict()) | {"num_labels"}


def check_config_overrides(overrides: dict[str, Any]) -> dict[str, Any]:
    """Model config overrides converted to their fields' types and range-checked.

    Only fields with a number, flag or text default are checked (``decoder_n_points`` may also be a list, one per
    feature level); the config itself checks how fields fit together.

    Raises:
        ConfigError: an unknown field, a value of the wrong type, or a count out of range (one line).
    """
    unknown = set(overrides) - config_field_names()
    if unknown:
        raise ConfigError(f"unknown option(s) {', '.join(sorted(unknown))}: neither a training hyper-parameter nor "
                          "a model config field")
    defaults = DFineConfig().to_dict()
    checked = dict(overrides)
    for name, value in overrides.items():
        default = defaults.get(name)
        values = value if name == "decoder_n_points" and isinstance(value, list) else [value]
        if isinstance(default, (bool, int, float, str)):
            kind = type(default)
            try:
                values = [coerce(kind, v) for v in values]
            except ValueError:
                raise ConfigError(f"{name} must be {type_description(kind)}, got {value!r}") from None
            checked[name] = values if isinstance(value, list) else values[0]
        check_field_range(name, value)
    return checked


_PYTHON_OPTION = "pretrained_backbone=False"
_BOTH_OPTIONS = f"{_PYTHON_OPTION} (--no-pretrained-backbone)"


def _with_backbone_way_out(error: DFineError) -> DFineError:
    """``error`` with a message naming the option that skips the ImageNet backbone, in both spellings.

    ``dfine train`` and :func:`dfine.train` share the backbone loader; its own messages already name the option,
    any other failure gets the way out appended.
    """
    message = str(error)
    if _PYTHON_OPTION in message:
        return error
    kind = type(error) if type(error) in (DFineError, ConfigError, CheckpointError) else DFineError
    return kind(f"{message}; pass {_BOTH_OPTIONS} to train from a random backbone")


def _load_backbone_weights(model: DFineForObjectDetection, variant: str) -> str:
    from dfine.hub.backbone import load_pretrained_backbone

    # Rank 0 downloads first while the others wait, so the file is fetched once into the shared cache.
    if not is_main_process():
        barrier()
    try:
        load_pretrained_backbone(model, variant)
    except DFineError as e:
        clearer = _with_backbone_way_out(e)
        if clearer is e:
            raise
        raise clearer from None  # the message carries the loader's reason
    finally:
        if is_main_process():
            barrier()
    return f"ImageNet-pretrained HGNetv2-{variant}"


def describe_model_object(model: DFineForObjectDetection) -> str:
    """How messages name a model passed as an object rather than a path (its repr is the whole module tree)."""
    return f"the {type(model).__name__} passed as model"


def _checkpoint_to_fine_tune(source: str | DFineForObjectDetection) -> ResolvedCheckpoint:
    """Config and weights to start from: read from ``source``, or taken from a model already in memory.

    A model object is not changed: its config is copied and its weights are copied into the new model by
    :func:`load_state_dict_checked`, exactly as a checkpoint file's are, so both paths fine-tune the same way.
    """
    from dfine.model.resolve import ResolvedCheckpoint, resolve_checkpoint

    if isinstance(source, DFineForObjectDetection):
        config = DFineConfig.from_dict(source.config.to_dict())
        return ResolvedCheckpoint(config, source.state_dict(), describe_model_object(source))
    return resolve_checkpoint(source)


def build_training_model(
    source: str | DFineForObjectDetection,
    class_names: list[str],
    *,
    pretrained_backbone: bool = True,
    config_overrides: dict[str, Any] | None = None,
    segment: bool = False,
) -> tuple[DFineForObjectDetection, ModelReport]:
    """The model to train on a data set with ``class_names`` (see the module docstring).

    Args:
        source: a preset name, anything ``from_pretrained`` accepts, or a ``DFineForObjectDetection`` in memory
            (fine-tuned like a checkpoint of it; the object itself is not changed).
        class_names: the data set's classes in label order.
        pretrained_backbone: presets only: start the backbone from ImageNet weights.
        config_overrides: DFineConfig fields to set (e.g. ``num_queries``, ``num_denoising``).
        segment: build a ``DFineForInstanceSegmentation`` (instance segmentation) rather than a detector.

    Returns:
        The model in train mode, and a report of what was loaded, re-initialised and frozen.

    Raises:
        ConfigError: unknown config overrides, or values of the wrong type or out of range.
        DFineError: the checkpoint cannot be used, or the backbone weights cannot be downloaded.
    """
    from dfine.config.presets import RECIPES
    from dfine.hub.convert import absent_detection_heads
    from dfine.hub.loading import load_state_dict_checked

    overrides = check_config_overrides(dict(config_overrides or {}))
    id2label = dict(enumerate(class_names))
    model_class = DFineForInstanceSegmentation if segment else DFineForObjectDetection
    if not isinstance(source, DFineForObjectDetection):
        source = str(source)
    if isinstance(source, str) and is_preset(source):
        size = size_of(preset_config(source))
        assert size is not None
        recipe = RECIPES[size]
        config = preset_config(source, id2label=id2label, freeze_backbone_batch_norms=recipe.freeze_backbone_norm,
                               **overrides)
        model = model_class(config)
        backbone = (_load_backbone_weights(model, SIZES[size].backbone) if pretrained_backbone
                    else "random (pretrained_backbone=False)")
        report = ModelReport(source, size, False, backbone)
    else:
        resolved = _checkpoint_to_fine_tune(source)
        name = source if isinstance(source, str) else resolved.source
        if resolved.state_dict is None:
            raise CheckpointError(f"{name}: holds no weights to fine-tune (pass a preset name to train from "
                                  "scratch)")
        notes = []
        size = size_of(resolved.config)
        if size is None:
            size = "s"
            notes.append("not a standard D-FINE size: the S recipe's hyper-parameters are used")
        recipe = RECIPES[size]
        same_classes = resolved.config.class_names == list(class_names)
        overrides = {"freeze_backbone_batch_norms": recipe.freeze_backbone_norm, "id2label": id2label, **overrides}
        config = DFineConfig.from_dict(resolved.config.to_dict(), **overrides)
        model = model_class(config)
        weights = _fit_mask_branch(resolved.state_dict, model, resolved.source, notes)
        if not same_classes:
            matches = match_class_names(resolved.config.class_names, class_names)
            if is_renaming(resolved.config.class_names, class_names, matches):
                renamed = sum(m is None for m in matches)
                notes.append(f"{renamed} of the {len(class_names)} classes have other names in the data set, in the "
                             "same order: the class rows are kept in label order and the data set's names are used")
            elif any(m is not None for m in matches):
                # rows follow the names, so a reordered or extended class list keeps what each class learnt
                weights = carry_class_rows(weights, model.state_dict(), matches)
                notes.append(describe_carried_rows(class_names, matches))
        # a transformers DFineModel file has no decoder class/box heads: fine-tuning starts them fresh
        fresh = absent_detection_heads(weights)
        skipped = load_state_dict_checked(model, weights, resolved.source,
                                          allow_new_heads=not same_classes or "num_denoising" in overrides, fresh=fresh)
        model.sync_config_with_weights()
        report = ModelReport(name, size, True, "from the checkpoint", sorted(skipped), notes=notes)
        if pretrained_backbone is False:
            report.notes.append("pretrained_backbone=False has no effect when fine-tuning a checkpoint")
    if segment:
        report.notes.insert(0, "instance segmentation: boxes and masks (D-FINE-seg's mask branch)")
    if recipe.freeze_backbone_norm:
        report.frozen = freeze_stem(model)
    return model.train(), report


def _fit_mask_branch(weights: dict[str, Any], model: DFineForObjectDetection, source: str,
                     notes: list[str]) -> dict[str, Any]:
    """The checkpoint's weights fitted to whether ``model`` has a mask branch (:func:`fit_mask_branch`), and a note
    when the checkpoint is of the other kind."""
    from dfine.hub.convert import MASK_BRANCH
    from dfine.model.pretrained import fit_mask_branch

    given = any(MASK_BRANCH.match(k) for k in weights)
    if given and not model.config.use_mask_head:
        notes.append("a segmentation checkpoint trained for detection: its mask branch is left out")
    elif model.config.use_mask_head and not given:
        notes.append("a detection checkpoint trained for instance segmentation: the mask branch starts freshly "
                     "initialised")
    return fit_mask_branch(weights, model.state_dict(), type(model).__name__, source)


def build_loaders(
    train_set: DetectionDataset,
    val_set: DetectionDataset | None,
    *,
    batch_size: int,
    image_size: int | tuple[int, int],
    base_size_repeat: int | None,
    stop_epoch: int,
    workers: int,
    seed: int,
    world_size: int,
    pin_memory: bool = False,
    mixup: DenseO2OPolicy | None = None,
) -> tuple[EpochDataLoader, EpochDataLoader | None]:
    """Training loader (shuffled, last batch dropped, multi-scale until the stop epoch) and validation loader.

    ``batch_size`` is the total over all processes; each process loads its share. Workers live for the whole run
    (starting them again every epoch cost a few seconds per epoch): augmentations are seeded per sample from
    ``(seed, epoch, index)`` (:mod:`dfine.data.seeding`), so a resumed run still sees exactly the same ones.
    """
    per_process = batch_size // world_size
    train_loader = build_dataloader(
        train_set, per_process, shuffle=True, drop_last=True, workers=workers, seed=seed, pin_memory=pin_memory,
        collate_fn=BatchCollator(image_size, base_size_repeat=base_size_repeat, stop_epoch=stop_epoch, seed=seed,
                                 mixup=mixup),
        persistent_workers=True,
    )
    val_loader = None
    if val_set is not None:
        val_loader = build_dataloader(val_set, max(1, per_process), shuffle=False, workers=workers, seed=seed,
                                      pin_memory=pin_memory, collate_fn=BatchCollator(image_size),
                                      persistent_workers=True)
    return train_loader, val_loader
