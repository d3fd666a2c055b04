"""AoT: the attention-only transformer of unrolled subspace denoising (arXiv 2506.03790), in one file.

Wang, Lu, Yu, Pai, Qu and Ma (ICML 2025) model the tokens of a transformer as noisy samples of a
mixture of low-rank Gaussians (their Definition 1: token i of subspace k is
z_i = U_k a_i + Σ_{j≠k} U_j e_{i,j}, signal a_i on its own subspace, noise e_{i,j} of variance δ²
on the others; ``crate_edu.denoising.sample_subspace_noise_tokens``) and build the network by
unrolling a denoiser of those tokens. The denoiser is MSSA, so the network is attention only,
with skip connections and no MLP::

    Z^{ℓ+1} = Z^ℓ + η Σ_k U_k softmax_rows(τ (Z^ℓ U_k)(Z^ℓ U_k)^T) (Z^ℓ U_k)^T   (the unrolled denoiser)
    Z^{ℓ+1} = Z^ℓ + MSSA(LN(Z^ℓ))                                               (the trained network)

in tokens-as-rows form (the paper writes Z ∈ R^{d×N}). The first line is the operator whose
effect the paper analyses: each layer raises every token's signal-to-noise ratio (signal: the
component on its own subspace; noise: the rest; :func:`token_snr`) "at a linear rate" in the
number of layers. The second is the network as trained, with a LayerNorm before the attention
("added in practice") and a learned MSSA.

No official code was found (docs/notes/tost_redunet_official_code.md §3); these equations are the
paper's as summarised in docs/design.md. This project's own choices, each a knob here:

- the MSSA is CRATE's (:class:`crate_edu.models.crate.MSSA`: one shared projection plays
  [U_1 … U_K]^T, softmax temperature 1/√p, learned output map), with **no output bias**, since
  the derived output map η [U_1 … U_K] has none;
- the LayerNorm is on by default (``norm=True``) and can be removed (``norm=False``: the
  unrolled denoiser exactly, once :meth:`AoT.set_subspaces` has put in the true subspaces);
- :meth:`AoT.set_subspaces` realises a temperature τ and step η with the official
  parametrisation: qkv = s [U_1 … U_K]^T and to_out = (η/s) [U_1 … U_K] with s² /√p = τ.

The model is a plain token-to-token stack, (B, N, d) -> (B, N, d), the form the SNR claim is
about; put a head on it to classify (no registry presets: it is not an image classifier).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from crate_edu.models import base
from crate_edu.models.crate import MSSA

__all__ = ["AoTConfig", "AoTLayer", "AoT", "token_snr", "snr_by_layer"]


@dataclass(frozen=True)
class AoTConfig:
    """An attention-only transformer: ``depth`` layers of Z + MSSA(LN Z), width ``dim``.

    Args:
        dim: token width d.
        depth: number of layers L.
        heads: number of subspaces K.
        dim_head: subspace dimension p (default dim // heads).
        norm: LayerNorm before each MSSA (the paper's practice); False: Z + MSSA(Z).
        dropout: on the attention probabilities and the output (0: the derivation).
        reference: the official arithmetic (explicit N × N softmax) instead of the fast path.
    """

    dim: int = 64
    depth: int = 8
    heads: int = 4
    dim_head: int | None = None
    norm: bool = True
    dropout: float = 0.0
    reference: bool = False

    def __post_init__(self):
        base.check_positive_int("dim", self.dim)
        base.check_positive_int("depth", self.depth)
        base.check_positive_int("heads", self.heads)
        base.check_positive_int("dim_head", self.dim_head, allow_none=True)
        base.check_flag("norm", self.norm)
        base.check_flag("reference", self.reference)
        base.check_float("dropout", self.dropout, 0.0, 1.0)
        if self.dim_head is None and self.dim % self.heads:
            raise ValueError(
                f"dim={self.dim} is not divisible by heads={self.heads}; choose dim_head or a divisor of dim"
            )

    @property
    def head_dim(self) -> int:
        return self.dim_head or self.dim // self.heads


class AoTLayer(nn.Module):
    """One AoT layer: Z^{ℓ+1} = Z^ℓ + MSSA(LN(Z^ℓ))  (no MLP, no ISTA)."""

    def __init__(self, cfg: AoTConfig):
        super().__init__()
        self.norm = nn.LayerNorm(cfg.dim) if cfg.norm else nn.Identity()
        self.attn = MSSA(
            cfg.dim, cfg.heads, cfg.head_dim, cfg.dropout, out_bias=False, reference=cfg.reference
        )

    def forward(self, x: Tensor) -> Tensor:
        """(B, N, d) -> (B, N, d)."""
        return x + self.attn(self.norm(x))  # skip connection around the attention, nothing else


class AoT(nn.Module):
    """The attention-only transformer: ``depth`` :class:`AoTLayer` s, tokens in, tokens out."""

    def __init__(self, cfg: AoTConfig):
        super().__init__()
        self.cfg = cfg
        self.layers = nn.ModuleList([AoTLayer(cfg) for _ in range(cfg.depth)])

    def forward(self, x: Tensor) -> Tensor:
        """Z^{L+1} from Z^1: (B, N, d) -> (B, N, d)."""
        for layer in self.layers:
            x = layer(x)
        return x

    def forward_layers(self, x: Tensor) -> list[Tensor]:
        """[Z^1, Z^2, …, Z^{L+1}]: the input and every layer's output, each (B, N, d)."""
        zs = [x]
        for layer in self.layers:
            zs.append(layer(zs[-1]))
        return zs

    @torch.no_grad()
    def set_subspaces(self, U: Tensor, eta: float = 0.5, tau: float = 1.0) -> AoT:
        """Make every layer the unrolled denoiser with the subspaces U (K, d, p):
        MSSA(Z) = η Σ_k U_k softmax_rows(τ W_k W_k^T) W_k^T with W_k = Z U_k.

        CRATE's MSSA computes to_out(softmax(w w^T/√p) w) with w = qkv(z); with
        qkv = s [U_1 … U_K]^T and to_out = (η/s) [U_1 … U_K] its softmax sees s²/√p ⟨U_k^T z, U_k^T z'⟩,
        so s = (τ √p)^{1/2}. The LayerNorms (if any) are reset to the identity affine map.

        Returns:
            self.
        """
        K, d, p = U.shape if U.ndim == 3 else (None, None, None)
        want = (self.cfg.heads, self.cfg.dim, self.cfg.head_dim)
        if U.ndim != 3 or (K, d, p) != want:
            raise ValueError(
                f"U must have shape (heads, dim, dim_head) = {want}, "
                f"got {tuple(U.shape)}; build the AoTConfig from U's shape"
            )
        base.check_float("eta", eta, 0.0, math.inf)
        base.check_float("tau", tau, 0.0, math.inf)
        s = math.sqrt(tau * math.sqrt(p))
        for layer in self.layers:
            mssa = layer.attn
            if isinstance(mssa.to_out, nn.Identity):
                raise ValueError("heads=1 with dim_head=dim has no output map to set; use dim_head < dim")
            weight = mssa.qkv.weight
            stacked = U.to(dtype=weight.dtype, device=weight.device)  # (K, d, p)
            mssa.qkv.weight.copy_(s * stacked.permute(0, 2, 1).reshape(K * p, d))  # s [U_1 … U_K]^T  (K·p, d)
            mssa.to_out[0].weight.copy_((eta / s) * stacked.permute(1, 0, 2).reshape(d, K * p))  # (d, K·p)
            if isinstance(layer.norm, nn.LayerNorm):
                layer.norm.weight.fill_(1.0)
                layer.norm.bias.zero_()
        return self


def token_snr(Z: Tensor, U: Tensor, labels: Tensor) -> Tensor:
    """Signal-to-noise ratio of the tokens (arXiv 2506.03790's measure), mean over the subspaces:

        SNR(Z_k) = ‖Z_k U_k U_k^T‖_F / ‖Z_k (I − U_k U_k^T)‖_F

    Z_k are the tokens of subspace k (rows of Z with ``labels == k``): the signal is each token's
    component on its own subspace, the noise everything else.

    Args:
        Z: (..., N, d) tokens (a leading batch is pooled). U: (K, d, p) orthonormal bases.
        labels: (N,) the subspace of each token.

    Returns:
        0-dim tensor.
    """
    if labels.shape != Z.shape[-2:-1]:
        raise ValueError(f"labels must have shape (N,) = {tuple(Z.shape[-2:-1])}, got {tuple(labels.shape)}")
    U = U.to(dtype=Z.dtype, device=Z.device)
    ratios = []
    for k in labels.unique().tolist():
        Zk = Z[..., labels == k, :]  # (..., N_k, d)
        signal = Zk @ U[k] @ U[k].T  # projection on its own subspace                         (..., N_k, d)
        ratios.append(signal.norm() / (Zk - signal).norm())
    return torch.stack(ratios).mean()


@torch.no_grad()
def snr_by_layer(model: AoT, Z: Tensor, U: Tensor, labels: Tensor) -> list[float]:
    """[SNR(Z^1), …, SNR(Z^{L+1})]: :func:`token_snr` of the input and of every layer's output."""
    return [token_snr(z, U, labels).item() for z in model.forward_layers(Z)]
