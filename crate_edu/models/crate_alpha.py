"""CRATE-α (arXiv 2405.20299): CRATE scaled up with three changes to the sparse coding block.

1. an overcomplete dictionary D ∈ R^{d × 4d} (sparse codes live in a 4× wider space),
2. a decoupled output dictionary D1 ∈ R^{d × 4d} that maps the codes back,
3. a residual connection around the sparse coding block (and two ISTA steps from zero).

Faithful to the official ``torch_inference/model/crate_alpha.py``: a Conv2d patch embedding
(``conv1``), ``to_out`` without bias, LayerNorm eps 1e-6 inside the layers.

The config has a switch for each change (``overcomplete_ratio``, ``decoupled``, ``residual``, and
``sparse_coding="crate"`` for CRATE's own one-step block); the defaults are the official model.
``ABLATION`` names the cumulative steps of the paper's ablation, CRATE → +overcomplete →
+decoupled → +residual (= CRATE-α), as ``create_model`` overrides::

    for name, overrides in ABLATION.items():
        model = create_model("crate_alpha_nano_cifar", **overrides)
"""

from __future__ import annotations

from dataclasses import dataclass
from types import MappingProxyType

from einops import rearrange
from torch import Tensor, nn

from crate_edu.models.base import ClassifierConfig, ImageClassifier, check_ista, pair
from crate_edu.models.blocks import SPARSE_CODINGS, CRATEAlphaLayer, Transformer

__all__ = ["ABLATION", "CRATEAlphaConfig", "CRATEAlpha"]


@dataclass(frozen=True)
class CRATEAlphaConfig(ClassifierConfig):
    """Configuration of a CRATE-α classifier (official defaults: B/16 at 224 px).

    Attributes (besides :class:`~crate_edu.models.base.ClassifierConfig`'s):
        overcomplete_ratio: r, the sparse codes are r·d wide (official 4; 1 = complete).
        eta, lambd: ISTA step size η and sparsity penalty λ (official 0.1, 0.1).
        decoupled: decode the codes with a separate dictionary D1 (official) instead of D.
        residual: add the sparse-coding block's output to the stream (official) instead of
            replacing the stream with it (CRATE).
        sparse_coding: ``"alpha"`` (two ISTA steps from zero, then decode; official) or
            ``"crate"`` (CRATE's one ISTA step warm-started at the input, square D, the code is the
            output; needs ``overcomplete_ratio=1`` and ``decoupled=False``).
    """

    dim: int = 768
    heads: int = 12
    overcomplete_ratio: int = 4  # dictionary width r·d
    eta: float = 0.1
    lambd: float = 0.1
    decoupled: bool = True  # separate decoding dictionary D1
    residual: bool = True  # Z^{ℓ+1} = Z^{ℓ+½} + block(LN Z^{ℓ+½})
    sparse_coding: str = "alpha"  # "alpha" | "crate"

    def __post_init__(self):
        super().__post_init__()
        check_ista(self.eta, self.lambd)
        ratio = self.overcomplete_ratio
        if isinstance(ratio, bool) or not isinstance(ratio, int) or ratio < 1:
            raise ValueError(
                f"overcomplete_ratio must be a positive integer, got {self.overcomplete_ratio!r}; "
                "use 4 (official CRATE-α) or 1 (a complete dictionary)"
            )
        if self.sparse_coding not in SPARSE_CODINGS:
            raise ValueError(
                f"sparse_coding must be one of {', '.join(map(repr, SPARSE_CODINGS))}, "
                f"got {self.sparse_coding!r}"
            )
        if self.sparse_coding == "crate" and (self.overcomplete_ratio != 1 or self.decoupled):
            raise ValueError(
                "sparse_coding='crate' (CRATE's one-step block) has a square dictionary and no decoder; "
                f"got overcomplete_ratio={self.overcomplete_ratio}, decoupled={self.decoupled}: "
                "set overcomplete_ratio=1 and decoupled=False"
            )


#: The paper's ablation of the sparse coding block as cumulative ``create_model`` overrides of a
#: CRATE-α preset, from CRATE's block to the official CRATE-α block (whose overrides are empty).
ABLATION: MappingProxyType[str, dict] = MappingProxyType(
    {
        "CRATE block": dict(sparse_coding="crate", overcomplete_ratio=1, decoupled=False, residual=False),
        "+ overcomplete": dict(overcomplete_ratio=4, decoupled=False, residual=False),
        "+ decoupled": dict(overcomplete_ratio=4, decoupled=True, residual=False),
        "+ residual (CRATE-α)": dict(),
    }
)


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
                    decoupled=cfg.decoupled,
                    residual=cfg.residual,
                    sparse_coding=cfg.sparse_coding,
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
