"""Pretrained weights at another resolution or patch size: the official CRATE-α hand-off.

The official ImageNet-21K → ImageNet-1K fine-tuning (UCSC-VLAA/CRATE-alpha) loads the pre-trained
parameters into the new model with three exceptions:

* the classifier head is not loaded (``dont_load: head/kernel, head/bias``,
  ``configs/crate/classification/fine_tuning_in1k.py:121``): the new model keeps its fresh one;
* the position embeddings are resampled when the grid of patches changes (``resample_posemb``,
  ``models/crate.py:321-344``): the [CLS] row is kept and the ``h × w`` grid is zoomed to
  ``H × W`` with ``scipy.ndimage.zoom(order=1)``, linear interpolation whose corner samples stay
  at the corners (here ``F.interpolate(mode='bilinear', align_corners=True)``, the same numbers);
* the patch-embedding kernel is resized to the new patch (``embedding/kernel`` in ``dont_load``,
  ``models/common.py:605-607``) with ``jax.image.resize(method='bilinear')``: half-pixel centres,
  antialiased when it shrinks (here ``F.interpolate(mode='bilinear', antialias=True)``; the
  correspondence is inferred, not checked against JAX). The values are not rescaled.

Everything else is carried over exactly.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["adapt_state_dict", "resample_pos_embedding", "resize_patch_embedding"]


def resample_pos_embedding(
    pos: Tensor, grid: tuple[int, int], old_grid: tuple[int, int] | None = None
) -> Tensor:
    """Position embeddings ``(1, 1 + h·w, d)`` -> ``(1, 1 + H·W, d)`` for a ``grid = (H, W)`` of patches.

    Row 0 ([CLS]) is kept; the rows of the ``old_grid = (h, w)`` (default: the square that fits)
    are zoomed linearly, corner to corner, as ``scipy.ndimage.zoom(order=1)``. An unchanged grid
    returns ``pos`` itself.
    """
    n = pos.shape[1] - 1
    if old_grid is None:
        side = math.isqrt(n)
        if side * side != n:
            raise ValueError(f"position embeddings of {n} patches are not a square grid; pass old_grid")
        old_grid = (side, side)
    if old_grid[0] * old_grid[1] != n:
        raise ValueError(f"position embeddings of {n} patches do not fit a {old_grid[0]}x{old_grid[1]} grid")
    if tuple(old_grid) == tuple(grid):
        return pos
    cls, rows = pos[:, :1], pos[:, 1:]  # (1, 1, d), (1, h·w, d)
    d = pos.shape[-1]
    image = rows.reshape(1, old_grid[0], old_grid[1], d).permute(0, 3, 1, 2)  # (1, d, h, w)
    zoomed = F.interpolate(
        image.float(), size=tuple(grid), mode="bilinear", align_corners=True
    )  # (1, d, H, W)
    rows = zoomed.permute(0, 2, 3, 1).reshape(1, grid[0] * grid[1], d).to(pos.dtype)  # (1, H·W, d)
    return torch.cat([cls, rows], dim=1)  # (1, 1 + H·W, d)


def resize_patch_embedding(weight: Tensor, patch: tuple[int, int]) -> Tensor:
    """A convolutional patch embedding ``(d, C, p, q)`` resized bilinearly to ``(d, C, P, Q)``
    (half-pixel centres, antialiased when it shrinks; values not rescaled). An unchanged patch
    returns ``weight`` itself."""
    if tuple(weight.shape[-2:]) == tuple(patch):
        return weight
    out = F.interpolate(
        weight.float(), size=tuple(patch), mode="bilinear", align_corners=False, antialias=True
    )
    return out.to(weight.dtype)


def adapt_state_dict(
    state_dict: Mapping[str, Tensor],
    target: Mapping[str, Tensor],
    *,
    grids: tuple[tuple[int, int], tuple[int, int]],
    fresh: Collection[str] = (),
    pos_key: str = "pos_embedding",
    patch_key: str | None = None,
) -> dict[str, Tensor]:
    """The weights of ``state_dict`` in the shapes of ``target`` (a new model's state dict).

    Args:
        state_dict: the pretrained weights.
        target: the new model's own state dict: its keys and shapes, and the values of ``fresh``.
        grids: ``(old grid, new grid)`` of patches, each ``(rows, columns)``.
        fresh: keys taken from ``target`` (the replaced head).
        pos_key: the position embeddings, resampled by :func:`resample_pos_embedding`.
        patch_key: the convolutional patch-embedding kernel, resized by :func:`resize_patch_embedding`.

    Raises:
        ValueError: a key the two do not share, or a shape that differs elsewhere (one line).
    """
    missing = [k for k in target if k not in state_dict and k not in fresh]
    if missing:
        raise ValueError(f"the pretrained weights lack {', '.join(missing[:5])}")
    out: dict[str, Tensor] = {}
    for key, own in target.items():
        if key in fresh:
            out[key] = own
            continue
        value = state_dict[key]
        if key == pos_key:
            value = resample_pos_embedding(value, grids[1], grids[0])
        elif key == patch_key and value.ndim == 4:
            value = resize_patch_embedding(value, tuple(own.shape[-2:]))
        if tuple(value.shape) != tuple(own.shape):
            raise ValueError(
                f"{key}: the pretrained weights have shape {tuple(value.shape)}, the new model "
                f"{tuple(own.shape)}, and only the position and patch embeddings can be resized"
            )
        out[key] = value
    return out
