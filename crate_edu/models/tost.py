"""ToST: the Token Statistics Transformer (Wu et al., ICLR 2025, arXiv 2412.17810), in one file.

Read it top to bottom next to the official ``tost_vision/tost.py`` and ``tost_lang/model_TSSA.py``
(RobinWu218/ToST; facts with file and line in docs/notes/tost_redunet_official_code.md §1–§2):

1. **the derivation**: the variational compression term R^c_var and the exact rate it bounds; TSSA
   is a gradient step on R^c_var with the memberships Π held fixed (checked against autograd in
   ``tests/unit/models/test_tost.py``);
2. **TSSA**, token statistics self-attention (official ``AttentionTSSA``), and its causal form for
   language (official ``CausalSelfAttention_TSSA``), a drop-in attention for the CRATE family
   (``CRATELMConfig(attention="tssa")``);
3. **the ToST classifier**, XCiT's layout with TSSA blocks: a convolutional patch embedding, Fourier
   positions, TSSA blocks with LayerScale and a GELU MLP, two class-attention blocks, the head::

    w       = x Wᵀ + b                                   # one projection, heads split    (B, h, N, p)
    Π[k, j] = softmax_k(temp_k · Σ_i w[k, j, i]² / Σ_j' w[k, j', i]²)   # over HEADS       (B, h, N)
    dots    = Σ_j Π[k, j] w[k, j]² / Σ_j Π[k, j]         # Π-weighted second moment       (B, h, 1, p)
    TSSA(x) = to_out(−Π w ⊙ 1 / (1 + dots))              # no N × N matrix: O(N·d)        (B, N, d)

    x       = ConvPatchEmbed(img) + FourierPositions       # patch tokens, no [CLS] yet     (B, N, d)
    x       = x + γ1 ⊙ TSSA(LN(x));  x = x + γ2 ⊙ MLP(LN(x))            # depth TSSA blocks
    x       = [cls; x];  x = ClassAttentionBlock(x) × 2                 # CaiT's class attention
    logits  = head(LN(x)[:, 0])                                        # (B, num_classes)

Tokens are rows, as in :mod:`crate_edu.coding_rate`. The parameter names and their order are the
official ones, so an official state dict loads with ``load_state_dict`` (SyncBatchNorm's entries
load into ``BatchNorm2d``). Equal to the official code on reference fixtures
(``tests/fixtures/make_tost_fixtures.py``), max |Δ| ≤ 1e-5 in float32.

Departures from the official code, each said again beside its line:

- the convolutional stem also takes patch sizes 2 and 4 (one stride-2 stage per halving; the
  official code takes 8 and 16 only, and builds them by the same rule), so that 32-px images get
  8 × 8 tokens (preset ``tost_nano_cifar``);
- stochastic depth (``drop_path``) is not implemented (the 12-layer recipes set it to 0 or 0.05);
- in training mode ``forward`` returns the logits, not the pair ``(logits, logits)``;
- ``pool="mean"`` (mean of all final tokens) is offered beside the official [CLS] pooling.

Departures from the derivation (as in CRATE, docs/design.md): the output map ``to_out`` is a
learned Linear with a bias instead of [U_1 … U_K], the projection has a bias, the step size is
folded into LayerScale γ1, and Π comes from a softmax of column-normalised statistics with a
learned temperature (the paper's eq. 10) rather than from the objective itself.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import NamedTuple

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from crate_edu.models import base

__all__ = [
    "variational_compression_rate",
    "weighted_compression_rate",
    "TSSAParts",
    "tssa_membership",
    "tssa_update",
    "TSSA",
    "causal_tssa_membership",
    "causal_tssa_update",
    "CausalTSSA",
    "ConvPatchEmbed",
    "PositionalEncodingFourier",
    "GELUMLP",
    "ToSTBlock",
    "ClassAttention",
    "ClassAttentionBlock",
    "ToSTLayerTrace",
    "ToSTConfig",
    "ToST",
]


# ================================================================================= 1. derivation
def variational_compression_rate(W: Tensor, Pi: Tensor, alpha: float = 1.0) -> Tensor:
    """The variational compression term of ToST, R^c_var(W, Π), in nats.

    W (..., K, N, p) holds the projected tokens of each head (row j of head k is w_kj = U_k^T z_j);
    Pi (..., K, N) the membership of token j in head k (each column sums to 1 over k). With
    n_k = Σ_j Π_kj tokens in head k and α = p / ε² (TSSA: α = 1)::

        R^c_var = Σ_k n_k / (2N) · Σ_i log(1 + α · Σ_j Π_kj w_kji² / n_k)       # (...)

    It replaces log det(I + α/n_k W_kᵀ diag(Π_k) W_k) by the sum of log(1 + α · diagonal): an upper
    bound (Hadamard's inequality; :func:`weighted_compression_rate` is the exact rate), equal when
    the Π-weighted second moment of head k is diagonal. Its gradient at fixed Π is TSSA's update::

        ∂R^c_var / ∂w_kj = (α / N) · Π_kj w_kj / (1 + α dots_k),   dots_k = Σ_j Π_kj w_kj² / n_k
    """
    N = W.shape[-2]
    n_k = Pi.sum(dim=-1)  # tokens in each head                                          (..., K)
    second_moment = torch.einsum("...kn,...knp->...kp", Pi, W**2) / n_k[..., None]  # dots (..., K, p)
    per_head = torch.log1p(alpha * second_moment).sum(dim=-1)  # Σ_i log(1 + α dots_ki)    (..., K)
    return (n_k / (2 * N) * per_head).sum(dim=-1)  # (...)


def weighted_compression_rate(W: Tensor, Pi: Tensor, alpha: float = 1.0) -> Tensor:
    """The exact rate that :func:`variational_compression_rate` bounds from above, in nats::

    R^c(W, Π) = Σ_k n_k / (2N) · log det(I_p + α / n_k · W_kᵀ diag(Π_k) W_k)       # (...)
    """
    N = W.shape[-2]
    n_k = Pi.sum(dim=-1)  # (..., K)
    gram = torch.einsum("...knp,...kn,...knq->...kpq", W, Pi, W) / n_k[..., None, None]  # (..., K, p, p)
    eye = torch.eye(W.shape[-1], dtype=W.dtype, device=W.device)
    return (n_k / (2 * N) * torch.logdet(eye + alpha * gram)).sum(dim=-1)  # (...)


# ================================================================================ 2. TSSA
class TSSAParts(NamedTuple):
    """What a TSSA block computed (``forward_parts``), for analysis and for the derivation's checks.

    Attributes:
        proj: (B, h, N, p) the projected tokens w (the output of ``qkv`` split by head).
        membership: (B, h, N) Π, the probability that token j belongs to head k (sums to 1 over h).
        update: (B, h, N, p) −Π w / (1 + dots), before the heads are joined and ``to_out`` applied.
        out: (B, N, d) the block's output, equal to ``block(x)``.
    """

    proj: Tensor
    membership: Tensor
    update: Tensor
    out: Tensor


def tssa_membership(w: Tensor, temp: Tensor) -> Tensor:
    """Π (B, h, N) from w (B, h, N, p) and the per-head temperature temp (h, 1) (official :280-284)."""
    w_normed = F.normalize(w, dim=-2)  # each channel unit-norm over the TOKENS, eps 1e-12     (B, h, N, p)
    logits = (w_normed**2).sum(dim=-1) * temp  # temp_k · Σ_i w̃_kji²: temp MULTIPLIES          (B, h, N)
    return torch.softmax(logits, dim=1)  # over HEADS (dim 1), not over tokens              (B, h, N)


def tssa_update(w: Tensor, Pi: Tensor) -> Tensor:
    """−Π w / (1 + dots) (B, h, N, p): TSSA before ``to_out`` (official :286-290); Π held fixed, it
    is −N · ∇_w R^c_var(w, Π) with α = 1 (:func:`variational_compression_rate`)."""
    weights = Pi / (Pi.sum(dim=-1, keepdim=True) + 1e-8)  # Π_kj / n_k, sums to ~1 over tokens  (B, h, N)
    dots = weights.unsqueeze(-2) @ w**2  # Π-weighted mean of the RAW w²                      (B, h, 1, p)
    attn = 1.0 / (1 + dots)  # (B, h, 1, p)
    return -(w * Pi.unsqueeze(-1)) * attn  # (B, h, N, p)


class TSSA(nn.Module):
    """Token statistics self-attention (official ``AttentionTSSA``, tost.py:257-297).

    ``qkv`` is ONE (d × d) projection despite its name (with a bias in every preset); its output w,
    split into h heads of width p = d / h, serves the membership, the statistics and the output::

        w    = qkv(x)                                    # (B, h, N, p)
        Π    = softmax_heads(temp · Σ_i normalize_tokens(w)²)          # (B, h, N)
        out  = to_out(−Π w / (1 + Π-weighted mean of w²))              # (B, N, d)

    Args:
        dim: token width d (= h · p).
        heads: number of heads h.
        qkv_bias: whether ``qkv`` has a bias (official presets: True).
        attn_dropout: dropout on the factor 1 / (1 + dots) (official: 0).
        dropout: dropout after ``to_out`` (official ``proj_drop`` = ``drop_rate``, 0 by default).
    """

    def __init__(
        self,
        dim: int,
        heads: int = 8,
        qkv_bias: bool = False,
        attn_dropout: float = 0.0,
        dropout: float = 0.0,
    ):
        super().__init__()
        self.heads = heads
        self.attn_drop = nn.Dropout(attn_dropout)
        self.qkv = nn.Linear(dim, dim, bias=qkv_bias)  # w = U^T x (+ b), all heads at once
        self.temp = nn.Parameter(torch.ones(heads, 1))  # learned per-head temperature, starts at 1
        self.to_out = nn.Sequential(nn.Linear(dim, dim), nn.Dropout(dropout))  # always with a bias

    def forward(self, x: Tensor) -> Tensor:
        """TSSA(x): (B, N, d) -> (B, N, d), cost linear in N."""
        return self.forward_parts(x).out

    def forward_parts(self, x: Tensor) -> TSSAParts:
        """w, Π, the update −Π w / (1 + dots) and the output (:class:`TSSAParts`)."""
        w = rearrange(
            self.qkv(x), "b n (h p) -> b h n p", h=self.heads
        )  # heads = channel blocks (B, h, N, p)
        Pi = tssa_membership(w, self.temp)  # (B, h, N)
        weights = Pi / (Pi.sum(dim=-1, keepdim=True) + 1e-8)  # Π_kj / n_k                     (B, h, N)
        dots = weights.unsqueeze(-2) @ w**2  # Σ_j Π_kj w_kj² / n_k                              (B, h, 1, p)
        attn = self.attn_drop(1.0 / (1 + dots))  # 1 / (1 + dots)                              (B, h, 1, p)
        update = -(w * Pi.unsqueeze(-1)) * attn  # −Π w / (1 + dots)                           (B, h, N, p)
        out = self.to_out(rearrange(update, "b h n p -> b n (h p)"))  # (B, N, d)
        return TSSAParts(proj=w, membership=Pi, update=update, out=out)

    def no_weight_decay(self) -> set[str]:
        """The official exemption (tost.py:295-297; timm 0.4.12 never asks a submodule, so the
        official vision runs probably decayed ``temp`` anyway: docs/notes §1.6)."""
        return {"temp"}


def causal_tssa_membership(w: Tensor, temp: Tensor, denom_bias: Tensor) -> Tensor:
    """Causal Π (B, h, T) (official model_TSSA.py:103-108): each channel normalised by its running
    sum of squares over tokens 0 .. t, plus a learned per-head, per-position offset."""
    T = w.shape[-2]
    w_sq = w**2  # (B, h, T, p)
    denom = torch.cumsum(w_sq, dim=-2).clamp_min(1e-12)  # Σ_{s≤t} w_s², clamped SQUARED     (B, h, T, p)
    w_normed = w_sq / denom + denom_bias[:, :T, :]  # + offset (h, T, 1), on every channel      (B, h, T, p)
    return torch.softmax(w_normed.sum(dim=-1) * temp, dim=1)  # over HEADS                     (B, h, T)


def causal_tssa_update(w: Tensor, Pi: Tensor) -> Tensor:
    """−Π w / (1 + dots_t) (B, h, T, p), dots_t the Π-weighted mean of w² over tokens 0 .. t
    (official :109-112); Π held fixed, row t is −(t + 1) · ∇_{w_t} R^c_var(w_{≤t}, Π_{≤t})."""
    dots = torch.cumsum(w**2 * Pi.unsqueeze(-1), dim=-2) / (Pi.cumsum(dim=-1) + 1e-8).unsqueeze(
        -1
    )  # (B, h, T, p)
    return -(w * Pi.unsqueeze(-1)) * (1.0 / (1 + dots))  # (B, h, T, p)


class CausalTSSA(nn.Module):
    """Causal token statistics self-attention (official ``CausalSelfAttention_TSSA``).

    Row t sees the statistics of tokens 0 .. t only, through running sums (``cumsum``) along the
    tokens: no mask and no T × T matrix, so the cost is linear in T::

        w     = c_attn(x)                                                  # (B, h, T, p)
        Π_t   = softmax_heads(temp · Σ_i (w_ti² / Σ_{s≤t} w_si² + denom_bias[h, t]))     # (B, h, T)
        dots_t = Σ_{s≤t} Π_s w_s² / (Σ_{s≤t} Π_s + 1e-8)                               # (B, h, T, p)
        out   = c_proj(−Π w / (1 + dots))                                  # (B, T, d)

    ``denom_bias`` (h, block_size, 1), zero at first, ties the block to T ≤ block_size. Evaluated on
    a whole sequence this is NOT the vision layer, not even at the last position (its Π uses prefix
    statistics). The official language runs have no biases (``bias=False``); in CRATE-LM it takes
    CausalMSSA's place with CausalMSSA's biases (``c_attn`` none, ``c_proj`` one).

    Args:
        dim: token width d; heads: h (p = d / h); block_size: the longest context T_max.
        qkv_bias, out_bias: biases of ``c_attn`` and ``c_proj`` (official: both ``config.bias``).
        dropout: on 1 / (1 + dots) and after ``c_proj`` (official: 0).
    """

    def __init__(
        self,
        dim: int,
        heads: int,
        block_size: int,
        qkv_bias: bool = False,
        out_bias: bool = True,
        dropout: float = 0.0,
    ):
        super().__init__()
        self.heads = heads
        self.c_attn = nn.Linear(dim, dim, bias=qkv_bias)  # w = U^T x, one projection
        self.c_proj = nn.Linear(dim, dim, bias=out_bias)  # the learned output map
        self.attn_dropout = nn.Dropout(dropout)
        self.resid_dropout = nn.Dropout(dropout)
        self.temp = nn.Parameter(torch.ones(heads, 1))  # per-head temperature (h, 1)
        self.denom_bias = nn.Parameter(
            torch.zeros(heads, block_size, 1)
        )  # per-head, per-position (h, T_max, 1)

    def no_weight_decay(self) -> set[str]:
        """Parameters the official tost_lang run keeps out of weight decay (docs/notes §2)."""
        return {"temp", "denom_bias"}

    def forward(self, x: Tensor) -> Tensor:
        """(B, T, d) -> (B, T, d); row t depends on rows 0 .. t of x only."""
        return self.forward_parts(x).out

    def forward_parts(self, x: Tensor) -> base.AttentionParts:
        """Projections w (B, h, T, p), the membership Π (B, h, T) in the ``attn`` field (TSSA has no
        T × T matrix) and the output (B, T, d)."""
        w = rearrange(self.c_attn(x), "b t (h p) -> b h t p", h=self.heads)  # (B, h, T, p)
        Pi = causal_tssa_membership(w, self.temp, self.denom_bias)  # (B, h, T)
        dots = torch.cumsum(w**2 * Pi.unsqueeze(-1), dim=-2) / (Pi.cumsum(dim=-1) + 1e-8).unsqueeze(
            -1
        )  # (B, h, T, p)
        attn = self.attn_dropout(1.0 / (1 + dots))  # (B, h, T, p)
        y = -(w * Pi.unsqueeze(-1)) * attn  # −Π w / (1 + dots)                               (B, h, T, p)
        y = rearrange(y, "b h t p -> b t (h p)")  # (B, T, d)
        return base.AttentionParts(proj=w, attn=Pi, out=self.resid_dropout(self.c_proj(y)))


# =========================================================================== 3. the classifier
def conv3x3(in_planes: int, out_planes: int, stride: int = 1) -> nn.Sequential:
    """3 × 3 convolution without bias, then batch norm (official: SyncBatchNorm; same entries)."""
    return nn.Sequential(
        nn.Conv2d(in_planes, out_planes, kernel_size=3, stride=stride, padding=1, bias=False),
        nn.BatchNorm2d(out_planes),
    )


class ConvPatchEmbed(nn.Module):
    """Images to patch tokens by stride-2 convolutions (official ``ConvPatchEmbed``, tost.py:69-109).

    Patch 16: four stages 3 → d/8 → d/4 → d/2 → d; patch 8: three, 3 → d/4 → d/2 → d; GELU between
    stages, none after the last. Departure: patch 4 (3 → d/2 → d) and 2 (3 → d) follow the same rule
    (one stage per halving); the official code raises for them. Tokens come out row-major.
    """

    def __init__(self, patch_size: int = 16, channels: int = 3, dim: int = 768):
        super().__init__()
        stages = int(math.log2(patch_size))  # 16 -> 4, 8 -> 3, 4 -> 2, 2 -> 1
        widths = [channels] + [dim // 2 ** (stages - 1 - s) for s in range(stages)]  # e.g. 3, d/8, …, d
        layers: list[nn.Module] = []
        for s in range(stages):
            if s:
                layers.append(nn.GELU())
            layers.append(conv3x3(widths[s], widths[s + 1], stride=2))
        self.proj = nn.Sequential(*layers)  # keys proj.0, proj.2, … as officially

    def forward(self, img: Tensor) -> tuple[Tensor, tuple[int, int]]:
        """Images (B, C, H, W) -> tokens (B, Hp·Wp, d) and the grid (Hp, Wp)."""
        x = self.proj(img)  # (B, d, Hp, Wp)
        Hp, Wp = x.shape[2], x.shape[3]
        return x.flatten(2).transpose(1, 2), (Hp, Wp)  # (B, Hp·Wp, d)


class PositionalEncodingFourier(nn.Module):
    """DETR's 2-D sine/cosine code projected by a learned 1 × 1 convolution (tost.py:21-56).

    Rows and columns are scaled to (0, 2π]; 32 frequencies each give 64 channels, mapped to d.
    """

    def __init__(self, hidden_dim: int = 32, dim: int = 768, temperature: float = 10000):
        super().__init__()
        self.token_projection = nn.Conv2d(hidden_dim * 2, dim, kernel_size=1)  # (d, 64, 1, 1) + bias
        self.scale = 2 * math.pi
        self.temperature = temperature
        self.hidden_dim = hidden_dim

    def forward(self, B: int, H: int, W: int) -> Tensor:
        """The code for a (H, W) grid: (B, d, H, W)."""
        device = self.token_projection.weight.device
        ones = torch.ones(B, H, W, device=device)
        y_embed = ones.cumsum(1)  # row index 1 .. H                                         (B, H, W)
        x_embed = ones.cumsum(2)  # column index 1 .. W                                      (B, H, W)
        y_embed = y_embed / (y_embed[:, -1:, :] + 1e-6) * self.scale  # (0, 2π]
        x_embed = x_embed / (x_embed[:, :, -1:] + 1e-6) * self.scale
        dim_t = torch.arange(self.hidden_dim, dtype=torch.float32, device=device)
        dim_t = self.temperature ** (2 * (dim_t // 2) / self.hidden_dim)  # frequencies       (32,)
        pos_x = x_embed[..., None] / dim_t  # (B, H, W, 32)
        pos_y = y_embed[..., None] / dim_t
        pos_x = torch.stack((pos_x[..., 0::2].sin(), pos_x[..., 1::2].cos()), dim=4).flatten(
            3
        )  # (B, H, W, 32)
        pos_y = torch.stack((pos_y[..., 0::2].sin(), pos_y[..., 1::2].cos()), dim=4).flatten(3)
        pos = torch.cat((pos_y, pos_x), dim=3).permute(0, 3, 1, 2)  # (B, 64, H, W)
        return self.token_projection(pos.to(self.token_projection.weight.dtype))  # (B, d, H, W)


class GELUMLP(nn.Module):
    """timm's ``Mlp``: fc1, GELU, dropout, fc2, dropout (keys ``fc1``, ``fc2``)."""

    def __init__(self, dim: int, hidden: int, dropout: float = 0.0):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        return self.drop(self.fc2(self.drop(self.act(self.fc1(x)))))  # (…, d)


class ToSTLayerTrace(NamedTuple):
    """What one TSSA block computed, for analysis without hooks.

    Attributes:
        proj: (B, h, N, p) the projected tokens w of LN(x).
        membership: (B, h, N) Π, each token's distribution over the heads.
        z_half: (B, N, d) the stream after the TSSA step, x + γ1 ⊙ TSSA(LN(x)).
        z_out: (B, N, d) the block output, after the MLP step.
    """

    proj: Tensor
    membership: Tensor
    z_half: Tensor
    z_out: Tensor


class ToSTBlock(nn.Module):
    """One ToST block (official ``Block``, tost.py:299-327), pre-norm with LayerScale::

    x = x + γ1 ⊙ TSSA(LN_1(x))       # compression: a gradient step on R^c_var
    x = x + γ2 ⊙ MLP(LN_2(x))        # a GELU MLP, not CRATE's ISTA block
    """

    def __init__(
        self,
        dim: int,
        heads: int,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        dropout: float = 0.0,
        eta: float = 1.0,
    ):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = TSSA(dim, heads, qkv_bias=qkv_bias, dropout=dropout)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = GELUMLP(dim, int(dim * mlp_ratio), dropout)
        self.gamma1 = nn.Parameter(eta * torch.ones(dim))  # LayerScale, initialised at η
        self.gamma2 = nn.Parameter(eta * torch.ones(dim))

    def forward(self, x: Tensor) -> Tensor:
        """(B, N, d) -> (B, N, d)."""
        x = x + self.gamma1 * self.attn(self.norm1(x))  # (B, N, d)
        return x + self.gamma2 * self.mlp(self.norm2(x))  # (B, N, d)

    def forward_trace(self, x: Tensor) -> tuple[Tensor, ToSTLayerTrace]:
        parts = self.attn.forward_parts(self.norm1(x))
        z_half = x + self.gamma1 * parts.out
        z_out = z_half + self.gamma2 * self.mlp(self.norm2(z_half))
        return z_out, ToSTLayerTrace(parts.proj, parts.membership, z_half, z_out)


class ClassAttention(nn.Module):
    """CaiT's class attention (tost.py:112-141): softmax attention of the [CLS] query over all
    tokens; only the [CLS] row is computed, the other rows are the input passed through."""

    def __init__(self, dim: int, heads: int, qkv_bias: bool = True, dropout: float = 0.0):
        super().__init__()
        self.heads = heads
        self.scale = (dim // heads) ** -0.5
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)  # separate q, k, v
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(dropout)

    def forward_cls(self, x: Tensor) -> Tensor:
        """The [CLS] row's update: (B, N + 1, d) -> (B, 1, d)."""
        q, k, v = rearrange(self.qkv(x), "b n (three h p) -> three b h n p", three=3, h=self.heads)
        attn = ((q[:, :, :1] * k).sum(dim=-1) * self.scale).softmax(dim=-1)  # (B, h, N + 1)
        cls = rearrange(attn.unsqueeze(2) @ v, "b h one p -> b one (h p)")  # (B, 1, d)
        return self.proj_drop(self.proj(cls))  # (B, 1, d)

    def forward(self, x: Tensor) -> Tensor:
        """(B, N + 1, d) -> [CLS update; x[:, 1:]] (B, N + 1, d), as officially."""
        return torch.cat([self.forward_cls(x), x[:, 1:]], dim=1)


class ClassAttentionBlock(base.Block):
    """CaiT's class-attention block with ``tokens_norm=True`` (tost.py:144-186)::

    x = x + γ1 ⊙ ClassAttention(LN_1(x))      # patch rows: x + γ1 ⊙ LN_1(x), the attention passes them
    x = LN_2(x)                                # on ALL tokens
    x = x + [γ2 ⊙ MLP(x_cls); x_patches]      # so the patch rows come out as 2 · LN_2(·)

    ``reference=True`` computes every row as the official code; ``False`` is the same, and
    :meth:`forward_cls` gives the [CLS] row alone (the model's last block, when the head reads only
    [CLS]: :meth:`ToST.prunes_last_layer`).
    """

    def __init__(
        self,
        dim: int,
        heads: int,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        dropout: float = 0.0,
        eta: float = 1.0,
        reference: bool = False,
    ):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = ClassAttention(dim, heads, qkv_bias, dropout)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = GELUMLP(dim, int(dim * mlp_ratio), dropout)
        self.gamma1 = nn.Parameter(eta * torch.ones(dim))
        self.gamma2 = nn.Parameter(eta * torch.ones(dim))
        self.reference = reference

    def forward(self, x: Tensor) -> Tensor:
        """(B, N + 1, d) -> (B, N + 1, d)."""
        x = x + self.gamma1 * self.attn(self.norm1(x))  # (B, N + 1, d)
        x = self.norm2(x)  # tokens_norm: every row                                        (B, N + 1, d)
        cls = self.gamma2 * self.mlp(x[:, :1])  # (B, 1, d)
        return x + torch.cat([cls, x[:, 1:]], dim=1)  # (B, N + 1, d)

    def forward_cls(self, x: Tensor) -> Tensor:
        """``forward(x)[:, :1]`` computed for the [CLS] row alone: (B, N + 1, d) -> (B, 1, d)."""
        cls = x[:, :1] + self.gamma1 * self.attn.forward_cls(self.norm1(x))  # (B, 1, d)
        cls = self.norm2(cls)
        return cls + self.gamma2 * self.mlp(cls)  # (B, 1, d)


@dataclass(frozen=True)
class ToSTConfig(base.ClassifierConfig):
    """Configuration of a ToST classifier (defaults: ToST-T/16, ``tost_cab_tiny_12_p16``, 224 px).

    ``patch_size`` is 2, 4, 8 or 16 (official: 8 or 16); ``dim_head`` must be None or dim / heads
    (TSSA's projection is d × d); ``eta`` initialises LayerScale (official 1.0 at depth 12, 1e-5 at
    depth 24); ``cls_attn_layers`` class-attention blocks (official 2); ``dropout`` is the official
    ``drop_rate`` inside the blocks, ``emb_dropout`` its use on the positions (``pos_drop``).
    """

    dim: int = 192
    depth: int = 12
    heads: int = 4
    mlp_ratio: float = 4.0
    eta: float = 1.0
    cls_attn_layers: int = 2
    qkv_bias: bool = True

    def __post_init__(self):
        super().__post_init__()
        ph, pw = base.pair(self.patch_size)
        if ph != pw or ph not in (2, 4, 8, 16):
            raise ValueError(
                f"ToST's convolutional stem takes square patches of 2, 4, 8 or 16 pixels (official: 8, 16), "
                f"got patch_size={self.patch_size!r}"
            )
        stride = ph // 2
        if self.dim % stride:
            raise ValueError(
                f"dim {self.dim} must be divisible by {stride} for patch {ph} "
                f"(its first stage is dim/{stride} wide)"
            )
        if self.dim_head is not None and self.dim_head * self.heads != self.dim:
            raise ValueError(
                f"TSSA projects d to d, so dim_head must be dim / heads = {self.dim / self.heads:g}, "
                f"got dim_head={self.dim_head}; leave it unset"
            )
        base.check_float("mlp_ratio", self.mlp_ratio, 0.0, math.inf)
        base.check_float("eta", self.eta, 0.0, math.inf)
        base.check_positive_int("cls_attn_layers", self.cls_attn_layers, minimum=0)
        base.check_flag("qkv_bias", self.qkv_bias)
        if self.cls_attn_layers == 0 and self.pool == "cls":
            raise ValueError("with cls_attn_layers=0 the [CLS] token never sees the patches; use pool='mean'")


class ToST(nn.Module):
    """The ToST classifier (official ``VisionTransformer`` with ``AttentionTSSA``, tost.py:330-444).

    ``ToST(ToSTConfig(...))`` or ``ToST(dim=..., depth=..., ...)``. ``forward(img)`` -> logits;
    ``forward_features`` -> the normalised tokens, [CLS] first (B, N + 1, d); ``forward_head``;
    ``forward_intermediates(img)`` -> (logits, [ToSTLayerTrace per TSSA block]) with Π;
    ``reset_classifier(num_classes)``; ``num_params()``.
    """

    #: Whether ``forward`` computes the last class-attention block's [CLS] row only (exact: the
    #: head reads that row alone). Set it to False to compute every row, as the official code does.
    prune_last_layer: bool = True

    def __init__(self, config: ToSTConfig | None = None, **kwargs):
        super().__init__()
        cfg = config if config is not None else ToSTConfig(**kwargs)
        self.config = cfg
        d = cfg.dim
        self.cls_token = nn.Parameter(torch.zeros(1, 1, d))  # appended AFTER the TSSA blocks
        self.patch_embed = ConvPatchEmbed(base.pair(cfg.patch_size)[0], cfg.channels, d)
        self.pos_drop = nn.Dropout(cfg.emb_dropout)
        self.blocks = nn.ModuleList(
            [
                ToSTBlock(d, cfg.heads, cfg.mlp_ratio, cfg.qkv_bias, cfg.dropout, cfg.eta)
                for _ in range(cfg.depth)
            ]
        )
        self.cls_attn_blocks = nn.ModuleList(
            [
                ClassAttentionBlock(
                    d, cfg.heads, cfg.mlp_ratio, cfg.qkv_bias, cfg.dropout, cfg.eta, cfg.reference
                )
                for _ in range(cfg.cls_attn_layers)
            ]
        )
        self.norm = nn.LayerNorm(d, eps=1e-6)
        self.head = nn.Linear(d, cfg.num_classes)
        self.pos_embeder = PositionalEncodingFourier(dim=d)  # the official spelling
        nn.init.trunc_normal_(self.cls_token, std=0.02)
        self.apply(self.init_weights)

    @staticmethod
    def init_weights(m: nn.Module) -> None:
        """The official initialisation: Linear weights truncated normal (std 0.02), biases 0,
        LayerNorms 1 and 0; convolutions and batch norms keep torch's defaults."""
        if isinstance(m, nn.Linear):
            nn.init.trunc_normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.LayerNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)

    def check_input(self, img: Tensor) -> None:
        cfg = self.config
        base.check_images(img, cfg.channels, cfg.image_size, type(self).__name__, like=self.cls_token)

    def embed(self, img: Tensor) -> Tensor:
        """Images (B, C, H, W) -> patch tokens with Fourier positions (B, N, d); no [CLS] yet."""
        self.check_input(img)
        x, (Hp, Wp) = self.patch_embed(img)  # (B, N, d)
        pos = (
            self.pos_embeder(x.shape[0], Hp, Wp).reshape(x.shape[0], -1, x.shape[1]).permute(0, 2, 1)
        )  # (B, N, d)
        return self.pos_drop(x + pos)

    def with_cls(self, x: Tensor) -> Tensor:
        """(B, N, d) -> [cls; x] (B, N + 1, d)."""
        return torch.cat((self.cls_token.expand(x.shape[0], -1, -1), x), dim=1)

    def prunes_last_layer(self) -> bool:
        """Whether ``forward`` computes only the [CLS] row of the last class-attention block:
        ``pool='cls'``, :attr:`prune_last_layer` set, and that block not on the reference path."""
        blocks = self.cls_attn_blocks
        return bool(
            self.prune_last_layer and self.config.pool == "cls" and blocks and not blocks[-1].reference
        )

    def forward(self, img: Tensor) -> Tensor:
        """Images (B, C, H, W) -> logits (B, num_classes)."""
        if not self.prunes_last_layer():
            return self.forward_head(self.forward_features(img))
        x = self.embed(img)
        for blk in self.blocks:
            x = blk(x)  # TSSA blocks on the patch tokens                                      (B, N, d)
        x = self.with_cls(x)  # (B, N + 1, d)
        for blk in self.cls_attn_blocks[:-1]:
            x = blk(x)
        cls = self.cls_attn_blocks[-1].forward_cls(x)[:, 0]  # the one row the head reads        (B, d)
        return self.head(self.norm(cls))  # (B, num_classes)

    def forward_features(self, img: Tensor) -> Tensor:
        """Images -> the final normalised tokens, [CLS] first (B, N + 1, d)."""
        x = self.embed(img)
        for blk in self.blocks:
            x = blk(x)  # (B, N, d)
        x = self.with_cls(x)  # (B, N + 1, d)
        for blk in self.cls_attn_blocks:
            x = blk(x)  # (B, N + 1, d)
        return self.norm(x)

    def forward_head(self, tokens: Tensor, pre_logits: bool = False) -> Tensor:
        """(B, N + 1, d) -> logits: the [CLS] token (official) or the mean of all tokens."""
        x = tokens.mean(dim=1) if self.config.pool == "mean" else tokens[:, 0]  # (B, d)
        return x if pre_logits else self.head(x)

    def forward_intermediates(self, img: Tensor) -> tuple[Tensor, list[ToSTLayerTrace]]:
        """The logits and each TSSA block's :class:`ToSTLayerTrace` (w, Π, x^{ℓ+½}, x^{ℓ+1})."""
        x = self.embed(img)
        traces = []
        for blk in self.blocks:
            x, trace = blk.forward_trace(x)
            traces.append(trace)
        x = self.with_cls(x)
        for blk in self.cls_attn_blocks:
            x = blk(x)
        return self.forward_head(self.norm(x)), traces

    def reset_classifier(self, num_classes: int) -> None:
        """Replace the head with a freshly initialised Linear of ``num_classes`` outputs."""
        old = self.head
        self.head = nn.Linear(old.in_features, num_classes).to(old.weight.device, old.weight.dtype)
        self.init_weights(self.head)
        self.config = replace(self.config, num_classes=num_classes)

    def num_params(self, trainable_only: bool = False) -> int:
        return sum(p.numel() for p in self.parameters() if p.requires_grad or not trainable_only)
