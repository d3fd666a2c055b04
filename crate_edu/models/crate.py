"""CRATE: the white-box transformer of sparse rate reduction (arXiv 2306.01129).

Faithful to the official ``model/crate.py``: the same parameter names, initialisation and
arithmetic, so official checkpoints load with ``load_state_dict`` (see ``crate_edu.weights``)::

    patches  = rearrange(img, 'b c (h p1) (w p2) -> b (h w) (p1 p2 c)')   # (B, N, P²·C)
    Z^1      = [cls; LN(Linear(LN(patches)))] + pos_embedding              # (B, N + 1, d)
    Z^{ℓ+1}  = CRATELayer(Z^ℓ)                                             # ℓ = 1 … L
    logits   = Linear(LN(Z^{L+1}[:, 0]))                                   # (B, num_classes)
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from einops.layers.torch import Rearrange
from torch import Tensor, nn

from crate_edu.blocks import CRATELayer, Transformer
from crate_edu.models.common import ImageClassifier, check_geometry, pair

__all__ = ["CRATEConfig", "CRATE", "PatchEmbedding"]


@dataclass(frozen=True)
class CRATEConfig:
    """Configuration of a CRATE classifier (official defaults: CRATE-T at 224 px)."""

    image_size: int | tuple[int, int] = 224
    patch_size: int | tuple[int, int] = 16
    num_classes: int = 1000
    dim: int = 384  # token width d
    depth: int = 12  # layers L
    heads: int = 6  # subspaces K
    dim_head: int | None = None  # subspace dimension p (default dim // heads)
    channels: int = 3
    pool: str = "cls"  # 'cls' or 'mean'
    dropout: float = 0.0
    emb_dropout: float = 0.0
    eta: float = 0.1  # ISTA step size η
    lambd: float = 0.1  # ISTA sparsity penalty λ
    literal: bool = False  # derivation-literal arithmetic instead of the fast path

    def __post_init__(self):
        check_geometry(self.image_size, self.patch_size, self.dim, self.heads, self.dim_head, self.pool)

    @property
    def head_dim(self) -> int:
        return self.dim_head if self.dim_head is not None else self.dim // self.heads

    @property
    def num_patches(self) -> int:
        (ih, iw), (ph, pw) = pair(self.image_size), pair(self.patch_size)
        return (ih // ph) * (iw // pw)


class PatchEmbedding(nn.Sequential):
    """The official LN–Linear–LN patch embedding (indices 1, 2, 3 as in the official state dict)."""

    def __init__(self, patch_size, channels: int, dim: int):
        ph, pw = pair(patch_size)
        patch_dim = channels * ph * pw
        super().__init__(
            Rearrange("b c (h p1) (w p2) -> b (h w) (p1 p2 c)", p1=ph, p2=pw),  # (B, N, P²·C)
            nn.LayerNorm(patch_dim),
            nn.Linear(patch_dim, dim),
            nn.LayerNorm(dim),
        )


class CRATE(ImageClassifier):
    """CRATE classifier. ``CRATE(CRATEConfig(...))`` or ``CRATE(dim=..., depth=..., ...)``."""

    def __init__(self, config: CRATEConfig | None = None, **kwargs):
        super().__init__()
        cfg = config if config is not None else CRATEConfig(**kwargs)
        self.config = cfg
        self.to_patch_embedding = PatchEmbedding(cfg.patch_size, cfg.channels, cfg.dim)
        self.pos_embedding = nn.Parameter(torch.randn(1, cfg.num_patches + 1, cfg.dim))
        self.cls_token = nn.Parameter(torch.randn(1, 1, cfg.dim))
        self.dropout = nn.Dropout(cfg.emb_dropout)
        self.transformer = Transformer(
            [
                CRATELayer(cfg.dim, cfg.heads, cfg.head_dim, cfg.dropout, cfg.eta, cfg.lambd, cfg.literal)
                for _ in range(cfg.depth)
            ]
        )
        self.mlp_head = nn.Sequential(nn.LayerNorm(cfg.dim), nn.Linear(cfg.dim, cfg.num_classes))

    def embed(self, img: Tensor) -> Tensor:
        """Images (B, C, H, W) -> tokens (B, N + 1, d), [CLS] first, positions added."""
        self.check_input(img)
        return self.add_cls_and_positions(self.to_patch_embedding(img))  # (B, N + 1, d)
