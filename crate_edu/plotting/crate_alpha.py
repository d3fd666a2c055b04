"""Figures of notebook 09: the CRATE-α ablation and the published scaling table.

Each function takes rows computed by :mod:`crate_edu.experiments.crate_alpha_ablation` (``summarize``,
``published_scaling_table``) or the runs stored in ``benchmarks/results/crate_alpha_ablation.json``,
and returns the figure.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure

__all__ = ["plot_ablation", "plot_scaling"]


def plot_ablation(
    rows: Sequence[Mapping[str, Any]],
    runs: Sequence[Mapping[str, Any]],
    title: str = "CRATE-α ablation",
) -> Figure:
    """Three panels: test accuracy per variant (mean, and each seed as a dot), the non-zero fraction
    of the codes per layer (mean over seeds), and the non-zeros per token against the code width.

    Args:
        rows: ``summarize(runs)``: one row per variant, in ablation order.
        runs: the runs (``AblationRun.to_dict()``), for the per-seed dots and per-layer curves.
        title: the figure title.
    """
    names = [r["variant"] for r in rows]
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    _accuracy_panel(axes[0], names, rows, runs)
    _sparsity_panel(axes[1], names, runs)
    _active_panel(axes[2], names, rows)
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def _accuracy_panel(ax, names: list[str], rows, runs) -> None:
    """Bars: test accuracy per variant, mean over seeds; dots: each seed."""
    x = np.arange(len(names))
    acc = np.array([100 * r["test_acc_mean"] for r in rows])
    ax.bar(x, acc, color=[f"C{i}" for i in range(len(names))], alpha=0.7)
    for i, name in enumerate(names):
        seeds = [100 * r["test_acc"] for r in runs if r["variant"] == name]
        ax.plot([i] * len(seeds), seeds, "k.", ms=6, label="one seed" if i == 0 else None)
        ax.text(i, acc[i] + 1, f"{acc[i]:.1f}", ha="center", va="bottom", fontsize=9)
    ax.set_xticks(x, names, rotation=15)
    ax.set_ylabel("test accuracy (%)")
    ax.set_ylim(0, 110)
    ax.set_title("accuracy (bar: mean over seeds)")
    ax.legend(loc="upper center", fontsize=8)
    ax.grid(alpha=0.3, axis="y")


def _sparsity_panel(ax, names: list[str], runs) -> None:
    """Per layer, the fraction of non-zero code entries, trained (solid) and at initialisation (dotted)."""
    for i, name in enumerate(names):
        per_layer = np.array([r["nonzero"] for r in runs if r["variant"] == name])  # (seeds, L)
        init = np.array([r["nonzero_init"] for r in runs if r["variant"] == name])
        layers = np.arange(1, per_layer.shape[1] + 1)
        ax.plot(layers, per_layer.mean(0), "o-", color=f"C{i}", label=f"{name}, trained")
        ax.plot(layers, init.mean(0), ":", color=f"C{i}", alpha=0.7)
    ax.set_xlabel("layer ℓ")
    ax.set_xticks(layers)
    ax.set_ylabel("fraction of non-zero code entries")
    ax.set_ylim(0, 1)
    ax.set_title("sparsity of the codes (dotted: at initialisation)")
    ax.legend(fontsize=8, loc="lower left")
    ax.grid(alpha=0.3)


def _active_panel(ax, names: list[str], rows) -> None:
    """Bars: the code width beside the non-zeros per token, per variant."""
    x = np.arange(len(names))
    active = np.array([r["active_mean"] for r in rows])
    width = np.array([r["code_width"] for r in rows])
    ax.bar(x - 0.2, width, 0.4, color="0.8", label="code width (d or r·d)")
    ax.bar(x + 0.2, active, 0.4, color=[f"C{i}" for i in range(len(names))], alpha=0.8, label="non-zeros")
    for i in range(len(names)):
        ax.text(x[i] + 0.2, active[i] + 5, f"{active[i]:.0f}", ha="center", va="bottom", fontsize=9)
    ax.set_xticks(x, names, rotation=15)
    ax.set_ylabel("code entries per token")
    ax.set_ylim(0, 1.25 * width.max())
    ax.set_title("non-zero code entries per token (mean over layers)")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3, axis="y")


def plot_scaling(
    alpha_rows: Sequence[Mapping[str, Any]],
    crate_rows: Sequence[Mapping[str, Any]] = (),
    title: str = "Published ImageNet-1K top-1 against compute",
) -> Figure:
    """Top-1 against GMACs per image (log scale), one line per model width, labelled by patch size.

    Args:
        alpha_rows: ``published_scaling_table()`` rows (``model``, ``gmacs_224``, ``top1``, ...).
        crate_rows: optional CRATE rows with the same keys (trained on ImageNet-1K only).
        title: the figure title.
    """
    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    groups: dict[str, list[Mapping[str, Any]]] = {}
    for r in alpha_rows:
        groups.setdefault(r["model"].split("/")[0], []).append(r)
    for i, (name, rs) in enumerate(groups.items()):
        rs = sorted(rs, key=lambda r: r["gmacs_224"])
        ax.plot([r["gmacs_224"] for r in rs], [r["top1"] for r in rs], "o-", color=f"C{i}", label=name)
        for r in rs:
            ax.annotate(
                f"/{r['patch_size']}",
                (r["gmacs_224"], r["top1"]),
                textcoords="offset points",
                xytext=(5, -12),
                fontsize=9,
            )
    if crate_rows:
        rs = sorted(crate_rows, key=lambda r: r["gmacs_224"])
        ax.plot(
            [r["gmacs_224"] for r in rs],
            [r["top1"] for r in rs],
            "s--",
            color="0.4",
            label="CRATE T/S/B/L /16 (ImageNet-1K only)",
        )
    ax.set_xscale("log")
    ax.set_xlabel("multiply-accumulates per 224×224 image (GMACs, computed here; log scale)")
    ax.set_ylabel("ImageNet-1K top-1 (%)")
    ax.set_title(title)
    ax.legend(fontsize=9)
    ax.grid(alpha=0.3, which="both")
    fig.tight_layout()
    return fig
