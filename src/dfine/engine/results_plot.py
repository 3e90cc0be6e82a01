"""``results.png`` during training, redrawn only as often as it is cheap.

Drawing the figure (matplotlib, a dozen panels) takes seconds on a small CPU: ``dfine train --profile`` on 36 tiles
of 416 px (D-FINE-N, batch 4, 2 cores) put "checkpoint + logs" at 2–6 s of a 45 s epoch, nearly all of it this
figure. On a small data set that is as long as a tenth of an epoch, every epoch. So the figure is redrawn only once
the time since the last drawing (or since the run started) is at least ``1 / PLOT_TIME_SHARE`` times what that drawing
took (the first drawing is priced at :data:`FIRST_DRAWING_SECONDS`, matplotlib's import included), and always at the
end of the run: on COCO-sized epochs (minutes to hours) that is still every epoch.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

__all__ = ["FIRST_DRAWING_SECONDS", "PLOT_TIME_SHARE", "ResultsPlot"]

logger = logging.getLogger(__name__)

PLOT_TIME_SHARE = 0.02
"""The largest share of the training time that redrawing ``results.png`` may take."""
FIRST_DRAWING_SECONDS = 1.5
"""What the first drawing is assumed to cost: the first epoch's "checkpoint + logs" took 1.9 s against 0.3 s in later
epochs in a ``dfine train --profile`` run on 36 tiles (D-FINE-N, 2 cores), the difference being this figure."""


class ResultsPlot:
    """``results.png`` drawn from ``metrics.jsonl``: :meth:`update` after each epoch, :meth:`flush` at the end.
    Make it when the run's training starts: the time until the first drawing counts from then."""

    def __init__(self, metrics_path: Path, out_png: Path) -> None:
        self.metrics_path = metrics_path
        self.out_png = out_png
        self.pending = False  # epochs logged since the last drawing
        self._drawn_at = time.perf_counter()  # the end of the last drawing, or the start of the run
        self._cost = FIRST_DRAWING_SECONDS  # what the last drawing took

    def update(self) -> None:
        """An epoch was logged: redraw now if that stays within :data:`PLOT_TIME_SHARE` of the time since the last
        drawing (or the start)."""
        self.pending = True
        if self._cost <= PLOT_TIME_SHARE * (time.perf_counter() - self._drawn_at):
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
