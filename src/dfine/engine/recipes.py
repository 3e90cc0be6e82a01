"""Training recipes on top of the per-size hyper-parameters: D-FINE's own, and DEIM's.

``dfine`` is the original D-FINE recipe (:mod:`dfine.engine.hparams` resolves it). ``deim`` trains the same model
the way DEIM does (Huang et al., "DEIM: DETR with Improved Matching for Fast Convergence", CVPR 2025; its
``configs/base/deim.yml`` and ``configs/deim_dfine/deim_hgnetv2_*_coco.yml``), which converges in fewer epochs:

* **Dense O2O**: in the middle epochs, half of the samples are mosaics of four images and half of the batches are
  mixed up with themselves shifted by one (:mod:`dfine.data.mosaic`), so one-to-one matching sees several times
  more positives per image;
* **MAL**, the Matchability-Aware Loss, replaces VFL (γ 1.5; :func:`dfine.loss.functional.matchability_aware_loss`);
* a **flat-cosine** schedule: warm-up (4x D-FINE's, capped like it), the full LR until the Dense O2O epochs end,
  then a half cosine down to half of it at the stop epoch (D-FINE-N keeps its LR flat, as DEIM's N config does);
* a few **plain epochs** first (DEIM's policy starts its augmentations at epoch 4 of 132).

The epochs are proportioned as DEIM proportions its COCO schedules: plain start ~3% of the run (at most 4),
Dense O2O until half of it, strong augmentation until the recipe's stop epoch, then the plain last epochs.
DEIM also trains every backbone's batch norm and switches the decoder to SiLU; those change the model, so they are
not part of this recipe (a D-FINE checkpoint fine-tunes as itself).
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING

from dfine.errors import ConfigError

if TYPE_CHECKING:
    from dfine.engine.hparams import Hyperparameters

RECIPE_NAMES = ("dfine", "deim")

DEIM_MAL_GAMMA = 1.5
DEIM_DENSE_PROB = 0.5  # mosaic_prob and mixup_prob of deim.yml
DEIM_WARMUP_FACTOR = 4  # warmup_iter 2000 against D-FINE's 500
DEIM_LR_MIN_RATIO = {"n": 1.0}  # lr_gamma; N's config keeps the LR flat, the others decay to half
DEIM_LR_MIN_DEFAULT = 0.5


def check_recipe(name: str) -> None:
    if name not in RECIPE_NAMES:
        raise ConfigError(f"unknown recipe {name!r}: choose {' or '.join(RECIPE_NAMES)}")


def apply_recipe(hp: Hyperparameters, name: str, total_iters: int) -> Hyperparameters:
    """``hp`` (D-FINE's resolved recipe) changed into recipe ``name``'s; every change is said in ``hp.notes``."""
    check_recipe(name)
    if name == "dfine":
        return hp
    epochs = hp.epochs
    start = min(4, max(1, round(epochs * 4 / 132))) if epochs > 2 else 0
    end = max(start + 1, round(epochs / 2)) if epochs > 2 else 0
    warmup = hp.warmup_iters if hp.fine_tune else min(hp.warmup_iters * DEIM_WARMUP_FACTOR,
                                                       max(hp.warmup_iters, total_iters // 10))
    deim = replace(hp, recipe="deim", strong_aug_start=start, dense_o2o_epochs=(start, min(end, hp.stop_epoch)),
                   mosaic_prob=DEIM_DENSE_PROB, mixup_prob=DEIM_DENSE_PROB, mal_gamma=DEIM_MAL_GAMMA,
                   lr_schedule="flat-cosine", lr_flat_epochs=min(end, hp.stop_epoch), warmup_iters=warmup,
                   lr_min_ratio=DEIM_LR_MIN_RATIO.get(hp.size, DEIM_LR_MIN_DEFAULT), notes=list(hp.notes))
    deim.notes.append(
        f"DEIM recipe: plain epochs 1..{start}, Dense O2O (mosaic {DEIM_DENSE_PROB:g}, mixup {DEIM_DENSE_PROB:g}) in "
        f"epochs {start + 1}..{deim.dense_o2o_epochs[1]}, MAL (gamma {DEIM_MAL_GAMMA:g}) instead of VFL, flat-cosine "
        f"LR; the epochs keep DEIM's COCO proportions")
    return deim


def describe_recipe(hp: Hyperparameters) -> list[tuple[str, str]]:
    """The start-of-run table's rows for what the recipe adds (none for D-FINE's)."""
    if hp.recipe == "dfine" and not (hp.mosaic_prob or hp.mixup_prob or hp.mal_gamma is not None):
        return []
    first, last = hp.dense_o2o_epochs
    rows = [("plain start", f"epochs 1..{hp.strong_aug_start} without strong augmentation" if hp.strong_aug_start
             else "none")]
    rows.append(("Dense O2O", f"epochs {first + 1}..{last}: mosaic p={hp.mosaic_prob:g}, mixup p={hp.mixup_prob:g}"
                 if last > first and (hp.mosaic_prob or hp.mixup_prob) else "off"))
    rows.append(("class loss", "VFL" if hp.mal_gamma is None else f"MAL (gamma {hp.mal_gamma:g})"))
    return rows
