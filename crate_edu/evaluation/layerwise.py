"""Measurements of trained (or untrained) models, as the papers report them.

``layerwise_measurements`` reproduces the layer-wise figure of the CRATE paper: for every layer ℓ,
the compression term R^c of the MSSA input projections U_k^T LN(Z^ℓ) and the sparsity of the ISTA
output, each as mean ± std over a batch, measured exactly as the official ``vis_utils`` does
(see ``crate_edu.coding_rate.measure_coding_rate`` / ``measure_sparsity``).

The same figure for a language model (CRATE-LM or its GPT baseline, token ids (B, T)): each window
of T tokens is one sample; the projections are the per-head U_k^T LN(Z^ℓ) of the causal MSSA (the
GPT's keys), and the codes are the layer's neurons (CRATE-LM's sparse code z1, the GPT's post-ReLU
MLP hidden units).
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
    """Measure compression and sparsity at every layer of ``model`` on a batch ``images`` (B, C, H, W),
    or, for a language model, on a batch of token ids (B, T).

    Works for every classifier with ``forward_intermediates`` (CRATE, CRATE-α, ViT; for ViT the
    "projections" are the keys and there is no sparsity), for CRATE-MAE's encoder (unmasked), and
    for the language models with ``forward_trace`` given integer token ids (CRATE-LM: the MSSA
    projections and the sparse codes z1; GPT: the keys and the post-ReLU MLP hidden units).
    """
    language = hasattr(model, "forward_trace") and not hasattr(model, "forward_intermediates")
    if language and (not isinstance(images, Tensor) or images.is_floating_point()):
        what = f"dtype {images.dtype}" if isinstance(images, Tensor) else type(images).__name__
        raise TypeError(f"{type(model).__name__} reads token ids: pass an integer tensor (B, T), got {what}")
    was_training = model.training
    model.eval()
    try:
        if language:
            pairs = _language_traces(model, images)
        elif hasattr(model, "blocks"):  # CRATE-MAE: the encoder on the whole image
            _, traces = model.forward_intermediates(images, mask_ratio=0.0)
            pairs = [(t.proj, t.codes) for t in traces["encoder"]]
        else:
            _, traces = model.forward_intermediates(images)
            pairs = [(t.proj, t.codes) for t in traces]
    finally:
        model.train(was_training)
    out = LayerwiseMeasurements([], [], [], [])
    for proj, codes in pairs:
        mean, std = measure_coding_rate(proj.float(), eps=eps)
        out.compression_mean.append(mean.item())
        out.compression_std.append(std.item())
        if codes is not None:
            mean, std = measure_nonzero(codes)
            out.nonzero_mean.append(mean.item())
            out.nonzero_std.append(std.item())
    return out


def _language_traces(model: nn.Module, idx: Tensor) -> list[tuple[Tensor, Tensor | None]]:
    """(projections (B, h, T, p), codes (B, T, m)) of every layer of a language model on ``idx`` (B, T).

    The projections are the layer's attention projections of LN(Z^ℓ) (``attn.forward_parts(...).proj``:
    CRATE's shared U_k^T, the GPT's keys), taken from the trace when it carries them and otherwise
    recomputed from each layer's input (the embedding, then the previous layer's output).
    """
    _, traces = model.forward_trace(idx)
    if all(getattr(t, "proj", None) is not None for t in traces):
        return [(t.proj, t.codes) for t in traces]
    x = model.embed(idx)  # Z^0 (B, T, d)
    pairs = []
    for layer, t in zip(model.transformer.h, traces, strict=True):
        norm = getattr(layer, "prenorm_1", None) or getattr(layer, "ln_1", None)
        if norm is None:
            raise TypeError(f"{type(layer).__name__} has neither prenorm_1 nor ln_1 before its attention")
        pairs.append((layer.attn.forward_parts(norm(x)).proj, t.codes))
        x = t.z_out  # the next layer's input
    return pairs
