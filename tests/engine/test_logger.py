"""Running averages, metrics.jsonl / TensorBoard output, and the plots drawn from them."""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path

import pytest
import torch

import dfine.engine.logger as logger_module
import dfine.engine.plots as plots_module
from dfine.engine.evaluator import ClassAP, EvalResult
from dfine.engine.logger import MetricMeter, MetricsLogger, SmoothedValue, read_metrics
from dfine.engine.plots import plot_per_class_ap, plot_results

SUFFIXES = ("", "_aux_0", "_aux_1", "_pre", "_enc_0", "_dn_0", "_dn_1", "_dn_pre")
TERMS = ("vfl", "bbox", "giou", "fgl", "ddf")


def loss_dict(epoch: int) -> dict[str, float]:
    losses = {f"loss_{t}{s}": (i + 1) * 0.1 * math.exp(-epoch / 5) for i, t in enumerate(TERMS) for s in SUFFIXES}
    losses["loss"] = sum(losses.values())
    return losses


def strict_json(line: str) -> dict:
    def reject(constant: str) -> None:
        raise ValueError(f"non-standard JSON constant {constant}")

    return json.loads(line, parse_constant=reject)


def test_smoothed_value() -> None:
    value = SmoothedValue(window_size=3)
    assert math.isnan(value.global_avg) and math.isnan(value.median)
    for v, n in ((1.0, 1), (2.0, 1), (10.0, 2), (torch.tensor(3.0), 4)):
        value.update(v, n)
    assert value.value == 3.0
    assert value.median == 3.0  # window holds 2, 10, 3
    assert value.avg == pytest.approx(5.0)
    assert value.global_avg == pytest.approx((1 + 2 + 20 + 12) / 8)
    value.synchronize()  # a no-op in one process
    assert value.count == 8


def test_metric_meter() -> None:
    meter = MetricMeter(window_size=5)
    meter.update({"loss": torch.tensor(4.0), "loss_vfl": 1.0})
    meter.update({"loss": 2.0, "loss_vfl": 3.0, "loss_ddf": 0.5})
    assert meter.averages() == {"loss": 3.0, "loss_vfl": 2.0, "loss_ddf": 0.5}
    assert meter.postfix(["loss", "missing"], fmt="{:.1f}") == {"loss": "3.0"}
    assert "loss_ddf" in meter and meter["loss"].count == 2
    assert "loss_vfl" in str(meter)


def test_metrics_jsonl_and_tensorboard(tmp_path: Path) -> None:
    with MetricsLogger(tmp_path / "run") as metrics:
        for epoch in range(3):
            meter = MetricMeter()
            meter.update({k: torch.tensor(v) for k, v in loss_dict(epoch).items()})
            eval_metrics = {"AP": 0.1 * epoch, "AP50": 0.2 * epoch, "APs": math.nan, "per_class_AP": {"a": None}}
            metrics.log_epoch(epoch, meter.averages(), eval_metrics, lr=[1e-5, 1e-4], epoch_time=1.5,
                              extra={"stage": 1})  # fmt: skip
            metrics.log_scalars(epoch * 10, {"loss": 1.0}, prefix="iter/")
        tensorboard_dir = metrics.tensorboard_dir

    lines = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 3
    records = [strict_json(line) for line in lines]
    assert [r["epoch"] for r in records] == [0, 1, 2]
    assert records[2]["lr"] == [1e-5, 1e-4] and records[2]["time"] == 1.5 and records[2]["stage"] == 1
    assert records[1]["train"]["loss_vfl_dn_1"] == pytest.approx(loss_dict(1)["loss_vfl_dn_1"], rel=1e-6)
    assert records[1]["eval"]["AP"] == pytest.approx(0.1) and records[1]["eval"]["APs"] is None
    assert read_metrics(tmp_path / "run") == records

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    assert tensorboard_dir is not None and any(tensorboard_dir.glob("events.out.tfevents.*"))
    events = EventAccumulator(str(tensorboard_dir))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    assert {"train/loss", "train/loss_ddf", "eval/AP", "lr/group_1", "time/epoch_seconds", "iter/loss"} <= tags
    assert "eval/APs" not in tags  # NaN is not plotted
    assert [e.value for e in events.Scalars("eval/AP50")] == pytest.approx([0.0, 0.2, 0.4])
    # epochs count from 1 on TensorBoard's axis, as on the console and in results.png
    assert [e.step for e in events.Scalars("eval/AP50")] == [1, 2, 3]


def test_tensorboard_names_the_learning_rate_groups(tmp_path: Path) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    with MetricsLogger(tmp_path / "run") as metrics:
        metrics.log_epoch(0, {"loss": 1.0}, lr=[1e-5, 1e-4, 2e-4],
                          extra={"lr_groups": ["backbone", "encoder"]})  # a third group without a name
        tensorboard_dir = metrics.tensorboard_dir
    events = EventAccumulator(str(tensorboard_dir))
    events.Reload()
    lr_tags = {tag for tag in events.Tags()["scalars"] if tag.startswith("lr/")}
    assert lr_tags == {"lr/backbone", "lr/encoder", "lr/group_2"}
    assert events.Scalars("lr/encoder")[0].value == pytest.approx(1e-4)


def test_tensorboard_off_or_missing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog) -> None:
    with MetricsLogger(tmp_path / "off", use_tensorboard=False) as metrics:
        metrics.log_epoch(0, {"loss": 1.0})
        assert metrics.tensorboard_dir is None
    assert not (tmp_path / "off" / "tensorboard").exists()

    monkeypatch.setattr(logger_module, "_tensorboard_available", lambda: False)
    with caplog.at_level(logging.INFO, logger=logger_module.__name__):
        with MetricsLogger(tmp_path / "missing") as metrics:
            metrics.log_epoch(0, {"loss": 1.0}, lr=1e-4)
    assert sum("tensorboard is not installed" in r.message for r in caplog.records) == 1
    assert read_metrics(tmp_path / "missing")[0]["lr"] == [1e-4]


def test_only_the_main_process_writes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(logger_module, "is_main_process", lambda: False)
    with MetricsLogger(tmp_path / "rank1") as metrics:
        assert metrics.log_epoch(0, {"loss": 1.0}) == {}
    assert not (tmp_path / "rank1").exists()


def test_read_metrics_resumed_and_truncated(tmp_path: Path, caplog) -> None:
    path = tmp_path / "metrics.jsonl"
    lines = [{"epoch": 0, "train": {"loss": 3.0}}, {"epoch": 1, "train": {"loss": 2.0}},
             {"epoch": 1, "train": {"loss": 1.9}}, {"epoch": 2, "train": {"loss": 1.5}}]  # fmt: skip
    path.write_text("".join(json.dumps(r) + "\n" for r in lines) + '{"epoch": 3, "tra')
    with caplog.at_level(logging.WARNING):
        latest = read_metrics(path)
    assert [r["train"]["loss"] for r in latest] == [3.0, 1.9, 1.5]
    assert "not valid JSON" in caplog.text
    assert len(read_metrics(path, latest_per_epoch=False)) == 4


def test_a_record_after_a_cut_off_line_is_kept(tmp_path: Path) -> None:
    """A run killed while writing a record leaves half a line; the resumed run's record of that epoch must not join
    it (read_metrics would skip both)."""
    (tmp_path / "metrics.jsonl").write_text(json.dumps({"epoch": 0, "train": {"loss": 3.0}}) + '\n{"epoch": 1, "tra')
    with MetricsLogger(tmp_path, use_tensorboard=False) as metrics:
        metrics.log_epoch(1, {"loss": 2.0})
    assert [(r["epoch"], r["train"]["loss"]) for r in read_metrics(tmp_path)] == [(0, 3.0), (1, 2.0)]


def assert_png(path: Path, min_bytes: int = 8_000, max_bytes: int = 3_000_000) -> None:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert min_bytes < len(data) < max_bytes, len(data)


def write_log(path: Path, epochs: int, eval_every: int | None) -> Path:
    with MetricsLogger(path, use_tensorboard=False) as metrics:
        for epoch in range(epochs):
            evaluated = eval_every is not None and epoch % eval_every == 0
            eval_metrics = {"AP": 0.05 * epoch, "AP50": 0.08 * epoch, "AP75": 0.06 * epoch} if evaluated else None
            metrics.log_epoch(epoch, loss_dict(epoch), eval_metrics, lr=[2e-5, 2e-4], epoch_time=10.0)
    return path / "metrics.jsonl"


@pytest.mark.parametrize(("epochs", "eval_every"), [(12, 2), (1, 1), (3, None)])
def test_plot_results(tmp_path: Path, epochs: int, eval_every: int | None) -> None:
    log = write_log(tmp_path / "run", epochs, eval_every)
    out = plot_results(log, tmp_path / "plots" / "results.png")
    assert out == tmp_path / "plots" / "results.png"
    assert_png(out, min_bytes=30_000)


def test_plot_results_without_suffixed_terms_or_total(tmp_path: Path) -> None:
    path = tmp_path / "metrics.jsonl"
    path.write_text(json.dumps({"epoch": 0, "train": {"loss_vfl": 1.0, "loss_giou": 0.5}}) + "\n")
    assert_png(plot_results(tmp_path, tmp_path / "results.png"))


@pytest.mark.parametrize("rates", [[7.2e-4, 7.6e-4, 8e-4, 8e-4], [7.9e-4, 8e-4, 8e-4], [1e-5, 4e-4, 8e-4]])
def test_learning_rate_ticks_have_distinct_labels(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                   rates: list[float]) -> None:
    # a rate that hardly changes gives matplotlib ticks closer than one significant digit tells apart
    labels: list[str] = []
    save = plots_module._save

    def capture(figure, out_png):
        figure.canvas.draw()
        (ax,) = [a for a in figure.axes if a.get_title() == "learning rate"]
        low, high = ax.get_ylim()
        labels.extend(t.get_text() for t in ax.get_yticklabels() if low <= t.get_position()[1] <= high)
        return save(figure, out_png)

    monkeypatch.setattr(plots_module, "_save", capture)
    with MetricsLogger(tmp_path, use_tensorboard=False) as metrics:
        for epoch, rate in enumerate(rates):
            metrics.log_epoch(epoch, {"loss": 1.0}, lr=[rate])
    plot_results(tmp_path, tmp_path / "results.png")
    assert len(labels) >= 2 and all(labels), labels
    assert len(set(labels)) == len(labels), labels


def capture_legends(monkeypatch: pytest.MonkeyPatch) -> dict[str, list[str]]:
    """Panel title -> legend entries of the next results.png drawn (filled in when the figure is saved)."""
    legends: dict[str, list[str]] = {}
    save = plots_module._save

    def capture(figure, out_png):
        for ax in figure.axes:
            if ax.get_legend() is not None:
                legends[ax.get_title()] = [t.get_text() for t in ax.get_legend().get_texts()]
        return save(figure, out_png)

    monkeypatch.setattr(plots_module, "_save", capture)
    return legends


def test_a_term_without_a_final_layer_value_has_no_empty_legend_entry(tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    # DDF distils the earlier layers from the final one: the final layer itself never has the term
    legends = capture_legends(monkeypatch)
    path = tmp_path / "metrics.jsonl"
    train = {"loss_vfl": 1.0, "loss_vfl_aux_0": 1.2, "loss_ddf_aux_0": 0.3, "loss_ddf_aux_1": 0.2}
    path.write_text("".join(json.dumps({"epoch": e, "train": train}) + "\n" for e in range(3)))
    plot_results(tmp_path, tmp_path / "results.png")
    ddf = next(title for title in legends if "DDF" in title or "ddf" in title)
    assert legends[ddf] == ["all outputs"]
    vfl = next(title for title in legends if title != ddf)
    assert legends[vfl] == ["final layer", "all outputs"]


@pytest.mark.parametrize(("names", "expected"), [(["backbone", "other"], ["backbone", "other"]),
                                                  (None, ["group 0", "group 1"])])
def test_learning_rate_legend_names_the_groups(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, names,
                                                expected: list[str]) -> None:
    legends = capture_legends(monkeypatch)
    with MetricsLogger(tmp_path, use_tensorboard=False) as metrics:
        for epoch in range(2):
            metrics.log_epoch(epoch, {"loss": 1.0}, lr=[1e-5, 1e-4], extra={"lr_groups": names} if names else None)
    plot_results(tmp_path, tmp_path / "results.png")
    assert legends["learning rate"] == expected


def test_plot_per_class_ap(tmp_path: Path) -> None:
    rows = [ClassAP(i, f"class_{i}", math.nan if i == 3 else i / 10, 0.5, 0 if i == 3 else i + 1) for i in range(8)]
    result = EvalResult(*([0.3] * 14), per_class=rows)
    assert_png(plot_per_class_ap(result, tmp_path / "per_class.png"))
    assert_png(plot_per_class_ap(EvalResult(*([math.nan] * 14)), tmp_path / "empty.png"), min_bytes=2_000)


def test_ap_is_drawn_in_percent_as_the_console_prints_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    drawn: dict[str, object] = {}
    save = plots_module._save

    def capture(figure, out_png):
        (ax,) = [a for a in figure.axes if a.get_title().startswith("COCO AP")]
        drawn["AP"] = list(next(line for line in ax.get_lines() if line.get_label() == "AP").get_ydata())
        drawn["title"] = figure._suptitle.get_text()
        return save(figure, out_png)

    monkeypatch.setattr(plots_module, "_save", capture)
    with MetricsLogger(tmp_path, use_tensorboard=False) as metrics:
        for epoch, ap in enumerate([0.25, 0.4123]):
            metrics.log_epoch(epoch, {"loss": 1.0}, {"AP": ap, "AP50": 0.6, "AP75": 0.3})
    plot_results(tmp_path, tmp_path / "results.png")
    assert drawn["AP"] == pytest.approx([25.0, 41.23])
    assert drawn["title"].endswith("best AP 41.2% at epoch 2)")
