"""Mixup, CutMix and smoothed targets: the batch mixing of the official CRATE-α recipes.

The official ImageNet-21K pre-training and ImageNet-1K fine-tuning (UCSC-VLAA/CRATE-alpha,
``main.py:210-223``, ``transforms/mixup.py:223-365``) mix every training batch on the device:

* a switch ``u ~ U(0, 1)`` picks **mixup** when ``u < switch_prob`` (0.5), else **CutMix**;
* mixup: ``λ ~ Beta(0.8, 0.8)``, ``x ← λ x + (1 − λ) x_partner``;
* CutMix: ``λ ~ Beta(1, 1)``, a box of ``int(H √(1 − λ))`` by ``int(W √(1 − λ))`` pixels centred
  at a uniform pixel (clipped to the image) is pasted from the partner, and ``λ`` is recomputed as
  ``1 − box area / (H W)``;
* the partner of image ``i`` is image ``B − 1 − i``: the batch **in reverse order**, not a random
  permutation; one ``λ`` per device and step;
* the labels are mixed with the same ``λ``: ``t ← λ t + (1 − λ) t_partner``.

Here each process mixes its own share of the batch with that share reversed (the official code:
each device its own), and each forward pass of a gradient-accumulation step mixes its own
micro-batch. The draws come from the global torch generator, which the checkpoint saves and a
resumed run restores, so a resumed run mixes as the uninterrupted one does.

Targets are the one-hot labels with label smoothing ε over K classes: ``t = off + (on − off) e_y``,
with ``on = 1 − ε + ε/K, off = ε/K`` in torch's form and ``on = 1 − ε, off = ε/K`` in big_vision's
(the official fine-tuning's ``on=0.9, off=0.1/1000``: its targets add up to 1 − ε/K). The loss
``−Σ_k t_k log p_k`` is computed without building the (B, K) targets::

    loss_i = −off · Σ_k log p_ik − (on − off) · (λ log p_i,y_i + (1 − λ) log p_i,y_partner(i))
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["Mix", "draw_mix", "mix_images", "mixed_cross_entropy", "smoothing_values"]


@dataclass(frozen=True)
class Mix:
    """One step's mixing: which kind, the weight ``lam`` of each image's own label, and for CutMix
    the pasted box ``(top, left, height, width)`` in pixels."""

    kind: str  # "mixup" or "cutmix"
    lam: float
    box: tuple[int, int, int, int] | None = None


def _beta(a: float) -> float:
    """One draw of Beta(a, a) from the global torch generator."""
    concentration = torch.tensor([a, a], dtype=torch.float64)
    return float(torch.distributions.Dirichlet(concentration).sample()[0])


def draw_mix(
    height: int, width: int, mixup_alpha: float, cutmix_alpha: float, switch_prob: float = 0.5
) -> Mix | None:
    """The mixing of one step for images of ``height`` x ``width`` pixels (None: both are off).

    With both on, mixup is chosen with probability ``switch_prob``; with one on, that one.
    """
    if mixup_alpha <= 0 and cutmix_alpha <= 0:
        return None
    use_mixup = cutmix_alpha <= 0 or (mixup_alpha > 0 and float(torch.rand(())) < switch_prob)
    if use_mixup:
        return Mix("mixup", _beta(mixup_alpha))
    lam = _beta(cutmix_alpha)
    cut_rat = math.sqrt(1.0 - lam)
    cut_h, cut_w = int(height * cut_rat), int(width * cut_rat)
    i = int(torch.randint(0, height, ()))  # the box's centre: a uniform pixel
    j = int(torch.randint(0, width, ()))
    top, left = min(max(i - cut_h // 2, 0), height), min(max(j - cut_w // 2, 0), width)
    h = min(max(i + cut_h // 2, 0), height) - top
    w = min(max(j + cut_w // 2, 0), width) - left
    return Mix("cutmix", 1.0 - h * w / (height * width), (top, left, h, w))


def mix_images(x: Tensor, mix: Mix | None) -> Tensor:
    """Images (B, C, H, W) mixed with the batch in reverse order (``x`` itself when ``mix`` is None)."""
    if mix is None:
        return x
    partner = x.flip(0)  # image i is mixed with image B - 1 - i                     (B, C, H, W)
    if mix.kind == "mixup":
        return mix.lam * x + (1.0 - mix.lam) * partner
    top, left, h, w = mix.box  # type: ignore[misc]
    out = x.clone()
    out[:, :, top : top + h, left : left + w] = partner[:, :, top : top + h, left : left + w]
    return out


def smoothing_values(num_classes: int, smoothing: float, style: str = "torch") -> tuple[float, float]:
    """``(on, off)``: the target of the true class and of every other class (see the module)."""
    off = smoothing / num_classes
    if style == "torch":
        return 1.0 - smoothing + off, off
    if style == "big_vision":
        return 1.0 - smoothing, off
    raise ValueError(f"unknown smoothing style {style!r}; choose torch or big_vision")


def mixed_cross_entropy(
    logits: Tensor, labels: Tensor, lam: float = 1.0, smoothing: float = 0.0, style: str = "torch"
) -> Tensor:
    """Mean cross-entropy of ``logits`` (B, K) against smoothed one-hot targets of ``labels`` (B,),
    mixed with weight ``lam`` with those of ``labels`` in reverse order; float32."""
    on, off = smoothing_values(logits.shape[-1], smoothing, style)
    logp = F.log_softmax(logits.float(), dim=-1)  # (B, K)
    own = logp.gather(1, labels[:, None])[:, 0]  # log p of each image's label         (B,)
    partner = logp.gather(1, labels.flip(0)[:, None])[:, 0]  # of its partner's label   (B,)
    loss = -(on - off) * (lam * own + (1.0 - lam) * partner)  # (B,)
    if off:
        loss = loss - off * logp.sum(dim=-1)
    return loss.mean()
