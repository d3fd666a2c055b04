"""Figures for masked autoencoders: the four reconstruction panels, loss curves, attention, probes.

Each function takes arrays computed by :mod:`crate_edu.evaluation.reconstruction`,
:mod:`crate_edu.train.mae` or :mod:`crate_edu.evaluation.probe` and returns the figure; nothing is
computed here beyond resizing for display.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

__all__ = [
    "plot_reconstruction_panels",
    "plot_mae_loss",
    "plot_attention_grid",
    "plot_probe_accuracies",
    "plot_probe_by_layer",
]

PANEL_TITLES = ("original", "masked input", "reconstruction", "reconstruction\n+ visible patches")


def plot_reconstruction_panels(panels, n: int | None = None, *, title: str | None = None, scale: float = 1.6):
    """Rows of the four MAE panels (original, masked, reconstruction, pasted) for ``n`` images.

    Args:
        panels: a :class:`crate_edu.evaluation.reconstruction.ReconstructionPanels`.
        n: how many images (rows); default all.
        title: figure title (default: says the mask ratio and the loss).
    """
    import matplotlib.pyplot as plt

    B = panels.original.shape[0]
    n = B if n is None else min(n, B)
    if n < 1:
        raise ValueError("nothing to plot: the panels hold no image")
    fig, axes = plt.subplots(n, 4, figsize=(4 * scale, n * scale + 0.6), squeeze=False)
    columns = [panels.original, panels.masked, panels.reconstruction, panels.pasted]
    H, W = panels.original.shape[1:3]
    for i in range(n):
        for j, imgs in enumerate(columns):
            ax = axes[i, j]
            ax.imshow(np.clip(imgs[i], 0, 1), extent=(0, W, H, 0))
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_title(PANEL_TITLES[j], fontsize=9)
        axes[i, 0].set_ylabel(f"loss {panels.per_image_loss[i]:.2f}", fontsize=8)
    ratio = float(panels.mask.mean())
    fig.suptitle(
        title or f"CRATE-MAE reconstructions ({ratio:.0%} of patches removed; MSE {panels.loss:.3f})",
        fontsize=10,
    )
    fig.supxlabel(f"each image {W} × {H} px", fontsize=8)
    fig.tight_layout()
    return fig


def plot_mae_loss(history: Sequence[Mapping], *, title: str = "CRATE-MAE pre-training"):
    """Training curve: ``history`` is a list of dicts with ``step`` and ``train_loss`` (and ``test_loss``).

    Works for per-epoch histories (:func:`crate_edu.train.mae.pretrain_mae`) and per-step lists.
    """
    import matplotlib.pyplot as plt

    if len(history) == 0:
        raise ValueError("the history is empty: train for at least one epoch or step")
    x = [h["step"] for h in history]
    fig, ax = plt.subplots(figsize=(5.5, 3.4))
    ax.plot(x, [h["train_loss"] for h in history], marker="o", ms=3, label="train (random masks)")
    if all("test_loss" in h for h in history):
        ax.plot(x, [h["test_loss"] for h in history], marker="s", ms=3, label="test (fixed masks)")
    ax.set_xlabel("optimiser step")
    ax.set_ylabel("masked-patch MSE (normalised pixels²)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    return fig


def plot_attention_grid(
    images: np.ndarray,
    maps: np.ndarray,
    *,
    title: str = "[CLS] → patch attention",
    row_labels: Sequence[str] | None = None,
    scale: float = 1.5,
):
    """Images (B, H, W, C) in [0, 1] beside per-head attention maps (B, h, g, g), one row per image.

    Each map is drawn over the image's extent (nearest upsampling); all maps share one colour scale.
    """
    import matplotlib.pyplot as plt

    if maps.ndim != 4 or images.ndim != 4 or images.shape[0] != maps.shape[0]:
        raise ValueError(
            "images must be (B, H, W, C) and maps (B, h, g, g) with the same B, "
            f"got {images.shape} and {maps.shape}"
        )
    B, h = maps.shape[:2]
    H, W = images.shape[1:3]
    fig, axes = plt.subplots(
        B, h + 1, figsize=((h + 1) * scale + 1.0, B * scale + 0.8), squeeze=False, layout="constrained"
    )
    vmax = float(np.max(maps))
    for i in range(B):
        axes[i, 0].imshow(np.clip(images[i], 0, 1), extent=(0, W, H, 0))
        if row_labels is not None:
            axes[i, 0].set_ylabel(row_labels[i], fontsize=8)
        for k in range(h):
            im = axes[i, k + 1].imshow(maps[i, k], cmap="inferno", extent=(0, W, H, 0), vmin=0, vmax=vmax)
            if i == 0:
                axes[i, k + 1].set_title(f"head {k}", fontsize=9)
        for ax in axes[i]:
            ax.set_xticks([])
            ax.set_yticks([])
    axes[0, 0].set_title("image", fontsize=9)
    fig.colorbar(im, ax=axes, shrink=0.8, label="attention probability")
    fig.suptitle(title, fontsize=10)
    fig.supxlabel(f"x (px, image {W} × {H})", fontsize=8)
    return fig


def plot_probe_accuracies(
    accuracies: Mapping[str, float],
    *,
    title: str = "Linear probe on frozen features",
    chance: float | None = 0.1,
):
    """Horizontal bars of test accuracies (fractions) by feature source."""
    import matplotlib.pyplot as plt

    if not accuracies:
        raise ValueError("no accuracies to plot")
    names = list(accuracies)
    vals = [100 * accuracies[k] for k in names]
    fig, ax = plt.subplots(figsize=(6, 0.5 * len(names) + 1.2))
    bars = ax.barh(names, vals, color="tab:blue")
    for bar, v in zip(bars, vals, strict=True):
        ax.text(v + 1, bar.get_y() + bar.get_height() / 2, f"{v:.1f} %", va="center", fontsize=8)
    if chance is not None:
        ax.axvline(100 * chance, color="grey", ls="--", lw=1, label=f"chance ({100 * chance:.0f} %)")
        ax.legend(loc="lower right", fontsize=8)
    ax.set_xlim(0, 105)
    ax.invert_yaxis()
    ax.set_xlabel("test accuracy (%)")
    ax.set_title(title)
    fig.tight_layout()
    return fig


def plot_probe_by_layer(
    curves: Mapping[str, Sequence[float]],
    *,
    title: str = "Linear probe on each layer's output",
    chance: float | None = 0.1,
):
    """Test accuracy (fractions) of a linear probe on each layer's pooled output, one line per model."""
    import matplotlib.pyplot as plt

    if not curves:
        raise ValueError("no curves to plot")
    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    for name, accs in curves.items():
        ax.plot(range(1, len(accs) + 1), [100 * a for a in accs], marker="o", label=name)
    if chance is not None:
        ax.axhline(100 * chance, color="grey", ls="--", lw=1, label=f"chance ({100 * chance:.0f} %)")
    depth = max(len(a) for a in curves.values())
    ax.set_xticks(range(1, depth + 1))
    ax.set_xlabel(r"layer $\ell$ (probe on its output $Z^{\ell+1}$)")
    ax.set_ylabel("test accuracy (%)")
    ax.set_ylim(0, 100)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig
