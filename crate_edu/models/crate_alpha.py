"""CRATE-α (arXiv 2405.20299): CRATE scaled up with three changes to the sparse coding block.

1. an overcomplete dictionary D ∈ R^{d × 4d} (sparse codes live in a 4× wider space),
2. a decoupled output dictionary D1 ∈ R^{d × 4d} that maps the codes back,
3. a residual connection around the sparse coding block (and two ISTA steps from zero).

Faithful to the official ``torch_inference/model/crate_alpha.py``: a Conv2d patch embedding
(``conv1``), ``to_out`` without bias, LayerNorm eps 1e-6 inside the layers.
"""

from __future__ import annotations

from dataclasses import dataclass

from einops import rearrange
from torch import Tensor, nn

from crate_edu.blocks import CRATEAlphaLayer, Transformer
from crate_edu.models.common import ClassifierConfig, ImageClassifier, pair

__all__ = ["CRATEAlphaConfig", "CRATEAlpha"]


@dataclass(frozen=True)
class CRATEAlphaConfig(ClassifierConfig):
    """Configuration of a CRATE-α classifier (official defaults: B/16 at 224 px)."""

    dim: int = 768
    heads: int = 12
    overcomplete_ratio: int = 4  # dictionary width r·d
    eta: float = 0.1
    lambd: float = 0.1


class CRATEAlpha(ImageClassifier):
    """CRATE-α classifier. ``CRATEAlpha(CRATEAlphaConfig(...))`` or ``CRATEAlpha(dim=..., ...)``."""

    def __init__(self, config: CRATEAlphaConfig | None = None, **kwargs):
        super().__init__()
        cfg = config if config is not None else CRATEAlphaConfig(**kwargs)
        self.config = cfg
        self.conv1 = nn.Conv2d(
            cfg.channels, cfg.dim, kernel_size=pair(cfg.patch_size), stride=pair(cfg.patch_size)
        )
        self.init_tokens(cfg)
        self.transformer = Transformer(
            [
                CRATEAlphaLayer(
                    cfg.dim,
                    cfg.heads,
                    cfg.head_dim,
                    cfg.dropout,
                    cfg.overcomplete_ratio,
                    cfg.eta,
                    cfg.lambd,
                    cfg.literal,
                )
                for _ in range(cfg.depth)
            ]
        )
        self.mlp_head = nn.Sequential(nn.LayerNorm(cfg.dim), nn.Linear(cfg.dim, cfg.num_classes))

    def embed(self, img: Tensor) -> Tensor:
        """Images (B, C, H, W) -> tokens (B, N + 1, d), [CLS] first, positions added."""
        self.check_input(img)
        x = rearrange(self.conv1(img), "b d h w -> b (h w) d")  # (B, N, d)
        return self.add_cls_and_positions(x)  # (B, N + 1, d)
