"""Pictures of emergent segmentation: attention maps per head, mass-threshold masks against the
ground truth, per-layer/per-head IoU grids, PCA maps and normalised-cut foregrounds.

Every function takes arrays computed by :mod:`crate_edu.evaluation.segmentation` and returns the figure.
Images are (B, 3, H, W), uint8 in 0..255 or float in [0, 1] (un-normalised: what a person sees).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.figure import Figure
from torch import Tensor

from crate_edu.evaluation.segmentation import NCutResult, PCAMaps, upsample_maps

__all__ = [
    "to_display",
    "mask_overlay",
    "plot_head_maps",
    "plot_head_masks",
    "plot_iou_grid",
    "plot_fraction_sweep",
    "plot_pca_maps",
    "plot_ncut",
]


def to_display(images: Tensor) -> np.ndarray:
    """(B, 3, H, W) uint8 or float in [0, 1] -> float numpy (B, H, W, 3) in [0, 1]."""
    x = torch.as_tensor(images)
    if x.ndim != 4 or x.shape[1] not in (1, 3):
        raise ValueError(f"images must be (B, 3, H, W) (or one channel), got shape {tuple(x.shape)}")
    x = x.float() / 255 if x.dtype == torch.uint8 else x.float()
    if x.shape[1] == 1:
        x = x.expand(-1, 3, -1, -1)
    return x.clamp(0, 1).permute(0, 2, 3, 1).numpy()


def mask_overlay(
    image: np.ndarray, pred: np.ndarray, gt: np.ndarray | None = None, alpha: float = 0.6
) -> np.ndarray:
    """An (H, W, 3) picture of a predicted mask over a grey image: with ``gt``, true positives
    green, false positives red, missed pixels blue; without it, the mask in yellow."""
    grey = image.mean(-1, keepdims=True).repeat(3, -1) * 0.6
    out = grey.copy()
    pred = pred.astype(bool)
    if gt is None:
        colours = [(pred, (1.0, 0.85, 0.0))]
    else:
        gt = gt.astype(bool)
        green, red, blue = (0.1, 0.85, 0.2), (0.9, 0.15, 0.1), (0.2, 0.4, 1.0)
        colours = [(pred & gt, green), (pred & ~gt, red), (~pred & gt, blue)]
    for where, c in colours:
        out[where] = (1 - alpha) * grey[where] + alpha * np.array(c)
    return out


def _axis_off(ax) -> None:
    ax.set_xticks([])
    ax.set_yticks([])


def plot_head_maps(
    images: Tensor,
    maps: Tensor,
    *,
    title: str = "[CLS] → patch attention per head",
    row_labels: Sequence[str] | None = None,
    mode: str = "bilinear",
    alpha: float = 0.65,
    panel_size: float = 1.6,
) -> Figure:
    """Rows: images; columns: the image, then each head's attention map over it.

    Args:
        images: (B, 3, H, W) display images.
        maps: (B, h, gh, gw) attention maps (e.g. ``cls_attention_maps``); each is scaled by its own
            maximum, so the colour shows where a head looks, not how much mass it spends there.
        mode: upsampling of the maps to the image (``bilinear`` for pictures, ``nearest`` shows patches).
    """
    imgs = to_display(images)
    B, h = maps.shape[:2]
    H, W = imgs.shape[1:3]
    up = upsample_maps(maps.float(), (H, W), mode=mode).numpy()
    up = up / np.maximum(up.reshape(B, h, -1).max(-1)[..., None, None], 1e-12)
    fig, axes = plt.subplots(B, h + 1, figsize=(panel_size * (h + 1), panel_size * B + 0.6), squeeze=False)
    for b in range(B):
        axes[b, 0].imshow(imgs[b])
        axes[b, 0].set_ylabel(row_labels[b] if row_labels is not None else f"image {b}", fontsize=8)
        for k in range(h):
            ax = axes[b, k + 1]
            ax.imshow(imgs[b].mean(-1), cmap="gray", vmin=0, vmax=1)
            im = ax.imshow(up[b, k], cmap="inferno", alpha=alpha, vmin=0, vmax=1)
            if b == 0:
                ax.set_title(f"head {k}", fontsize=9)
    axes[0, 0].set_title("image", fontsize=9)
    for ax in axes.flat:
        _axis_off(ax)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    cbar = fig.colorbar(im, ax=axes, fraction=0.02, pad=0.01)
    cbar.set_label("attention / its max (per map)", fontsize=8)
    return fig


def plot_head_masks(
    images: Tensor,
    masks: Tensor,
    gt: Tensor | None = None,
    ious: Tensor | None = None,
    *,
    title: str = "masks keeping 60 % of the attention mass",
    panel_size: float = 1.6,
) -> Figure:
    """Rows: images; columns: the image, then each head's mask (green: correct, red: false
    positive, blue: missed) with its IoU in the corner when ``ious`` (B, h) is given.

    Args:
        masks: bool (B, h, gh, gw) patch masks (e.g. ``mass_threshold_masks``) or (B, h, H, W).
        gt: bool (B, H, W) ground truth, optional.
    """
    imgs = to_display(images)
    B, h = masks.shape[:2]
    H, W = imgs.shape[1:3]
    up = upsample_maps(masks.bool(), (H, W)).numpy()
    fig, axes = plt.subplots(B, h + 1, figsize=(panel_size * (h + 1), panel_size * B + 0.6), squeeze=False)
    for b in range(B):
        axes[b, 0].imshow(imgs[b] if gt is None else mask_overlay(imgs[b], gt[b].numpy(), None, 0.45))
        for k in range(h):
            ax = axes[b, k + 1]
            ax.imshow(mask_overlay(imgs[b], up[b, k], None if gt is None else gt[b].numpy()))
            if ious is not None:
                ax.text(
                    1, 1, f"IoU {float(ious[b, k]):.2f}", color="white", fontsize=7, va="top",
                    bbox=dict(facecolor="black", alpha=0.6, pad=1, lw=0),
                )  # fmt: skip
            if b == 0:
                ax.set_title(f"head {k}", fontsize=9)
    axes[0, 0].set_title("image" if gt is None else "image, true mask", fontsize=9)
    for ax in axes.flat:
        _axis_off(ax)
    sub = "" if gt is None else "\ngreen: mask ∩ truth, red: mask only, blue: truth only"
    fig.suptitle(title + sub, fontsize=10)
    fig.tight_layout()
    return fig


def plot_iou_grid(
    grids: Mapping[str, Tensor | np.ndarray],
    *,
    title: str = "mean IoU of each head's mask, by layer",
    baseline: float | None = None,
    vmax: float | None = None,
    label: str = "mean IoU",
    baseline_name: str = "fixed-mask baseline",
) -> Figure:
    """One heat map per model: a score per layer and head (mean IoU by default), cells annotated.

    Args:
        grids: model name -> (L, h) score of head k at layer ℓ (e.g. mean IoU).
        baseline: a reference value (e.g. the fixed-mask baseline) quoted in the colour-bar label.
        label, baseline_name: the colour-bar label and the name of the reference.
    """
    n = len(grids)
    if n == 0:
        raise ValueError("grids is empty; pass {model name: (layers, heads) array}")
    arrays = {k: np.asarray(v, dtype=float) for k, v in grids.items()}
    top = vmax if vmax is not None else max(float(a.max()) for a in arrays.values())
    fig, axes = plt.subplots(1, n, figsize=(3.2 * n + 0.8, 3.3), squeeze=False, layout="constrained")
    for ax, (name, a) in zip(axes[0], arrays.items(), strict=True):
        im = ax.imshow(a, cmap="viridis", vmin=0, vmax=top, aspect="auto")
        for (i, j), v in np.ndenumerate(a):
            colour = "white" if v < 0.6 * top else "black"
            ax.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=8, color=colour)
        ax.set_xticks(range(a.shape[1]))
        ax.set_yticks(range(a.shape[0]), [f"{i + 1}" for i in range(a.shape[0])])
        ax.set_xlabel("head")
        ax.set_ylabel("layer ℓ")
        ax.set_title(name, fontsize=10)
    cbar_label = label + (f" ({baseline_name} {baseline:.2f})" if baseline is not None else "")
    fig.colorbar(im, ax=axes[0].tolist(), label=cbar_label)
    fig.suptitle(title, fontsize=10)
    return fig


def plot_fraction_sweep(
    fractions: Sequence[float],
    curves: Mapping[str, Sequence[float]],
    *,
    baseline: float | None = None,
    baseline_name: str = "fixed mask",
    title: str = "best-head IoU against the attention mass kept",
) -> Figure:
    """Best-head IoU (y) against the mass fraction of the masks (x), one line per model.

    Args:
        fractions: the mass fractions f in (0, 1].
        curves: model name -> IoU at each fraction.
        baseline: drawn as a dashed horizontal line (e.g. the fixed-mask IoU).
    """
    fig, ax = plt.subplots(figsize=(5.2, 3.4))
    for name, ys in curves.items():
        ax.plot(list(fractions), list(ys), marker="o", ms=4, label=name)
    if baseline is not None:
        ax.axhline(baseline, ls="--", color="grey", label=f"{baseline_name} ({baseline:.2f})")
    ax.axvline(0.6, ls=":", color="black", lw=0.8)
    ax.set_xlabel("attention mass kept by each mask, f")
    ax.set_ylabel("mean IoU of the best head")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def plot_pca_maps(
    images: Tensor,
    maps: PCAMaps,
    gt: Tensor | None = None,
    *,
    title: str = "PCA of the per-head projections U_k^T LN(Z)",
    panel_size: float = 1.6,
) -> Figure:
    """Columns: images; rows: the image, the first component, its foreground (> 0; against the
    truth when ``gt`` is given), and the first three components as RGB."""
    imgs = to_display(images)
    B = imgs.shape[0]
    H, W = imgs.shape[1:3]
    pc1 = maps.scores[:, 0]
    lim = float(pc1.abs().max())
    fg = upsample_maps(maps.foreground, (H, W)).numpy()
    rows = 4 if maps.rgb is not None else 3
    fig, axes = plt.subplots(rows, B, figsize=(panel_size * B, panel_size * rows + 0.6), squeeze=False)
    ev = maps.explained.tolist()
    for b in range(B):
        axes[0, b].imshow(imgs[b])
        im = axes[1, b].imshow(pc1[b].numpy(), cmap="coolwarm", vmin=-lim, vmax=lim)
        axes[2, b].imshow(mask_overlay(imgs[b], fg[b], None if gt is None else gt[b].numpy()))
        if maps.rgb is not None:
            axes[3, b].imshow(maps.rgb[b].numpy())
    labels = ["image", f"PC 1 ({100 * ev[0]:.0f} % var.)", "PC 1 > 0", "PCs 1-3 as RGB"]
    for r in range(rows):
        axes[r, 0].set_ylabel(labels[r], fontsize=8)
    for ax in axes.flat:
        _axis_off(ax)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    cbar = fig.colorbar(im, ax=axes[1].tolist(), fraction=0.02, pad=0.01)
    cbar.set_label("PC 1 score", fontsize=8)
    return fig


def plot_ncut(
    images: Tensor,
    cut: NCutResult,
    gt: Tensor | None = None,
    *,
    title: str = "normalised cut of the patch affinity (second eigenvector)",
    panel_size: float = 1.6,
) -> Figure:
    """Columns: images; rows: the image, the second eigenvector, the chosen foreground side."""
    imgs = to_display(images)
    B = imgs.shape[0]
    H, W = imgs.shape[1:3]
    fg = upsample_maps(cut.foreground, (H, W)).numpy()
    fig, axes = plt.subplots(3, B, figsize=(panel_size * B, panel_size * 3 + 0.6), squeeze=False)
    for b in range(B):
        axes[0, b].imshow(imgs[b])
        v = cut.eigvec[b].numpy()
        v = v if float(cut.eigvec[b][cut.foreground[b]].mean()) >= float(v.mean()) else -v  # foreground red
        lim = float(np.abs(v - v.mean()).max()) or 1.0
        axes[1, b].imshow(v - v.mean(), cmap="coolwarm", vmin=-lim, vmax=lim)
        axes[2, b].imshow(mask_overlay(imgs[b], fg[b], None if gt is None else gt[b].numpy()))
        axes[1, b].set_title(f"λ₂ = {float(cut.eigval[b]):.2f}", fontsize=8)
    for r, lab in enumerate(["image", "eigenvector x (centred)", "foreground side"]):
        axes[r, 0].set_ylabel(lab, fontsize=8)
    for ax in axes.flat:
        _axis_off(ax)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig
