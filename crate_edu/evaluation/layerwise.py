"""Measurements of trained (or untrained) models, as the papers report them.

``layerwise_measurements`` reproduces the layer-wise figure of the CRATE paper: for every layer ℓ,
the compression term R^c of the MSSA input projections U_k^T LN(Z^ℓ) and the sparsity of the ISTA
output, each as mean ± std over a batch, measured exactly as the official ``vis_utils`` does
(see ``crate_edu.coding_rate.measure_coding_rate`` / ``measure_sparsity``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from crate_edu.coding_rate import measure_coding_rate, measure_nonzero

__all__ = ["LayerwiseMeasurements", "layerwise_measurements"]


@dataclass
class LayerwiseMeasurements:
    """Per-layer figures (lists indexed by layer, 0 = first layer).

    Attributes:
        compression_mean / compression_std: R^c(U_k^T LN(Z^ℓ)) in nats, official measurement
            (unit-normalised per-head tokens, eps = 0.01), mean and unbiased std over the batch.
        nonzero_mean / nonzero_std: fraction of non-zero entries of the ISTA codes (the official
            plot's "sparsity" axis: lower is sparser), mean and population std over the batch.
            Empty for models without sparse codes (ViT).
    """

    compression_mean: list[float]
    compression_std: list[float]
    nonzero_mean: list[float]
    nonzero_std: list[float]

    @property
    def depth(self) -> int:
        return len(self.compression_mean)


@torch.no_grad()
def layerwise_measurements(model: nn.Module, images: Tensor, eps: float = 0.01) -> LayerwiseMeasurements:
    """Measure compression and sparsity at every layer of ``model`` on a batch ``images`` (B, C, H, W).

    Works for every classifier with ``forward_intermediates`` (CRATE, CRATE-α, ViT; for ViT the
    "projections" are the keys and there is no sparsity) and for CRATE-MAE's encoder (unmasked).
    """
    was_training = model.training
    model.eval()
    try:
        if hasattr(model, "blocks"):  # CRATE-MAE: the encoder on the whole image
            _, traces = model.forward_intermediates(images, mask_ratio=0.0)
            traces = traces["encoder"]
        else:
            _, traces = model.forward_intermediates(images)
    finally:
        model.train(was_training)
    out = LayerwiseMeasurements([], [], [], [])
    for t in traces:
        mean, std = measure_coding_rate(t.proj.float(), eps=eps)
        out.compression_mean.append(mean.item())
        out.compression_std.append(std.item())
        if t.codes is not None:
            mean, std = measure_nonzero(t.codes)
            out.nonzero_mean.append(mean.item())
            out.nonzero_std.append(std.item())
    return out
