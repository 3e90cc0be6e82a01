"""results.png is redrawn only while that stays a small share of the training time, and always at the end."""

from __future__ import annotations

from pathlib import Path

import pytest

from dfine.engine import plots, results_plot
from dfine.engine.results_plot import PLOT_TIME_SHARE, ResultsPlot


class _Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_redrawn_when_cheap_enough_and_at_the_end(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    clock = _Clock()
    drawings: list[float] = []

    def draw(metrics: Path, out: Path) -> Path:
        drawings.append(clock.now)
        clock.now += 2.0  # a drawing takes 2 s
        return out

    monkeypatch.setattr(results_plot.time, "perf_counter", clock)
    monkeypatch.setattr(plots, "plot_results", draw)
    plot = ResultsPlot(tmp_path / "metrics.jsonl", tmp_path / "results.png")
    plot.update()  # the first epoch is always drawn
    assert drawings == [0.0] and not plot.pending
    wait = 2.0 / PLOT_TIME_SHARE  # the training time after which a 2-s drawing is within the share
    clock.now += wait / 2
    plot.update()  # too soon: left for later
    assert len(drawings) == 1 and plot.pending
    clock.now += wait / 2
    plot.update()
    assert len(drawings) == 2 and not plot.pending
    clock.now += 1.0
    plot.update()
    plot.flush()  # the end of the run draws the epochs left out
    assert len(drawings) == 3 and not plot.pending
    plot.flush()  # nothing new: no drawing
    assert len(drawings) == 3


def test_a_failed_drawing_is_a_warning(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                       caplog: pytest.LogCaptureFixture) -> None:
    def broken(metrics: Path, out: Path) -> Path:
        raise ValueError("no font")

    monkeypatch.setattr(plots, "plot_results", broken)
    plot = ResultsPlot(tmp_path / "metrics.jsonl", tmp_path / "results.png")
    plot.update()
    assert "could not draw results.png: no font" in caplog.text
