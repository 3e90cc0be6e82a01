"""Training curves from the files the training loop writes, and the charts of an evaluation (per-class AP,
precision-recall curves, confusion matrix, box uncertainty against localisation error).

Figures are drawn with matplotlib's object API on an Agg canvas, so nothing here touches ``pyplot``'s global state
or the user's chosen backend (safe in a headless training job and inside a notebook alike).
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

from dfine.engine.evaluator import EvalResult, format_ap
from dfine.engine.logger import read_metrics

# Loss keys are "loss_<term>" for the final decoder layer plus "loss_<term>_<branch>" for the auxiliary layers
# ("_aux_0"), denoising ("_dn_1", "_dn_pre"), the pre-box head ("_pre") and encoder proposals ("_enc_0").
_LOSS_KEY = re.compile(r"^loss_(?P<term>[A-Za-z0-9]+)(?P<branch>_.+)?$")
# Display order of the D-FINE terms; any other term found in the log follows alphabetically.
_TERM_ORDER = ("vfl", "focal", "bbox", "giou", "fgl", "ddf")
_TERM_TITLES = {"vfl": "VFL", "bbox": "L1 box", "giou": "GIoU", "fgl": "FGL", "ddf": "DDF", "focal": "focal"}
_AP_KEYS = ("AP", "AP50", "AP75")


def _number(value: Any) -> float:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else math.nan


def _loss_terms(train_keys: set[str]) -> list[str]:
    terms = {m["term"] for key in train_keys if (m := _LOSS_KEY.match(key))}
    known = [t for t in _TERM_ORDER if t in terms]
    return known + sorted(terms - set(known))


def _total_loss(train: dict[str, Any]) -> float:
    if "loss" in train:
        return _number(train["loss"])
    # Logs without the weighted total: the sum of every term is the closest stand-in.
    terms = [_number(v) for k, v in train.items() if _LOSS_KEY.match(k)]
    return sum(terms) if terms else math.nan


def _style_axis(ax: Any, title: str, epochs: list[int]) -> None:
    from matplotlib.ticker import MaxNLocator

    if epochs:
        # Without explicit limits a single epoch gets fractional ticks around it.
        ax.set_xlim(min(epochs) - 0.5, max(epochs) + 0.5)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))
    ax.set_title(title, fontsize=10)
    ax.set_xlabel("epoch", fontsize=8)
    ax.grid(True, alpha=0.3)
    ax.tick_params(labelsize=8)


def _distinct_sci_formatter() -> Any:
    """A tick formatter writing ``8e-04``-style labels with the fewest significant digits that keep the visible
    ticks apart. A constant learning rate gives a narrow log axis on which matplotlib places several ticks within
    one 1-2-5 step; a fixed ``%.0e`` labels them ``8e-04 8e-04 7e-04``."""
    from matplotlib.ticker import Formatter

    class DistinctSciFormatter(Formatter):
        digits = 1

        def set_locs(self, locs: Any) -> None:
            super().set_locs(locs)
            shown = list(locs)
            if self.axis is not None:
                low, high = sorted(self.axis.get_view_interval())
                shown = [v for v in locs if low <= v <= high]
            self.digits = next((d for d in range(1, 7) if len({f"{v:.{d - 1}e}" for v in shown}) == len(set(shown))),
                               7)

        def __call__(self, x: float, pos: int | None = None) -> str:
            return f"{x:.{self.digits - 1}e}"

    return DistinctSciFormatter()


def _new_figure(width: float, height: float) -> Any:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(figure)
    return figure


def plot_results(metrics_jsonl_path: str | Path, out_png: str | Path) -> Path:
    """Draw ``results.png``: total loss, each main loss term, learning rate and AP per epoch.

    Each loss panel shows the final-layer term (``loss_vfl``, ...) as a solid line and, dashed on a second axis,
    the sum of that term over every supervised output (auxiliary layers, denoising, pre-box head, encoder), which
    is what the optimiser actually sees. Epochs without evaluation are simply missing from the AP panel.

    Args:
        metrics_jsonl_path: ``metrics.jsonl`` written by :class:`~dfine.engine.logger.MetricsLogger` (or its folder).
        out_png: where to write the PNG; parent folders are created.

    Returns:
        The path written.
    """
    records = read_metrics(metrics_jsonl_path)
    # 1-based, as the console counts them ("epoch 3/20"); metrics.jsonl stores 0-based indices
    epochs = [int(r.get("epoch", i)) + 1 for i, r in enumerate(records)]
    trains = [r.get("train") or {} for r in records]
    evals = [r.get("eval") or {} for r in records]
    terms = _loss_terms(set().union(*(t.keys() for t in trains)) if trains else set())
    has_lr = any(r.get("lr") for r in records)

    panels = 1 + len(terms) + 1 + int(has_lr)
    columns = min(4, panels)
    rows = math.ceil(panels / columns)
    figure = _new_figure(3.4 * columns, 2.8 * rows)
    axes = [figure.add_subplot(rows, columns, i + 1) for i in range(panels)]
    marker = "o" if len(epochs) <= 30 else None  # markers make a 1-epoch run visible, but clutter a long one

    ax = axes[0]
    ax.plot(epochs, [_total_loss(t) for t in trains], marker=marker, markersize=3, color="C0")
    _style_axis(ax, "total loss", epochs)

    for ax, term in zip(axes[1:], terms):
        main = [_number(t.get(f"loss_{term}", math.nan)) for t in trains]
        summed = []
        for train in trains:
            values = [_number(v) for k, v in train.items() if (m := _LOSS_KEY.match(k)) and m["term"] == term]
            summed.append(sum(values) if values else math.nan)
        if all(math.isnan(m) for m in main):  # DDF: only the layers before the final (teacher) one have the term
            ax.plot(epochs, summed, marker=marker, markersize=3, color="C1", label="all outputs")
            ax.legend(fontsize=7, loc="upper right")
            _style_axis(ax, _TERM_TITLES.get(term, term), epochs)
            continue
        ax.plot(epochs, main, marker=marker, markersize=3, color="C0", label="final layer")
        if any(not math.isnan(s) and s != m for s, m in zip(summed, main)):
            twin = ax.twinx()
            twin.plot(epochs, summed, linestyle="--", color="C1", marker=marker, markersize=2, label="all outputs")
            twin.tick_params(labelsize=7, colors="C1")
            lines = ax.get_lines() + twin.get_lines()
            ax.legend(lines, [line.get_label() for line in lines], fontsize=7, loc="upper right")
        _style_axis(ax, _TERM_TITLES.get(term, term), epochs)

    next_axis = 1 + len(terms)
    if has_lr:
        ax = axes[next_axis]
        next_axis += 1
        groups = max(len(r.get("lr") or []) for r in records)
        names = records[-1].get("lr_groups") or []  # written by the trainer; older logs have no names
        lr_values: list[float] = []
        for group in range(groups):
            values = [_number((r.get("lr") or [])[group]) if group < len(r.get("lr") or []) else math.nan
                      for r in records]  # fmt: skip
            label = str(names[group]) if len(names) == groups else f"group {group}"
            ax.plot(epochs, values, marker=marker, markersize=3, label=label)
            lr_values.extend(v for v in values if not math.isnan(v))
        # Warm-up and cosine decay span orders of magnitude, and per-group rates differ by 10x: log scale shows both.
        if lr_values and min(lr_values) > 0:
            from matplotlib.ticker import LogLocator, NullFormatter

            ax.set_yscale("log")
            # ticks at 1, 2 and 5 per decade: a run whose rate spans less than a decade still gets labelled ticks
            ax.yaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
            ax.yaxis.set_major_formatter(_distinct_sci_formatter())
            ax.yaxis.set_minor_formatter(NullFormatter())
        if groups > 1:
            ax.legend(fontsize=7)
        _style_axis(ax, "learning rate", epochs)

    ax = axes[next_axis]
    drawn = False
    for key in _AP_KEYS:
        points = [(e, 100 * _number(ev.get(key))) for e, ev in zip(epochs, evals)]  # percent, as the console
        points = [(e, v) for e, v in points if not math.isnan(v)]
        if points:
            xs, ys = zip(*points)
            ax.plot(xs, ys, marker="o", markersize=3, label=key)
            drawn = True
    if drawn:
        ax.legend(fontsize=7, loc="lower right")
        ax.set_ylim(bottom=0)
    else:
        ax.text(0.5, 0.5, "no evaluation yet", ha="center", va="center", transform=ax.transAxes, color="gray")
    _style_axis(ax, "COCO AP (val), %", epochs)

    title = f"{len(records)} epoch{'s' if len(records) != 1 else ''}"
    best = [(_number(ev.get("AP")), e) for e, ev in zip(epochs, evals)]
    best = [b for b in best if not math.isnan(b[0])]
    if best:
        ap, epoch = max(best)
        title += f", best AP {format_ap(ap)} at epoch {epoch}"
    figure.suptitle(f"Training results ({title})", fontsize=11)
    figure.tight_layout()
    return _save(figure, out_png)


def plot_per_class_ap(
    result: EvalResult, out_png: str | Path, max_classes: int | None = None, title: str | None = None
) -> Path:
    """Horizontal bar chart of AP@[.5:.95] per class, best first; classes without ground truth are listed last.

    Args:
        result: an evaluation result with ``per_class`` filled.
        out_png: where to write the PNG.
        max_classes: keep only this many rows (the best ones), for data sets with hundreds of classes.
        title: figure title; defaults to one quoting the overall AP.

    Returns:
        The path written.
    """
    rows = sorted(result.per_class, key=lambda c: (math.isnan(c.ap), -(0.0 if math.isnan(c.ap) else c.ap)))
    if max_classes is not None:
        rows = rows[:max_classes]
    count = max(1, len(rows))
    figure = _new_figure(7.0, 1.2 + 0.28 * count)
    ax = figure.add_subplot(1, 1, 1)
    names = [f"{c.name} ({c.num_gt})" for c in rows]
    values = [0.0 if math.isnan(c.ap) else 100 * c.ap for c in rows]  # percent, as the console and table
    colors = ["lightgray" if math.isnan(c.ap) else "C0" for c in rows]
    positions = list(range(len(rows)))
    ax.barh(positions, values, color=colors)
    ax.set_yticks(positions, names, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlim(0, 100)
    for y, c in zip(positions, rows):
        label = "no GT" if math.isnan(c.ap) else f"{100 * c.ap:.1f}"
        ax.text(min(values[y], 85) + 1, y, label, va="center", fontsize=7)
    if not rows:
        ax.text(0.5, 0.5, "no classes", ha="center", va="center", transform=ax.transAxes, color="gray")
    overall = "n/a" if math.isnan(result.AP) else format_ap(result.AP)
    ax.set_title(title or f"AP@[.5:.95] per class (overall {overall}); (n) = ground-truth boxes", fontsize=10)
    ax.set_xlabel("AP, %", fontsize=8)
    ax.grid(True, axis="x", alpha=0.3)
    figure.tight_layout()
    return _save(figure, out_png)


def plot_pr_curves(result: EvalResult, out_png: str | Path, max_labelled: int = 10) -> Path:
    """Precision-recall curves at IoU 0.5: one per class (named in the legend when there are at most
    ``max_labelled`` classes, thin grey lines otherwise) and their mean, whose area is AP50.

    Args:
        result: an evaluation result with ``precision50`` (from :meth:`CocoEvaluator.compute`).
        out_png: where to write the PNG.
    """
    import numpy as np

    figure = _new_figure(6.4, 5.2)
    ax = figure.add_subplot(1, 1, 1)
    precision = result.precision50 if result.precision50 is not None else np.full((0, 101), np.nan)
    recall = np.linspace(0.0, 1.0, precision.shape[1])
    names = [c.name for c in result.per_class] if len(result.per_class) == len(precision) else [
        str(k) for k in range(len(precision))]
    has_gt = ~np.isnan(precision).all(axis=1)
    labelled = int(has_gt.sum()) <= max_labelled
    for k in np.flatnonzero(has_gt):
        curve = precision[k]
        if labelled:
            ax.plot(recall, curve, linewidth=1.0, label=f"{names[k]} {100 * np.nanmean(curve):.1f}")
        else:
            ax.plot(recall, curve, linewidth=0.6, color="0.75")
    if has_gt.any():
        mean = np.nanmean(precision[has_gt], axis=0)
        ax.plot(recall, mean, linewidth=2.5, color="C3",
                label=f"all classes {100 * float(np.mean(mean)):.1f} AP50")
        ax.legend(loc="lower left", fontsize=7, frameon=False)
    else:
        ax.text(0.5, 0.5, "no ground truth", ha="center", va="center", transform=ax.transAxes, color="gray")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("recall", fontsize=9)
    ax.set_ylabel("precision", fontsize=9)
    ax.set_title("Precision-recall at IoU 0.5 (legend: AP50, %)", fontsize=10)
    ax.grid(True, alpha=0.3)
    figure.tight_layout()
    return _save(figure, out_png)


def plot_confusion_matrix(matrix: Any, class_names: list[str], out_png: str | Path, *, score_threshold: float,
                          iou: float = 0.5, max_classes: int = 30) -> Path:
    """The confusion matrix of :func:`dfine.engine.analysis.confusion_matrix`, each row divided by its total (so a
    row reads "where this class's boxes went"), with the counts written in the cells that are not empty.

    Data sets with more than ``max_classes`` classes show the most frequent ones (by ground-truth boxes); the
    title says so.
    """
    import numpy as np

    matrix = np.asarray(matrix)
    num_classes = len(class_names)
    order = list(range(num_classes))
    shown_note = ""
    if num_classes > max_classes:
        totals = matrix[:num_classes].sum(axis=1)
        order = sorted(np.argsort(-totals, kind="stable")[:max_classes].tolist())
        shown_note = f" ({max_classes} most frequent of {num_classes} classes)"
    index = order + [num_classes]
    shown = matrix[np.ix_(index, index)].astype(np.float64)
    rows = shown.sum(axis=1, keepdims=True)
    fractions = np.divide(shown, rows, out=np.zeros_like(shown), where=rows > 0)
    labels = [class_names[k] for k in order]
    size = min(16.0, 3.0 + 0.42 * len(index))
    figure = _new_figure(size + 1.2, size)
    ax = figure.add_subplot(1, 1, 1)
    image = ax.imshow(fractions, cmap="Blues", vmin=0.0, vmax=1.0)
    figure.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
    positions = list(range(len(index)))
    ax.set_xticks(positions, labels + ["missed"], rotation=90, fontsize=7)
    ax.set_yticks(positions, labels + ["background"], fontsize=7)
    ax.set_xlabel("predicted", fontsize=9)
    ax.set_ylabel("true", fontsize=9)
    if len(index) <= 40:
        for r in positions:
            for c in positions:
                if shown[r, c]:
                    ax.text(c, r, str(int(shown[r, c])), ha="center", va="center", fontsize=6,
                            color="white" if fractions[r, c] > 0.5 else "black")
    ax.set_title(f"Confusion matrix at score >= {score_threshold:g}, IoU >= {iou:g}{shown_note}\n"
                 "rows: where each class's boxes went; background row: false positives", fontsize=9)
    figure.tight_layout()
    return _save(figure, out_png)


def plot_uncertainty_error(uncertainty: Any, error: Any, rho: float, out_png: str | Path) -> Path:
    """Each matched detection's box uncertainty against its localisation error ``1 - IoU``
    (:mod:`dfine.engine.localization`), with the median error of each tenth of the uncertainties, and Spearman's ρ
    in the title."""
    import numpy as np

    uncertainty, error = np.asarray(uncertainty, dtype=np.float64), np.asarray(error, dtype=np.float64)
    figure = _new_figure(6.4, 4.8)
    ax = figure.add_subplot(1, 1, 1)
    positive = uncertainty > 0
    if positive.any():
        ax.scatter(uncertainty[positive], error[positive], s=6, alpha=0.35, color="#1f77b4", linewidths=0)
        ax.set_xscale("log")
        if positive.sum() >= 20:  # the trend: median error per decile of uncertainty
            order = np.argsort(uncertainty[positive])
            chunks = np.array_split(order, 10)
            ax.plot([np.median(uncertainty[positive][c]) for c in chunks],
                    [np.median(error[positive][c]) for c in chunks], color="#d62728", marker="o", markersize=4,
                    label="median per tenth")
            ax.legend(fontsize=8, loc="upper left")
    else:
        ax.text(0.5, 0.5, "no matched detection", ha="center", va="center", transform=ax.transAxes)
    ax.set_xlabel("box uncertainty (mean edge σ / box side)", fontsize=9)
    ax.set_ylabel("localisation error (1 - IoU with the matched box)", fontsize=9)
    ax.set_ylim(0, 1)
    ax.grid(True, alpha=0.3)
    shown = "n/a" if not np.isfinite(rho) else f"{rho:.3f}"
    ax.set_title(f"Box uncertainty vs localisation error: Spearman ρ = {shown} ({len(error)} detections)",
                 fontsize=9)
    figure.tight_layout()
    return _save(figure, out_png)


def _save(figure: Any, out_png: str | Path) -> Path:
    path = Path(out_png)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, format="png")  # explicit: callers may write to a temporary name without the suffix
    return path

