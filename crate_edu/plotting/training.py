"""Figures of training runs: loss/accuracy curves, confusion matrices, per-class accuracy, throughput.

Each function takes numbers computed elsewhere (a run's ``history``: the per-epoch dicts of
:func:`crate_edu.train.fit`; tensors from :mod:`crate_edu.evaluation.metrics`) and returns the figure.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

__all__ = ["plot_curves", "plot_confusion_matrix", "plot_per_class_accuracy", "plot_throughput"]

History = Sequence[Mapping[str, Any]]


def _as_runs(histories: History | Mapping[str, History]) -> dict[str, History]:
    if isinstance(histories, Mapping):
        return {str(k): v for k, v in histories.items()}
    return {"": histories}


def plot_curves(
    histories: History | Mapping[str, History],
    *,
    title: str = "Training curves",
    total_epochs: int | None = None,
    fig: Figure | None = None,
) -> Figure:
    """Loss (left) and accuracy in % (right) per epoch; solid = test, dashed = train.

    Args:
        histories: one run's per-epoch records (keys ``epoch``, ``train_loss``, ``train_acc``,
            ``test_loss``, ``test_acc``), or several runs by label (one colour each).
        title: the figure title.
        total_epochs: fix the x axis to ``1..total_epochs`` (so a live plot does not rescale).
        fig: draw into this figure (cleared first) instead of a new one.
    """
    runs = _as_runs(histories)
    if fig is None:
        fig = plt.figure(figsize=(11, 3.8))
    fig.clear()
    ax_loss, ax_acc = fig.subplots(1, 2)
    for i, (label, hist) in enumerate(runs.items()):
        if not hist:
            continue
        ep = [h["epoch"] for h in hist]
        name = f"{label} " if label else ""
        for key, style, part in (("test", "o-", "test"), ("train", "s--", "train")):
            ax_loss.plot(
                ep, [h[f"{key}_loss"] for h in hist], style, color=f"C{i}", ms=3, label=f"{name}{part}"
            )
            ax_acc.plot(
                ep, [100 * h[f"{key}_acc"] for h in hist], style, color=f"C{i}", ms=3, label=f"{name}{part}"
            )
    ax_loss.set_ylabel("cross-entropy (nats per image)")
    ax_loss.set_title("Loss (train: with label smoothing, if any)", fontsize=10)
    ax_acc.set_ylabel("accuracy (%)")
    ax_acc.set_title("Accuracy", fontsize=10)
    for ax in (ax_loss, ax_acc):
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        if total_epochs is not None:
            ax.set_xlim(0.5, total_epochs + 0.5)
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def plot_confusion_matrix(
    cm: torch.Tensor | np.ndarray,
    classes: Sequence[str] | None = None,
    *,
    normalize: bool = True,
    title: str = "Confusion matrix",
) -> Figure:
    """The matrix ``cm[i, j]`` (true class ``i`` predicted as ``j``) as an image.

    With ``normalize`` each row is divided by its class count, so the diagonal is the per-class
    accuracy (shown in %); otherwise raw counts. Cells are annotated for up to 20 classes.
    """
    m = np.asarray(cm, dtype=np.float64)
    if m.ndim != 2 or m.shape[0] != m.shape[1]:
        raise ValueError(f"a confusion matrix is square (C, C), got shape {m.shape}")
    C = m.shape[0]
    if classes is not None and len(classes) != C:
        raise ValueError(f"{len(classes)} class names for a {C}x{C} matrix; pass {C} names")
    if normalize:
        m = 100 * m / np.maximum(m.sum(axis=1, keepdims=True), 1)
    side = min(10.0, 2.5 + 0.45 * C)
    fig, ax = plt.subplots(figsize=(side + 1.2, side))
    im = ax.imshow(m, cmap="Blues", vmin=0, vmax=100 if normalize else None)
    fig.colorbar(im, ax=ax, fraction=0.046, label="% of the true class" if normalize else "images")
    if C <= 20:
        names = list(classes) if classes is not None else [str(k) for k in range(C)]
        ax.set_xticks(range(C), names, rotation=45 if max(map(len, names)) > 2 else 0, ha="right", fontsize=8)
        ax.set_yticks(range(C), names, fontsize=8)
        for i in range(C):
            for j in range(C):
                if m[i, j] > 0:
                    text = f"{m[i, j]:.0f}"
                    ax.text(
                        j, i, text, ha="center", va="center", fontsize=7, color="w" if m[i, j] > 50 else "k"
                    )
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    ax.set_title(title)
    fig.tight_layout()
    return fig


def plot_per_class_accuracy(
    accuracies: torch.Tensor | np.ndarray | Mapping[str, torch.Tensor | np.ndarray],
    classes: Sequence[str] | None = None,
    *,
    title: str = "Accuracy per class",
) -> Figure:
    """Bars of the per-class accuracy in %; several models by label are grouped side by side."""
    runs = dict(accuracies) if isinstance(accuracies, Mapping) else {"": accuracies}
    arrays = {k: 100 * np.asarray(v, dtype=np.float64) for k, v in runs.items()}
    C = {a.shape for a in arrays.values()}
    if len(C) != 1 or len(next(iter(C))) != 1:
        raise ValueError(f"per-class accuracies must be 1-D arrays of one length, got shapes {sorted(C)}")
    n = next(iter(C))[0]
    names = list(classes) if classes is not None else [str(k) for k in range(n)]
    if len(names) != n:
        raise ValueError(f"{len(names)} class names for {n} accuracies; pass {n} names")
    width = 0.8 / len(arrays)
    fig, ax = plt.subplots(figsize=(max(6.0, 0.55 * n + 2), 3.6))
    for i, (label, a) in enumerate(arrays.items()):
        x = np.arange(n) + (i - (len(arrays) - 1) / 2) * width
        mean = np.nanmean(a)
        ax.bar(
            x,
            a,
            width=width,
            color=f"C{i}",
            label=f"{label} (mean over classes {mean:.1f} %)" if label else None,
        )
    ax.set_xticks(range(n), names, rotation=45 if max(map(len, names)) > 2 else 0, ha="right", fontsize=8)
    ax.set_ylim(0, 100)
    ax.set_xlabel("true class")
    ax.set_ylabel("accuracy (%)")
    ax.set_title(title)
    ax.grid(axis="y", alpha=0.3)
    if any(arrays):
        handles = ax.get_legend_handles_labels()[0]
        if handles:
            ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    return fig


def plot_throughput(
    rows: Mapping[str, float], *, title: str = "Throughput", unit: str = "images/s"
) -> Figure:
    """Horizontal bars of measured speeds, one per label (e.g. ``'train, fp32'``), value printed."""
    if not rows:
        raise ValueError("no throughput figures to plot")
    labels, values = list(rows), [float(v) for v in rows.values()]
    fig, ax = plt.subplots(figsize=(7.5, 0.5 * len(rows) + 1.4))
    ax.barh(labels, values, color=[f"C{i}" for i in range(len(rows))])
    for i, v in enumerate(values):
        ax.text(v, i, f" {v:.1f}", va="center", fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel(unit)
    ax.set_xlim(0, 1.2 * max(values))
    ax.set_title(title)
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    return fig
