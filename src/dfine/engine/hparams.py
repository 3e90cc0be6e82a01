"""The training hyper-parameters of one run: the size's recipe, scaled to the user's batch size and data set.

The original's recipe (``configs/dfine/dfine_hgnetv2_*_coco.yml``, ``configs/dfine/include/optimizer.yml``).
The recipe (:data:`dfine.config.presets.RECIPES`) was tuned for COCO (118k images) at a fixed total
batch size. :func:`resolve_hyperparameters` adapts it, in this order, and records every adjustment in
:attr:`Hyperparameters.notes` so the start-of-run printout says what changed and why:

1. **Batch size**: with ``k = batch / recipe batch``, the EMA decay becomes ``1 − k·(1 − decay)`` (the same
   averaging horizon in *images*) and the LR warm-up and EMA warm-up iterations are divided by ``k`` (README rule
   of the original). The learning rates follow :attr:`Hyperparameters.lr_scaling`; its default ``auto`` is the
   original's linear rule (× k) on COCO-sized data (>= :data:`LARGE_DATASET` training images), where the recipe's
   numbers stand, and :data:`SMALL_DATA_LR_SCALING` below it, where the linear rule at a small batch gives a
   learning rate too small to learn in the run (measured: docs/training-defaults.md). An explicit ``lr`` is taken
   as given (not scaled); the backbone LR keeps the recipe's ratio to it.
2. **Epochs**: the recipe's epochs for COCO-sized data (>= :data:`LARGE_DATASET` images). Smaller data sets get at
   least the recipe's epochs and at least :data:`MIN_ITERATIONS` optimizer steps (so a 100-image set is not done
   after a few hundred steps), never more than :data:`MAX_DEFAULT_EPOCHS`. The stop epoch (last
   ``stage-2`` epochs without strong augmentation) keeps the recipe's proportion (12/160 for N).
3. **Short runs**: warm-ups and the EMA averaging horizon ``1/(1 − decay)`` are capped at
   :data:`MAX_SCHEDULE_FRACTION` of all iterations. On COCO this never triggers (the recipe's EMA horizon is 3–7% of
   the run, its warm-up 0.3%), and the ratios are invariant to the batch size, so the cap only acts on small data.
   A run from scratch of fewer than :data:`SHORT_RUN_ITERATIONS` steps on a small data set has no strong
   augmentation (stop epoch 0), as measured best there; a short fine-tuning run is told about it.
4. **Fine-tuning** (any model that is not a preset): LR warm-up 0 and EMA warm-up 0, as the original's
   Objects365→COCO/custom recipes; epochs default to those recipes' (N/S 64, M 56, L/X 36).
5. **Explicit overrides** (any field, e.g. ``stop_epoch=0``) win over everything and are applied last.
"""

from __future__ import annotations

import math
import typing
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any

from dfine.config.fields import coerce, type_description
from dfine.config.presets import RECIPES
from dfine.engine.recipes import apply_recipe, check_recipe, describe_recipe
from dfine.engine.schedule import LR_SCHEDULES, describe_schedule
from dfine.errors import ConfigError

LR_SCALINGS = ("auto", "linear", "sqrt", "none")
"""How the recipe's learning rate may follow the batch size (:attr:`Hyperparameters.lr_scaling`)."""
LARGE_DATASET = 10_000
"""Training images from which the recipe's epoch count and learning-rate rule are used unchanged."""
SMALL_DATA_LR_SCALING = "none"
"""The learning-rate rule ``auto`` picks below :data:`LARGE_DATASET` training images: the one that scored best on
the small real data sets of ``benchmarks/train_quality.py`` (docs/training-defaults.md)."""
MIN_ITERATIONS = 2_000
"""Fewest optimizer steps the default epoch count aims for on small data sets."""
MAX_DEFAULT_EPOCHS = 500
"""Upper bound of the default epoch count (tiny data sets; pass ``epochs`` to go further)."""
SHORT_RUN_ITERATIONS = 1_000
"""Below this many optimizer steps on a small data set, a run from scratch has no strong augmentation by default
(``stop_epoch=0``: flips and the resize only) and a fine-tuning run is told about it. Both measured runs from scratch
(240 and 360 steps) trained to a clearly higher AP with flips alone than with the recipe's strong augmentation; the one
fine-tuning run (270 steps) to a slightly lower one, at an AP near 1% (docs/training-defaults.md)."""
MAX_SCHEDULE_FRACTION = 0.1
"""Warm-ups and the EMA horizon are at most this share of all iterations."""
EVAL_SHARE = 0.05
"""The share of training time the default evaluation interval aims to spend on evaluation."""
EVAL_COST_PER_IMAGE = 1 / 4
"""Evaluating an image costs about this fraction of training on one (a forward without loss, no backward, plus
COCO scoring): ``dfine train --profile`` measured 0.062 s per validation image against 0.24 s per training image for
D-FINE-N at 416 px on the CPU (docs/training-speed.md)."""
MIN_EVALUATIONS = 5
"""The default evaluation interval keeps at least this many evaluations in a run (besides those at the stop and last
epochs, which always happen). Ten made a 10-epoch run on 36 images evaluate after every epoch, 7.6% of its wall time
(docs/training-speed.md); five halve that while the best epoch is still chosen among several."""

# Objects365 -> COCO / custom fine-tuning schedules (epochs, stop epoch) of the original
# (``configs/dfine/objects365/dfine_hgnetv2_*_obj2coco.yml``).
FINETUNE_EPOCHS: dict[str, tuple[int, int]] = {"n": (64, 56), "s": (64, 56), "m": (56, 48), "l": (36, 30),
                                               "x": (36, 30)}


@dataclass
class Hyperparameters:
    """Everything the optimizer, scheduler, EMA and data pipeline need, resolved for one run.

    Attributes:
        size: recipe letter (``n``, ``s``, ``m``, ``l``, ``x``).
        batch_size: total images per optimizer step, summed over all processes.
        epochs: epochs to train.
        stop_epoch: first epoch of stage 2, counted from 0, i.e. the number of stage-1 epochs (stage 2 has no
            photometric distortion, zoom-out, IoU crop or multi-scale; training restarts from the best stage-1
            weights). ``>= epochs`` means there is no stage 2.
        lr: AdamW learning rate of the encoder/decoder parameters.
        backbone_lr: AdamW learning rate of the backbone parameters.
        weight_decay: AdamW weight decay (decoupled) of the groups that have it.
        betas: AdamW betas.
        warmup_iters: linear LR warm-up, in optimizer steps (0 = none).
        lr_schedule: the LR's shape after the warm-up, one of :data:`~dfine.engine.schedule.LR_SCHEDULES`
            (``constant``: the original recipe's).
        lr_min_ratio: where the decaying schedules end, as a fraction of the base LR.
        lr_flat_epochs: ``flat-cosine``: epochs at the full LR before the decay (None: half the stage-1 epochs).
        recipe: ``dfine`` (the original's) or ``deim`` (:mod:`dfine.engine.recipes`).
        strong_aug_start: first epoch with strong augmentation (DEIM starts with a few plain epochs; D-FINE: 0).
        dense_o2o_epochs: ``[start, end)`` epochs of DEIM's Dense O2O (mosaic and mixup); ``[0, 0]``: none.
        mosaic_prob: the chance a training sample is a mosaic of four, in the Dense O2O epochs.
        mixup_prob: the chance a batch is mixed with itself shifted by one image, in the Dense O2O epochs.
        mal_gamma: γ of DEIM's Matchability-Aware Loss, which replaces VFL (None: VFL).
        lr_scaling: how the recipe's learning rates follow the batch size ``k = batch / recipe batch``:
            ``linear`` (× k, the original's rule), ``sqrt`` (× √k) or ``none``; ``auto`` (the default) resolves to
            ``linear`` from :data:`LARGE_DATASET` training images on and to :data:`SMALL_DATA_LR_SCALING` below
            (the resolved rule is what is recorded). An explicit ``lr`` is not scaled.
        ema_decay: EMA decay ``d`` in ``d(t) = d·(1 − exp(−t / ema_warmups))``.
        ema_warmups: EMA warm-up constant, in optimizer steps (0 = constant decay).
        ema_restart_decay: EMA decay from the stop epoch on.
        clip_max_norm: global L2 gradient-norm clip (0 disables).
        base_size_repeat: weight of the base size among the multi-scale sizes; None = no multi-scale.
        freeze_backbone_norm: frozen backbone BN and stem (L/X) instead of trainable BN (N/S/M).
        no_decay_bias: also exempt encoder/decoder biases from weight decay (N/S/M).
        backbone_norm_decay: apply weight decay to backbone BN and learnable-affine parameters (see
            :mod:`dfine.engine.optim` for why this reproduces the original).
        fine_tune: the run starts from trained detection weights.
        patience: early stopping (0 = off): after this many evaluations in a row without a better AP, stage 1 ends
            early (training goes on with stage 2 from the best stage-1 weights) and stage 2 ends the run.
        val_split: for a data set without a validation split, the fraction of the training images held out for
            validation (0 = none; :mod:`dfine.data.holdout`).
        notes: human-readable record of every adjustment made to the recipe.
    """

    size: str
    batch_size: int
    epochs: int
    stop_epoch: int
    lr: float
    backbone_lr: float
    weight_decay: float
    warmup_iters: int
    ema_decay: float
    ema_warmups: int
    ema_restart_decay: float
    clip_max_norm: float
    base_size_repeat: int | None
    freeze_backbone_norm: bool
    no_decay_bias: bool
    backbone_norm_decay: bool = True
    betas: tuple[float, float] = (0.9, 0.999)
    fine_tune: bool = False
    patience: int = 0
    val_split: float = 0.0
    lr_schedule: str = "constant"
    lr_min_ratio: float = 0.0
    lr_flat_epochs: int | None = None
    recipe: str = "dfine"
    strong_aug_start: int = 0
    dense_o2o_epochs: tuple[int, int] = (0, 0)
    mosaic_prob: float = 0.0
    mixup_prob: float = 0.0
    mal_gamma: float | None = None
    lr_scaling: str = "linear"  # resolved: never "auto"; records from before the field were linear
    notes: list[str] = field(default_factory=list)

    @classmethod
    def field_names(cls) -> set[str]:
        """Names that may be overridden (everything but the notes)."""
        return {f.name for f in fields(cls)} - {"notes"}

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON/``torch.save(weights_only)``-safe dict."""
        out = asdict(self)
        out["betas"] = list(self.betas)
        out["dense_o2o_epochs"] = list(self.dense_o2o_epochs)
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Hyperparameters:
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in data.items() if k in known}
        values["betas"] = tuple(values.get("betas", (0.9, 0.999)))
        values["dense_o2o_epochs"] = tuple(values.get("dense_o2o_epochs", (0, 0)))
        return cls(**values)

    def summary(self) -> str:
        """A multi-line table of the resolved values and the notes explaining them."""
        # Console epochs are 1-based ("epoch 3/20"): stage 2 runs from epoch stop_epoch + 1 to the last.
        first = self.stop_epoch + 1
        which = f"epoch {first}" if first == self.epochs else f"epochs {first}..{self.epochs}"
        stage2 = (f"{which} (no strong augmentation, EMA decay {self.ema_restart_decay:.6g})"
                  if self.stop_epoch < self.epochs else "none")
        rows = [
            ("recipe", ("DEIM on D-FINE-" if self.recipe == "deim" else "D-FINE-") + self.size.upper()
                       + (" (fine-tuning)" if self.fine_tune else "")),
            ("batch size", f"{self.batch_size} (total over all processes)"),
            ("epochs", f"{self.epochs}; stage 2: {stage2}"),
            ("learning rate", f"{self.lr:.4g} (backbone {self.backbone_lr:.4g}), AdamW betas "
                              f"{self.betas[0]}/{self.betas[1]}, weight decay {self.weight_decay:.4g}"),
            ("LR schedule", describe_schedule(self)),
            ("EMA", f"decay {self.ema_decay:.6g}, warm-up {count_noun(self.ema_warmups, 'iteration')}"),
            ("gradient clip", f"{self.clip_max_norm:g} (global L2 norm)"),
            ("multi-scale", "off" if self.base_size_repeat is None else f"on (base size x{self.base_size_repeat})"),
            *describe_recipe(self),
            ("backbone norm", "frozen BN + frozen stem" if self.freeze_backbone_norm else "trainable BN"),
        ]
        if self.patience:
            rows.append(("early stopping", f"after {count_noun(self.patience, 'evaluation')} without a better AP: "
                                           "stage 1 ends (stage 2 follows), stage 2 ends the run"))
        width = max(len(name) for name, _ in rows)
        lines = ["Training hyper-parameters:"] + [f"  {name:<{width}}  {value}" for name, value in rows]
        lines += [f"  - {note}" for note in self.notes]
        return "\n".join(lines)


def count_noun(n: int, noun: str) -> str:
    """``"1 iteration"``, ``"2 iterations"``: a count for the console."""
    return f"{n} {noun}" + ("" if n == 1 else "s")


def check_overrides(overrides: dict[str, Any]) -> dict[str, Any]:
    """Overrides converted to their fields' types (``1`` -> ``1.0`` for a float field).

    Raises:
        ConfigError: an unknown field, or a value of the wrong type (one line naming both).
    """
    unknown = set(overrides) - Hyperparameters.field_names()
    if unknown:
        raise ConfigError(f"unknown hyper-parameter(s): {', '.join(sorted(unknown))}")
    hints = typing.get_type_hints(Hyperparameters)
    checked = {}
    for name, value in overrides.items():
        try:
            checked[name] = coerce(hints[name], value)
        except ValueError:
            raise ConfigError(f"{name} must be {type_description(hints[name])}, got {value!r}") from None
    return checked


def _scaled_decay(decay: float, k: float) -> float:
    """``1 − k·(1 − decay)``: the same EMA horizon in images when each step sees ``k`` times the recipe's batch."""
    return min(max(1.0 - k * (1.0 - decay), 0.0), 1.0 - 1e-12)


def _cap_decay(decay: float, max_horizon: float) -> float:
    """Lower ``decay`` so that its horizon ``1/(1 − decay)`` (in steps) is at most ``max_horizon``."""
    if max_horizon <= 1.0:
        return 0.0
    return min(decay, 1.0 - 1.0 / max_horizon)


def default_eval_interval(num_train: int, num_val: int, epochs: int) -> int:
    """Evaluate every this many epochs: the smallest interval that keeps evaluation near :data:`EVAL_SHARE` of the
    training time, but at least :data:`MIN_EVALUATIONS` evaluations a run. On COCO (5k validation images, 118k
    training) it is 1, as in the original; on small data sets, whose validation split is a large share of the images,
    2 or 3."""
    if num_val <= 0 or num_train <= 0:
        return 1
    share = num_val * EVAL_COST_PER_IMAGE / num_train  # of an epoch's training time, evaluating every epoch
    return max(1, min(math.ceil(share / EVAL_SHARE - 1e-9), epochs // MIN_EVALUATIONS))


def default_stop_epoch(epochs: int, recipe_epochs: int, recipe_stop: int) -> int:
    """The stop epoch keeping the recipe's share of stage-2 epochs (at least one when there are two epochs)."""
    if epochs < 2:
        return epochs
    stage2 = max(1, round(epochs * (recipe_epochs - recipe_stop) / recipe_epochs))
    return max(1, epochs - stage2)


def _base_schedule(size: str, fine_tune: bool) -> tuple[int, int]:
    """(epochs, stop epoch) of the original's schedule: its COCO recipe, or its fine-tuning recipe."""
    return FINETUNE_EPOCHS[size] if fine_tune else (RECIPES[size].epochs, RECIPES[size].stop_epoch)


def recipe_stop_epoch(size: str, epochs: int, fine_tune: bool = False) -> int:
    """The stop epoch the recipe's stages give a run of ``epochs``: its own at its own length, else its share of
    stage-2 epochs (:func:`default_stop_epoch`); before any short-run rule or override."""
    base_epochs, base_stop = _base_schedule(size, fine_tune)
    return base_stop if epochs == base_epochs else default_stop_epoch(epochs, base_epochs, base_stop)


def resolve_hyperparameters(
    size: str,
    *,
    num_train_images: int,
    batch_size: int | None = None,
    epochs: int | None = None,
    lr: float | None = None,
    fine_tune: bool = False,
    world_size: int = 1,
    overrides: dict[str, Any] | None = None,
    recipe: str = "dfine",
) -> Hyperparameters:
    """The recipe of ``size`` adapted to this run (see the module docstring for the rules).

    Args:
        size: ``n``, ``s``, ``m``, ``l`` or ``x``.
        num_train_images: images in the training split.
        batch_size: total batch over all processes; None uses the recipe's per-GPU batch (its total / 4) on every
            process, capped at the data set size.
        epochs: None picks a default from the data set size.
        lr: base learning rate, used as given; None scales the recipe's.
        fine_tune: starting from trained detection weights rather than a preset.
        world_size: number of training processes.
        overrides: field name -> value, applied last.
        recipe: ``dfine`` or ``deim`` (DEIM's schedule, Dense O2O and MAL on top; :mod:`dfine.engine.recipes`).

    Raises:
        ConfigError: invalid values, or an override that is not a hyper-parameter.
    """
    if size not in RECIPES:
        raise ConfigError(f"no training recipe for size {size!r}")
    check_recipe(recipe)
    recipe_name, recipe = recipe, RECIPES[size]
    overrides = check_overrides(dict(overrides or {}))
    if num_train_images < 1:
        raise ConfigError("the training split has no images")
    notes: list[str] = []

    if batch_size is None:
        batch_size = min(recipe.batch_size // 4 * world_size, max(world_size, num_train_images))
        batch_size -= batch_size % world_size
        notes.append(f"batch size {batch_size}: the recipe's {recipe.batch_size // 4} per process"
                     + (" (capped at the data set size)" if batch_size < recipe.batch_size // 4 * world_size else ""))
    if batch_size < 1 or batch_size % world_size:
        raise ConfigError(f"batch size {batch_size} must be a positive multiple of the {world_size} processes")
    if batch_size > num_train_images:
        raise ConfigError(f"batch size {batch_size} is larger than the {num_train_images} training images "
                          "(the last incomplete batch is dropped, so no step would be taken)")
    k = batch_size / recipe.batch_size

    lr_scaling = str(overrides.pop("lr_scaling", "auto"))
    if lr_scaling not in LR_SCALINGS:
        raise ConfigError(f"lr_scaling must be one of {', '.join(LR_SCALINGS)}, got {lr_scaling!r}")
    chosen = lr_scaling == "auto"
    if chosen:
        lr_scaling = "linear" if num_train_images >= LARGE_DATASET else SMALL_DATA_LR_SCALING
    if lr is None:
        factor = {"linear": k, "sqrt": math.sqrt(k), "none": 1.0}[lr_scaling]
        lr, backbone_lr = recipe.lr * factor, recipe.backbone_lr * factor
        why = (f" (lr_scaling=auto: {lr_scaling} below {LARGE_DATASET} training images, where the linear rule's "
               "small learning rates barely train; docs/training-defaults.md)"
               if chosen and lr_scaling != "linear" else "")
        if k != 1 and lr_scaling != "none":
            notes.append(f"learning rates scaled x{factor:.4g} from the recipe's {recipe.lr:g}/{recipe.backbone_lr:g} "
                         f"(batch {batch_size} vs {recipe.batch_size}, {lr_scaling} scaling){why}")
        elif k != 1:
            notes.append(f"learning rates {recipe.lr:g}/{recipe.backbone_lr:g}: the recipe's, not scaled from its "
                         f"batch {recipe.batch_size} to {batch_size}{why}")
    else:
        if lr <= 0:
            raise ConfigError(f"lr must be positive, got {lr}")
        backbone_lr = lr * recipe.backbone_lr / recipe.lr
        notes.append(f"learning rate {lr:g} as given; backbone LR keeps the recipe's ratio")

    iters_per_epoch = num_train_images // batch_size
    base_epochs, _ = _base_schedule(size, fine_tune)
    if epochs is None:
        epochs = base_epochs
        if num_train_images < LARGE_DATASET:
            epochs = min(MAX_DEFAULT_EPOCHS, max(base_epochs, math.ceil(MIN_ITERATIONS / iters_per_epoch)))
            notes.append(f"{epochs} epochs for {num_train_images} training images ({iters_per_epoch} steps each): "
                         f"at least the recipe's {base_epochs} and ~{MIN_ITERATIONS} steps")
    if epochs < 1:
        raise ConfigError(f"epochs must be at least 1, got {epochs}")
    stop_epoch = recipe_stop_epoch(size, epochs, fine_tune)
    total = epochs * iters_per_epoch
    max_schedule = MAX_SCHEDULE_FRACTION * total
    if (num_train_images < LARGE_DATASET and total < SHORT_RUN_ITERATIONS and stop_epoch > 0
            and "stop_epoch" not in overrides and recipe_name == "dfine"):
        if fine_tune:
            notes.append(f"a short run ({total} steps): the strong augmentation until epoch {stop_epoch} may cost AP "
                         "here; from scratch, flips alone (--set stop_epoch=0) did better in both measured runs of a "
                         "few hundred steps, fine-tuning was measured once, at too low an AP to rank "
                         "(docs/training-defaults.md)")
        else:
            notes.append(f"no strong augmentation (stop epoch 0 instead of {stop_epoch}): a short run ({total} steps) "
                         "from scratch on a small data set, where flips alone trained to a higher AP in both measured "
                         "runs (docs/training-defaults.md; --set stop_epoch=N keeps it until epoch N)")
            stop_epoch = 0

    def capped(name: str, value: float) -> int:
        if value > max_schedule:
            notes.append(f"{name} capped at {int(max_schedule)} iterations ({MAX_SCHEDULE_FRACTION:.0%} of the "
                         f"{total} in this run; scaled recipe value {round(value)})")
            return int(max_schedule)
        return round(value)

    if fine_tune:
        warmup_iters = ema_warmups = 0
        notes.append("fine-tuning: no LR warm-up and no EMA warm-up (the original's Objects365 fine-tuning recipe)")
    else:
        warmup_iters = capped("LR warm-up", recipe.warmup_iters / k)
        ema_warmups = capped("EMA warm-up", recipe.ema_warmups / k)
    ema_decay = _scaled_decay(recipe.ema_decay, k)
    restart_decay = _scaled_decay(recipe.ema_restart_decay, k)
    limited = _cap_decay(ema_decay, max_schedule)
    if limited < ema_decay:
        notes.append(f"EMA decay lowered to {limited:.6g} (scaled recipe value {ema_decay:.6g}) so that it averages "
                     f"over at most {MAX_SCHEDULE_FRACTION:.0%} of the run")
        ema_decay, restart_decay = limited, _cap_decay(restart_decay, max_schedule)

    hp = Hyperparameters(
        size=size, batch_size=batch_size, epochs=epochs, stop_epoch=stop_epoch, lr=lr, backbone_lr=backbone_lr,
        weight_decay=recipe.weight_decay, warmup_iters=warmup_iters, ema_decay=ema_decay, ema_warmups=ema_warmups,
        ema_restart_decay=restart_decay, clip_max_norm=recipe.clip_max_norm, base_size_repeat=recipe.base_size_repeat,
        freeze_backbone_norm=recipe.freeze_backbone_norm, no_decay_bias=recipe.no_decay_bias, fine_tune=fine_tune,
        lr_scaling=lr_scaling, notes=notes,
    )
    hp = apply_recipe(hp, recipe_name, total)
    if overrides:
        hp = replace(hp, **overrides)
        hp.notes.append("set explicitly: " + ", ".join(f"{k}={v}" for k, v in sorted(overrides.items())))
        _explain_explicit_warmups(hp, overrides, total)
    _validate(hp)
    return hp


def _explain_explicit_warmups(hp: Hyperparameters, overrides: dict[str, Any], total: int) -> None:
    """An explicit warm-up replaces the capped recipe value (whose note would now contradict it), and one longer
    than the run never finishes: said, as the LR then ends below its target."""
    for name, label in (("warmup_iters", "LR warm-up"), ("ema_warmups", "EMA warm-up")):
        if name not in overrides:
            continue
        hp.notes = [note for note in hp.notes if not note.startswith(f"{label} capped")]
        value = overrides[name]
        if isinstance(value, int) and value > total:
            effect = (f"the LR ends at {total / value:.0%} of its target" if name == "warmup_iters"
                      else "the EMA never finishes warming up")
            hp.notes.append(f"{name}={value} is longer than this run's {count_noun(total, 'iteration')}: {effect}")


def _validate(hp: Hyperparameters) -> None:
    if hp.size not in RECIPES:
        raise ConfigError(f"size must be one of {', '.join(RECIPES)}, got {hp.size!r}")
    if hp.epochs < 1:
        raise ConfigError(f"epochs must be at least 1, got {hp.epochs}")
    if hp.stop_epoch < 0:
        raise ConfigError(f"stop_epoch must be >= 0, got {hp.stop_epoch}")
    if hp.patience < 0:
        raise ConfigError(f"patience must be >= 0 (0: no early stopping), got {hp.patience}")
    if hp.warmup_iters < 0 or hp.ema_warmups < 0:
        raise ConfigError("warm-up iterations must be >= 0")
    for name in ("ema_decay", "ema_restart_decay"):
        if not 0.0 <= getattr(hp, name) < 1.0:
            raise ConfigError(f"{name} must be in [0, 1), got {getattr(hp, name)}")
    if hp.lr <= 0 or hp.backbone_lr < 0 or hp.weight_decay < 0:
        raise ConfigError("learning rates must be positive and weight decay non-negative")
    if hp.clip_max_norm < 0:
        raise ConfigError(f"clip_max_norm must be >= 0 (0 disables clipping), got {hp.clip_max_norm}")
    if hp.base_size_repeat is not None and hp.base_size_repeat < 0:
        raise ConfigError(f"base_size_repeat must be >= 0 or null (no multi-scale), got {hp.base_size_repeat}")
    if hp.lr_schedule not in LR_SCHEDULES:
        raise ConfigError(f"lr_schedule must be one of {', '.join(LR_SCHEDULES)}, got {hp.lr_schedule!r}")
    if not 0.0 <= hp.lr_min_ratio <= 1.0:
        raise ConfigError(f"lr_min_ratio must be in [0, 1], got {hp.lr_min_ratio}")
    if hp.lr_flat_epochs is not None and hp.lr_flat_epochs < 0:
        raise ConfigError(f"lr_flat_epochs must be >= 0 or null, got {hp.lr_flat_epochs}")
    check_recipe(hp.recipe)
    for name in ("mosaic_prob", "mixup_prob"):
        if not 0.0 <= getattr(hp, name) <= 1.0:
            raise ConfigError(f"{name} must be in [0, 1], got {getattr(hp, name)}")
    if hp.mal_gamma is not None and hp.mal_gamma < 0:
        raise ConfigError(f"mal_gamma must be >= 0 or null (VFL), got {hp.mal_gamma}")
    if not all(0.0 <= b < 1.0 for b in hp.betas):
        raise ConfigError(f"betas must both be in [0, 1), got {list(hp.betas)}")
