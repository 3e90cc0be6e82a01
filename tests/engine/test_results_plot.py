"""results.png is redrawn only while that stays a small share of the training time, and always at the end."""

from __future__ import annotations

from pathlib import Path

import pytest

from dfine.engine import plots, results_plot
from dfine.engine.results_plot import FIRST_DRAWING_SECONDS, PLOT_TIME_SHARE, ResultsPlot


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
    plot = ResultsPlot(tmp_path / "metrics.jsonl", tmp_path / "results.png")  # the run starts at 0
    first_wait = FIRST_DRAWING_SECONDS / PLOT_TIME_SHARE
    clock.now = first_wait / 2
    plot.update()  # a short first epoch: drawing now would cost more than the share of the time trained so far
    assert drawings == [] and plot.pending
    clock.now = first_wait
    plot.update()
    assert drawings == [first_wait] and not plot.pending
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


def test_a_long_first_epoch_is_drawn_at_its_end(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    clock = _Clock()
    drawings: list[float] = []
    monkeypatch.setattr(results_plot.time, "perf_counter", clock)
    monkeypatch.setattr(plots, "plot_results", lambda metrics, out: drawings.append(clock.now))
    plot = ResultsPlot(tmp_path / "metrics.jsonl", tmp_path / "results.png")
    clock.now = 3600.0  # a COCO-sized epoch
    plot.update()
    assert drawings == [3600.0]


def test_a_failed_drawing_is_a_warning(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                       caplog: pytest.LogCaptureFixture) -> None:
    def broken(metrics: Path, out: Path) -> Path:
        raise ValueError("no font")

    monkeypatch.setattr(plots, "plot_results", broken)
    plot = ResultsPlot(tmp_path / "metrics.jsonl", tmp_path / "results.png")
    plot.flush()  # nothing logged yet: nothing drawn
    plot.update()
    plot.flush()
    assert "could not draw results.png: no font" in caplog.text
