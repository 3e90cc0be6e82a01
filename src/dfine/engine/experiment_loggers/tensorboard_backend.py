"""TensorBoard as an experiment logger: the run's settings as text and its pictures as images.

The per-epoch scalars are not written here: :class:`dfine.engine.logger.MetricsLogger` has always written them (into
``<run>/tensorboard``, on whenever the package is installed), and still does without any ``--logger``. This backend
adds what that writer lacks, into the same folder, so TensorBoard shows one run: the settings (text tab), the first
training batch and ``results.png`` (images tab), ``--profile``'s seconds per phase and the best epoch's metrics.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from dfine.engine.experiment_loggers.base import StartInfo

TENSORBOARD_DIR = "tensorboard"  # the folder MetricsLogger writes to


class TensorBoardLogger:
    """Settings, pictures, profile and best metrics into ``<run>/tensorboard``."""

    name = "tensorboard"
    epoch_scalars = False  # MetricsLogger writes them

    def __init__(self, info: StartInfo) -> None:
        from torch.utils.tensorboard import SummaryWriter

        # a second event file in MetricsLogger's folder: TensorBoard reads every event file of a folder as one run
        self._writer = SummaryWriter(log_dir=str(info.output_dir / TENSORBOARD_DIR), filename_suffix=".dfine")

    def log_params(self, params: Mapping[str, Any]) -> None:
        text = json.dumps(params, indent=2, default=str)
        # four spaces of indent make a Markdown code block, which TensorBoard's text tab shows as it is
        self._writer.add_text("settings", "\n".join("    " + line for line in text.splitlines()), 0)
        self._writer.flush()

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        for name, value in metrics.items():
            self._writer.add_scalar(name, value, step)
        self._writer.flush()

    def log_image(self, name: str, path: Path, step: int) -> None:
        import numpy as np
        from PIL import Image

        with Image.open(path) as picture:
            pixels = np.asarray(picture.convert("RGB"))
        self._writer.add_image(f"images/{name}", pixels, step, dataformats="HWC")
        self._writer.flush()

    def log_summary(self, metrics: Mapping[str, float], step: int) -> None:
        rows = "\n".join(f"| {name} | {value:.6g} |" for name, value in metrics.items())
        self._writer.add_text("best", f"best epoch: {step}\n\n| metric | value |\n|---|---|\n{rows}", step)
        self._writer.flush()

    def log_model(self, folder: Path) -> None:
        """TensorBoard holds no files: ``best/`` stays in the run folder."""

    def resume_info(self) -> dict[str, Any]:
        return {}  # a resumed run writes into the same folder: TensorBoard continues the run by itself

    def finish(self, status: str) -> None:
        self._writer.close()
