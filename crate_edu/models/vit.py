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

from crate_edu.models.base import ClassifierConfig, ImageClassifier, check_positive_int
from crate_edu.models.blocks import LayerTrace, PreNorm, Transformer
from crate_edu.models.crate import PatchEmbedding

__all__ = ["ViTConfig", "ViT", "Attention", "FeedForward", "ViTLayer"]


@dataclass(frozen=True)
class ViTConfig(ClassifierConfig):
    """Configuration of the ViT baseline (defaults: ViT-T/16 at 224 px)."""

    dim: int = 192
    heads: int = 3
    mlp_dim: int | None = None  # default 4 · dim

    def __post_init__(self):
        super().__post_init__()
        check_positive_int("mlp_dim", self.mlp_dim, allow_none=True)

    @property
    def hidden_dim(self) -> int:
        return self.mlp_dim if self.mlp_dim is not None else 4 * self.dim


class Attention(nn.Module):
    """Standard multi-head self-attention: softmax(q k^T / sqrt(p)) v with separate q, k, v."""

    def __init__(self, dim: int, heads: int, dim_head: int, dropout: float = 0.0, literal: bool = False):
        super().__init__()
        inner_dim = heads * dim_head
        self.heads = heads
        self.scale = dim_head**-0.5
        self.dropout_p = dropout
        self.literal = literal
        self.dropout = nn.Dropout(dropout)
        self.to_qkv = nn.Linear(dim, 3 * inner_dim, bias=False)
        self.to_out = nn.Sequential(nn.Linear(inner_dim, dim), nn.Dropout(dropout))

    def qkv_heads(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Queries, keys and values per head: (B, N, d) -> three (B, h, N, p)."""
        q, k, v = (
            rearrange(t, "b n (h p) -> b h n p", h=self.heads) for t in self.to_qkv(x).chunk(3, dim=-1)
        )
        return q, k, v

    def forward_parts(self, x: Tensor, need_attn: bool = False) -> tuple[Tensor, Tensor, Tensor | None]:
        """Output (B, N, d), keys (B, h, N, p) and, if asked, attention (B, h, N, N)."""
        q, k, v = self.qkv_heads(x)
        if self.literal or need_attn:
            attn = torch.softmax(q @ k.transpose(-1, -2) * self.scale, dim=-1)  # (B, h, N, N)
            out = self.dropout(attn) @ v
        else:
            attn = None
            out = F.scaled_dot_product_attention(
                q, k, v, dropout_p=self.dropout_p if self.training else 0.0, scale=self.scale
            )
        return self.to_out(rearrange(out, "b h n p -> b n (h p)")), k, attn

    def forward_rows(self, x: Tensor, rows: int) -> Tensor:
        """The output at the first ``rows`` tokens (queries), every token a key and a value:
        (B, N, d) -> (B, rows, d), equal to ``self(x)[:, :rows]`` (literal arithmetic)."""
        q, k, v = self.qkv_heads(x)
        attn = torch.softmax(q[:, :, :rows] @ k.transpose(-1, -2) * self.scale, dim=-1)  # (B, h, rows, N)
        return self.to_out(rearrange(self.dropout(attn) @ v, "b h n p -> b n (h p)"))

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_parts(x)[0]


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


class ViTLayer(nn.ModuleList):
    """``[PreNorm(Attention), PreNorm(FeedForward)]``, both residual."""

    def __init__(self, dim: int, heads: int, dim_head: int, hidden_dim: int, dropout: float, literal: bool):
        super().__init__(
            [
                PreNorm(dim, Attention(dim, heads, dim_head, dropout, literal)),
                PreNorm(dim, FeedForward(dim, hidden_dim, dropout)),
            ]
        )

    def forward_rows(self, x: Tensor, rows: int) -> Tensor:
        """The layer's output at the first ``rows`` tokens, (B, rows, d): the MLP is token-wise."""
        attn_block, mlp_block = self[0], self[1]
        z_half = x[:, :rows] + attn_block.fn.forward_rows(attn_block.norm(x), rows)
        return z_half + mlp_block(z_half)

    def forward(self, x: Tensor, return_trace: bool = False) -> Tensor | tuple[Tensor, LayerTrace]:
        attn_block, mlp_block = self[0], self[1]
        if not return_trace:
            z_half = x + attn_block(x)
            return z_half + mlp_block(z_half)
        out, k, attn = attn_block.fn.forward_parts(attn_block.norm(x), need_attn=True)
        z_half = x + out
        z_out = z_half + mlp_block(z_half)
        return z_out, LayerTrace(proj=k, attn=attn, z_half=z_half, z_out=z_out)


class ViT(ImageClassifier):
    """ViT baseline classifier. ``ViT(ViTConfig(...))`` or ``ViT(dim=..., depth=..., ...)``."""

    def __init__(self, config: ViTConfig | None = None, **kwargs):
        super().__init__()
        cfg = config if config is not None else ViTConfig(**kwargs)
        self.config = cfg
        self.to_patch_embedding = PatchEmbedding(cfg.patch_size, cfg.channels, cfg.dim)
        self.init_tokens(cfg)
        self.transformer = Transformer(
            [
                ViTLayer(cfg.dim, cfg.heads, cfg.head_dim, cfg.hidden_dim, cfg.dropout, cfg.literal)
                for _ in range(cfg.depth)
            ]
        )
        self.mlp_head = nn.Sequential(nn.LayerNorm(cfg.dim), nn.Linear(cfg.dim, cfg.num_classes))

    def embed(self, img: Tensor) -> Tensor:
        self.check_input(img)
        return self.add_cls_and_positions(self.to_patch_embedding(img))  # (B, N + 1, d)
