"""``results.png`` during training, redrawn only as often as it is cheap.

Drawing the figure (matplotlib, a dozen panels) takes seconds on a small CPU: ``dfine train --profile`` on 36 tiles
of 416 px (D-FINE-N, batch 4, 2 cores) put "checkpoint + logs" at 2–6 s of a 45 s epoch, nearly all of it this
figure. On a small data set that is as long as a tenth of an epoch, every epoch. So after the first epoch the figure
is redrawn only once the time since the last drawing is at least ``1 / PLOT_TIME_SHARE`` times what that drawing
took, and always at the end of the run: on COCO-sized epochs (minutes to hours) that is still every epoch.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

__all__ = ["PLOT_TIME_SHARE", "ResultsPlot"]

logger = logging.getLogger(__name__)

PLOT_TIME_SHARE = 0.02
"""The largest share of the training time that redrawing ``results.png`` may take."""


class ResultsPlot:
    """``results.png`` drawn from ``metrics.jsonl``: :meth:`update` after each epoch, :meth:`flush` at the end."""

    def __init__(self, metrics_path: Path, out_png: Path) -> None:
        self.metrics_path = metrics_path
        self.out_png = out_png
        self.pending = False  # epochs logged since the last drawing
        self._drawn_at: float | None = None  # perf_counter at the end of the last drawing
        self._cost = 0.0  # seconds the last drawing took

    def update(self) -> None:
        """An epoch was logged: redraw now if that stays within :data:`PLOT_TIME_SHARE` of the time since the last
        drawing (or nothing was drawn yet)."""
        self.pending = True
        if self._drawn_at is None or self._cost <= PLOT_TIME_SHARE * (time.perf_counter() - self._drawn_at):
            self._draw()

    def flush(self) -> None:
        """The end of the run: draw what :meth:`update` left out."""
        if self.pending:
            self._draw()

    def _draw(self) -> None:
        from dfine.engine.plots import plot_results

        started = time.perf_counter()
        try:
            plot_results(self.metrics_path, self.out_png)
        except Exception as e:  # a plotting problem must never end a long training run
            logger.warning("could not draw %s: %s", self.out_png.name, e)
        self._drawn_at = time.perf_counter()
        self._cost = self._drawn_at - started
        self.pending = False
