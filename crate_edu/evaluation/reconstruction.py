"""Masked-autoencoder reconstructions: fixed masks, the masked-patch loss, un-normalisation, panels.

The CRATE-MAE model itself (and ``patchify`` / ``unpatchify`` / ``random_masking``) lives in
:mod:`crate_edu.models.crate_mae`; this module holds what a reader needs to *look at* and *score*
its reconstructions::

    from crate_edu.evaluation.reconstruction import reconstruct, evaluate_reconstruction
    panels = reconstruct(model, images, mean=ds.mean, std=ds.std, seed=0)   # four (B, H, W, C) arrays
    loss = evaluate_reconstruction(model, test_images, seed=0)               # masked-patch MSE

Everything is computed on the model's own scale (normalised pixels); only the panels are mapped
back to [0, 1] pixels for display with :func:`unnormalize`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn

from crate_edu.evaluation.batches import iter_batches
from crate_edu.models.crate_mae import patchify, unpatchify

__all__ = [
    "mask_noise",
    "masked_patch_loss",
    "unnormalize",
    "prediction_to_patches",
    "paste_visible",
    "mask_patches",
    "ReconstructionPanels",
    "reconstruct",
    "evaluate_reconstruction",
]


def mask_noise(batch: int, num_patches: int, seed: int, device: torch.device | str = "cpu") -> Tensor:
    """Uniform noise (B, L) that fixes a random mask: the same ``seed`` gives the same masks.

    Pass it as ``model(imgs, noise=...)``; the patches with the smallest noise are kept. Drawn on
    the CPU from its own generator (the global random state is left alone), then moved to ``device``.
    """
    if batch < 1 or num_patches < 1:
        raise ValueError(f"batch and num_patches must be positive, got {batch} and {num_patches}")
    g = torch.Generator().manual_seed(int(seed))
    return torch.rand(batch, num_patches, generator=g).to(device)


def masked_patch_loss(pred: Tensor, target: Tensor, mask: Tensor) -> Tensor:
    """Mean squared error per patch, averaged over the removed patches only (mask == 1).

    Args:
        pred, target: (B, L, P²·C) patches (``target = patchify(images, P)``).
        mask: (B, L), 1 = removed, 0 = visible.
    Returns:
        a scalar: Σ_{b,l} mask_bl · mean_j (pred − target)²_blj / Σ mask.
    """
    if pred.shape != target.shape:
        raise ValueError(f"pred and target must match in shape: {tuple(pred.shape)} vs {tuple(target.shape)}")
    if mask.shape != pred.shape[:2]:
        raise ValueError(f"mask must have shape (B, L) = {tuple(pred.shape[:2])}, got {tuple(mask.shape)}")
    if mask.sum() <= 0:
        raise ValueError("the mask removes no patch: use a mask_ratio > 0 so that some patches are scored")
    per_patch = ((pred - target) ** 2).mean(dim=-1)  # (B, L)
    return (per_patch * mask).sum() / mask.sum()


def unnormalize(images: Tensor, mean: Sequence[float], std: Sequence[float]) -> Tensor:
    """Normalised images (B, C, H, W) -> pixels in [0, 1]: ``clamp(x · std + mean, 0, 1)``."""
    if images.ndim != 4:
        raise ValueError(f"images must be (B, C, H, W), got shape {tuple(images.shape)}")
    c = images.shape[1]
    if len(mean) != c or len(std) != c:
        raise ValueError(f"mean and std need one value per channel ({c}), got {len(mean)} and {len(std)}")
    m = torch.as_tensor(mean, dtype=images.dtype, device=images.device).view(1, c, 1, 1)
    s = torch.as_tensor(std, dtype=images.dtype, device=images.device).view(1, c, 1, 1)
    return (images * s + m).clamp(0.0, 1.0)


def prediction_to_patches(pred: Tensor, target: Tensor, norm_pix_loss: bool) -> Tensor:
    """The predicted patches on the images' (normalised) scale.

    A model trained with ``norm_pix_loss`` predicts each patch standardised by the target patch's
    own mean and variance; to show it, undo that with the target's statistics (as the MAE demo does).
    """
    if not norm_pix_loss:
        return pred
    mean = target.mean(dim=-1, keepdim=True)
    var = target.var(dim=-1, keepdim=True)
    return pred * (var + 1.0e-6) ** 0.5 + mean


def paste_visible(pred: Tensor, target: Tensor, mask: Tensor) -> Tensor:
    """Patches (B, L, P²·C): the prediction where removed (mask 1), the original where visible (mask 0)."""
    m = mask.unsqueeze(-1).to(pred.dtype)
    return pred * m + target * (1 - m)


def mask_patches(images: Tensor, mask: Tensor, patch_size: int, fill: float = 0.0) -> Tensor:
    """Images (B, C, H, W) with the removed patches (mask 1) set to ``fill``."""
    patches = patchify(images, patch_size)  # (B, L, P²·C)
    m = mask.unsqueeze(-1).to(images.dtype)
    return unpatchify(patches * (1 - m) + fill * m, patch_size, images.shape[1])


@dataclass
class ReconstructionPanels:
    """The four MAE panels as float arrays (B, H, W, C) of pixels in [0, 1], plus the numbers.

    Attributes:
        original: the input images.
        masked: the input with the removed patches greyed out (``fill`` in pixel space).
        reconstruction: the decoder's prediction for every patch.
        pasted: the prediction on the removed patches, the original on the visible ones.
        mask: (B, L) the mask used, 1 = removed.
        loss: the model's loss on the batch (masked-patch MSE on the normalised scale).
        per_image_loss: (B,) the same loss per image.
    """

    original: np.ndarray
    masked: np.ndarray
    reconstruction: np.ndarray
    pasted: np.ndarray
    mask: np.ndarray
    loss: float
    per_image_loss: np.ndarray


def _to_hwc(x: Tensor) -> np.ndarray:
    return x.permute(0, 2, 3, 1).detach().cpu().numpy()


@torch.no_grad()
def reconstruct(
    model: nn.Module,
    images: Tensor,
    *,
    mean: Sequence[float],
    std: Sequence[float],
    mask_ratio: float | None = None,
    seed: int = 0,
    fill: float = 0.5,
) -> ReconstructionPanels:
    """Run a CRATE-MAE on ``images`` (B, C, H, W, normalised) with a fixed mask and build the panels.

    Args:
        model: a :class:`~crate_edu.models.CRATEMAE` (anything with its ``config`` and
            ``forward(imgs, mask_ratio, noise)``).
        mean, std: the normalisation of ``images`` (the dataset's ``mean`` / ``std``), undone for display.
        mask_ratio: fraction of patches removed (default: the model's, 0.75).
        seed: fixes the mask (:func:`mask_noise`).
        fill: grey level of the removed patches in the masked panel, in [0, 1] pixel space.
    """
    cfg = model.config
    was_training = model.training
    model.eval()
    try:
        noise = mask_noise(images.shape[0], cfg.num_patches, seed, images.device)
        loss, pred, mask = model(images, mask_ratio=mask_ratio, noise=noise)
    finally:
        model.train(was_training)
    P, C = cfg.patch_size, cfg.channels
    target = patchify(images, P)
    per_image = ((pred - target) ** 2).mean(-1)  # (B, L), on the loss's scale
    per_image = (per_image * mask).sum(1) / mask.sum(1)
    pred_pix = prediction_to_patches(pred, target, cfg.norm_pix_loss)
    original = unnormalize(images, mean, std)
    reconstruction = unnormalize(unpatchify(pred_pix, P, C), mean, std)
    pasted = unnormalize(unpatchify(paste_visible(pred_pix, target, mask), P, C), mean, std)
    masked = mask_patches(original, mask, P, fill=fill)
    return ReconstructionPanels(
        original=_to_hwc(original),
        masked=_to_hwc(masked),
        reconstruction=_to_hwc(reconstruction),
        pasted=_to_hwc(pasted),
        mask=mask.cpu().numpy(),
        loss=float(loss),
        per_image_loss=per_image.cpu().numpy(),
    )


@torch.no_grad()
def evaluate_reconstruction(
    model: nn.Module,
    data,
    *,
    mask_ratio: float | None = None,
    seed: int = 0,
    batch_size: int = 256,
    limit: int | None = None,
    device: torch.device | str | None = None,
) -> float:
    """Masked-patch reconstruction loss over a dataset, with masks fixed by ``seed``.

    ``data`` is a tensor of normalised images (N, C, H, W) or a dataset of ``(image, label)``;
    ``limit`` keeps its first items. Batch ``k`` uses the masks of ``mask_noise(B, L, seed + k)``,
    so the result does not depend on the global random state. Returns the mean squared error per
    pixel over every removed patch (each image removes the same number of patches, so this is the
    mean of the per-batch model losses weighted by batch size).
    """
    cfg = model.config
    device = next(model.parameters()).device if device is None else torch.device(device)
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    try:
        for k, x in enumerate(iter_batches(data, batch_size, limit=limit)):
            x = x.to(device)
            noise = mask_noise(x.shape[0], cfg.num_patches, seed + k, device)
            loss, _, _ = model(x, mask_ratio=mask_ratio, noise=noise)
            total += float(loss) * x.shape[0]
            count += x.shape[0]
    finally:
        model.train(was_training)
    if count == 0:
        raise ValueError("no images to evaluate: the dataset is empty (or limit=0)")
    return total / count
