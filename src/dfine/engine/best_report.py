"""The best epoch's report at the end of a run: its evaluation (again, when the run was resumed after it) and the
``val/`` folder of pictures and predictions that ``dfine val --output`` writes."""

from __future__ import annotations

import copy
import logging
from typing import TYPE_CHECKING

from dfine.engine.distributed import is_main_process, read_agreed
from dfine.engine.evaluator import CocoEvaluator
from dfine.engine.mask_eval import new_mask_evaluator
from dfine.engine.validate import evaluate
from dfine.errors import DFineError

if TYPE_CHECKING:
    from dfine.engine.trainer import Trainer

logger = logging.getLogger("dfine")


def write_val_report(trainer: Trainer) -> None:
    """``val/`` in the run folder: the pictures and predictions of ``dfine val --output`` for the best epoch."""
    if not is_main_process() or trainer.best_result is None or trainer.best_evaluator is None:
        return
    from dfine.engine.analysis import write_report

    ids = getattr(trainer.ema.module.config, "dataset_category_ids", None) or list(range(len(trainer.class_names)))
    try:
        write_report(trainer.output_dir / "val", trainer.best_result, trainer.best_evaluator, ids, trainer.class_names,
                     mask_evaluator=trainer.best_mask_evaluator)
    except Exception as e:  # a plotting problem must never end a long training run
        logger.warning("could not write the validation report to %s: %s", trainer.output_dir / "val", e)
        return
    trainer.say(f"Precision-recall curves, confusion matrix and per-class AP of epoch "
                f"{trainer.state.best_epoch + 1}: {trainer.output_dir / 'val'}")


def reevaluate_best(trainer: Trainer) -> None:
    """Evaluate ``best/`` again, for the closing table and ``val/``: a resumed run whose best epoch came before
    the resume holds no result of it, and the killed run stopped before it could write ``val/``."""
    from dfine.hub.convert import to_internal_names
    from dfine.hub.loading import load_state_dict_checked
    from dfine.hub.readers import load_safetensors_file

    path = trainer.paths["best"] / "model.safetensors"
    weights, problem = read_agreed(path, load_safetensors_file, (DFineError,))
    if problem is not None or weights is None:
        logger.warning("could not reload %s for the best epoch's report (%s)", path, problem or "no such file")
        return
    assert trainer.val_loader is not None and trainer.val_ground_truth is not None
    model = copy.deepcopy(trainer.ema.module)
    try:
        load_state_dict_checked(model, to_internal_names(weights), str(path))
    except DFineError as error:  # the same on every rank: they all read rank 0's weights
        logger.warning("could not reload %s for the best epoch's report (%s)", path, error)
        return
    trainer.best_evaluator = CocoEvaluator(trainer.val_ground_truth, trainer.class_names)
    trainer.best_mask_evaluator = new_mask_evaluator(model, trainer.val_ground_truth, trainer.class_names)
    trainer.best_result = evaluate(model, trainer.val_loader, trainer.val_ground_truth, trainer.class_names,
                                   trainer.device, trainer.amp_dtype, progress=trainer.progress and is_main_process(),
                                   evaluator=trainer.best_evaluator, uncertainty=True,
                                   mask_evaluator=trainer.best_mask_evaluator)
