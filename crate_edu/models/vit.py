"""A ViT baseline built like CRATE, so that comparisons change only the layer.

It shares CRATE's LN–Linear–LN patch embedding, learned positions, [CLS] token and head; each layer
is the standard pre-norm transformer layer::

    Z^{ℓ+½} = Z^ℓ + MHSA(LN(Z^ℓ))          # separate query, key and value projections
    Z^{ℓ+1} = Z^{ℓ+½} + MLP(LN(Z^{ℓ+½}))    # Linear(d, 4d) – GELU – Linear(4d, d)

Against CRATE: MHSA has three projections where MSSA has one (q = k = v = U^T z), and the MLP has
2·d·mlp_dim weights where ISTA has d².
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from crate_edu.models import base
from crate_edu.models.crate import PatchEmbedding

__all__ = ["Attention", "FeedForward", "ViTLayer", "ViTConfig", "ViT"]


class Attention(base.Block):
    """Standard multi-head self-attention: softmax(q k^T / sqrt(p)) v with separate q, k, v.

    ``reference=True`` writes the softmax out; the default calls PyTorch's
    ``scaled_dot_product_attention``, the same numbers within float rounding.
    """

    def __init__(self, dim: int, heads: int, dim_head: int, dropout: float = 0.0, reference: bool = False):
        super().__init__()
        inner_dim = heads * dim_head
        self.heads = heads
        self.scale = dim_head**-0.5
        self.dropout_p = dropout
        self.reference = reference
        self.dropout = nn.Dropout(dropout)
        self.to_qkv = nn.Linear(dim, 3 * inner_dim, bias=False)
        self.to_out = nn.Sequential(nn.Linear(inner_dim, dim), nn.Dropout(dropout))

    def forward(self, x: Tensor) -> Tensor:
        """(B, N, d) -> (B, N, d)."""
        chunks = self.to_qkv(x).chunk(3, dim=-1)
        q, k, v = (rearrange(t, "b n (h p) -> b h n p", h=self.heads) for t in chunks)  # (B, h, N, p)
        if self.reference:
            attn = torch.softmax(q @ k.transpose(-1, -2) * self.scale, dim=-1)  # (B, h, N, N)
            out = self.dropout(attn) @ v  # (B, h, N, p)
        else:
            dropout = self.dropout_p if self.training else 0.0
            out = F.scaled_dot_product_attention(q, k, v, dropout_p=dropout, scale=self.scale)
        return self.to_out(rearrange(out, "b h n p -> b n (h p)"))  # (B, N, d)

    def forward_parts(self, x: Tensor) -> base.AttentionParts:
        """Keys (B, h, N, p), attention (B, h, N, N) and output (B, N, d), for analysis: always the
        reference arithmetic, so that the N × N attention exists."""
        chunks = self.to_qkv(x).chunk(3, dim=-1)
        q, k, v = (rearrange(t, "b n (h p) -> b h n p", h=self.heads) for t in chunks)  # (B, h, N, p)
        attn = torch.softmax(q @ k.transpose(-1, -2) * self.scale, dim=-1)  # (B, h, N, N)
        out = rearrange(self.dropout(attn) @ v, "b h n p -> b n (h p)")  # (B, N, h·p)
        return base.AttentionParts(proj=k, attn=attn, out=self.to_out(out))


class FeedForward(nn.Sequential):
    """The ViT MLP: Linear(d, hidden) – GELU – Dropout – Linear(hidden, d) – Dropout."""

    def __init__(self, dim: int, hidden_dim: int, dropout: float = 0.0):
        super().__init__(
            nn.Linear(dim, hidden_dim),
            nn.GELU(),
            nn.Dropout(dropout),
            nn.Linear(hidden_dim, dim),
            nn.Dropout(dropout),
        )


class ViTLayer(base.Block, nn.ModuleList):
    """``[PreNorm(Attention), PreNorm(FeedForward)]``, both residual."""

    #: The MLP adds to the stream.
    residual = True

    def __init__(
        self, dim: int, heads: int, dim_head: int, hidden_dim: int, dropout: float, reference: bool = False
    ):
        super().__init__(
            [
                base.PreNorm(dim, Attention(dim, heads, dim_head, dropout, reference)),
                base.PreNorm(dim, FeedForward(dim, hidden_dim, dropout)),
            ]
        )

    def forward(self, x: Tensor, return_trace: bool = False) -> Tensor | tuple[Tensor, base.LayerTrace]:
        """Z^ℓ (B, N, d) -> Z^{ℓ+1} (B, N, d); ``return_trace=True`` is :meth:`forward_trace`."""
        if return_trace:
            return self.forward_trace(x)
        z_half = x + self[0](x)  # Z^{ℓ+½} = Z^ℓ + MHSA(LN(Z^ℓ))                             (B, N, d)
        return z_half + self[1](z_half)  # Z^{ℓ+1} = Z^{ℓ+½} + MLP(LN(Z^{ℓ+½}))               (B, N, d)

    def forward_trace(self, x: Tensor) -> tuple[Tensor, base.LayerTrace]:
        """Z^{ℓ+1} and what the layer computed (:class:`LayerTrace`; ``proj`` holds the keys)."""
        parts = self[0].fn.forward_parts(self[0].norm(x))
        z_half = x + parts.out
        z_out = z_half + self[1](z_half)
        return z_out, base.LayerTrace(proj=parts.proj, attn=parts.attn, z_half=z_half, z_out=z_out)


@dataclass(frozen=True)
class ViTConfig(base.ClassifierConfig):
    """Configuration of the ViT baseline (defaults: ViT-T/16 at 224 px)."""

    dim: int = 192
    heads: int = 3
    mlp_dim: int | None = None  # default 4 · dim

    def __post_init__(self):
        super().__post_init__()
        base.check_positive_int("mlp_dim", self.mlp_dim, allow_none=True)

    @property
    def hidden_dim(self) -> int:
        return self.mlp_dim if self.mlp_dim is not None else 4 * self.dim


class ViT(base.ImageClassifier):
    """ViT baseline classifier. ``ViT(ViTConfig(...))`` or ``ViT(dim=..., depth=..., ...)``."""

    def __init__(self, config: ViTConfig | None = None, **kwargs):
        super().__init__()
        cfg = config if config is not None else ViTConfig(**kwargs)
        self.config = cfg
        self.to_patch_embedding = PatchEmbedding(cfg.patch_size, cfg.channels, cfg.dim)
        self.init_tokens(cfg)
        self.transformer = base.Transformer(
            [
                ViTLayer(cfg.dim, cfg.heads, cfg.head_dim, cfg.hidden_dim, cfg.dropout, cfg.reference)
                for _ in range(cfg.depth)
            ]
        )
        self.mlp_head = nn.Sequential(nn.LayerNorm(cfg.dim), nn.Linear(cfg.dim, cfg.num_classes))

    def embed(self, img: Tensor) -> Tensor:
        self.check_input(img)
        return self.add_cls_and_positions(self.to_patch_embedding(img))  # (B, N + 1, d)
