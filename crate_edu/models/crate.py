"""CRATE: the white-box transformer of sparse rate reduction (arXiv 2306.01129).

Faithful to the official ``model/crate.py``: the same parameter names, initialisation and
arithmetic, so official checkpoints load with ``load_state_dict`` (see ``crate_edu.weights.official``)::

    patches  = rearrange(img, 'b c (h p1) (w p2) -> b (h w) (p1 p2 c)')   # (B, N, P²·C)
    Z^1      = [cls; LN(Linear(LN(patches)))] + pos_embedding              # (B, N + 1, d)
    Z^{ℓ+1}  = CRATELayer(Z^ℓ)                                             # ℓ = 1 … L
    logits   = Linear(LN(Z^{L+1}[:, 0]))                                   # (B, num_classes)
"""

from __future__ import annotations

from dataclasses import dataclass

from einops.layers.torch import Rearrange
from torch import Tensor, nn

from crate_edu.models.base import ClassifierConfig, ImageClassifier, check_ista, pair
from crate_edu.models.blocks import CRATELayer, Transformer

__all__ = ["CRATEConfig", "CRATE", "PatchEmbedding"]


@dataclass(frozen=True)
class CRATEConfig(ClassifierConfig):
    """Configuration of a CRATE classifier (official defaults: CRATE-T at 224 px)."""

    eta: float = 0.1  # ISTA step size η
    lambd: float = 0.1  # ISTA sparsity penalty λ

    def __post_init__(self):
        super().__post_init__()
        check_ista(self.eta, self.lambd)


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
        self.init_tokens(cfg)
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
