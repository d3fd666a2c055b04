"""CRATE-α (arXiv 2405.20299): CRATE scaled up with three changes to the sparse coding block.

1. an overcomplete dictionary D ∈ R^{d × 4d} (sparse codes live in a 4× wider space),
2. a decoupled output dictionary D1 ∈ R^{d × 4d} that maps the codes back,
3. a residual connection around the sparse coding block (and two ISTA steps from zero).

Read it top to bottom: the patch embedding (``conv1``), the sparse coding block
(:class:`OvercompleteISTA`), the layer, the classifier. MSSA is CRATE's (``crate.py``), with
``to_out`` bias-free. Faithful to the official ``torch_inference/model/crate_alpha.py``: a Conv2d
patch embedding, LayerNorm eps 1e-6 inside the layers, the official parameter names::

    Z^1      = [cls; conv1(img)] + pos_embedding                            # (B, N + 1, d)
    Z^{ℓ+½}  = Z^ℓ + MSSA(LN(Z^ℓ))                                          # (B, N, d)
    A2       = ISTA²(LN(Z^{ℓ+½}); D)      two ISTA steps from 0             # (B, N, 4d)
    Z^{ℓ+1}  = Z^{ℓ+½} + D1 A2                                              # (B, N, d)

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
from typing import NamedTuple

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from crate_edu.models import base, fast
from crate_edu.models.crate import ISTA, MSSA

__all__ = [
    "SPARSE_CODINGS",
    "SparseCodes",
    "OvercompleteISTA",
    "CRATEAlphaLayer",
    "ABLATION",
    "CRATEAlphaConfig",
    "CRATEAlpha",
]

#: Sparse-coding blocks a CRATE-α layer can use (its ``sparse_coding`` switch).
SPARSE_CODINGS: tuple[str, ...] = ("alpha", "crate")


def _check_sparse_coding(sparse_coding: str, overcomplete_ratio: int, decoupled: bool) -> None:
    if sparse_coding not in SPARSE_CODINGS:
        raise ValueError(
            f"sparse_coding must be one of {', '.join(map(repr, SPARSE_CODINGS))}, got {sparse_coding!r}"
        )
    if sparse_coding == "crate" and (overcomplete_ratio != 1 or decoupled):
        raise ValueError(
            "sparse_coding='crate' (CRATE's one-step block, whose output is its code) has a square "
            f"dictionary and no decoder; got overcomplete_ratio={overcomplete_ratio}, "
            f"decoupled={decoupled}: "
            "set overcomplete_ratio=1 and decoupled=False"
        )


class SparseCodes(NamedTuple):
    """What :class:`OvercompleteISTA` computed: the codes A2 (B, N, r·d), non-negative, and the
    block's output D1 A2 (B, N, d)."""

    codes: Tensor
    out: Tensor


class OvercompleteISTA(base.Block):
    """CRATE-α sparse coding block: two ISTA steps on an overcomplete dictionary, then decode.

    D, D1 ∈ R^{d × r·d} (r = ``overcomplete_ratio``, 4 officially); input X = LN(Z^{ℓ+½})::

        A1 = ReLU(η D^T X − η λ)                         # one step from A0 = 0   (B, N, r·d)
        A2 = ReLU(A1 − η D^T (D A1 − X) − η λ)           # a second ISTA step     (B, N, r·d)
        out = D1 A2                                      # decoded by D1          (B, N, d)

    The layer adds ``out`` to its input (a residual, unlike CRATE's ISTA).

    Args:
        dim: token width d.
        overcomplete_ratio: r, the code width is r·d (official 4; 1 gives a complete dictionary).
        eta, lambd: ISTA step size η and sparsity penalty λ (official 0.1, 0.1).
        reference: compute with the official einsums (the default path computes the same
            numbers with :func:`~crate_edu.models.fast.overcomplete_ista`).
        decoupled: decode with a separate dictionary ``D1`` (official, True) or with the coding
            dictionary ``D`` itself, ``out = D A2`` (False: the "tied" block of the CRATE-α ablation;
            there is then no ``D1`` parameter).
    """

    def __init__(
        self,
        dim: int,
        overcomplete_ratio: int = 4,
        eta: float = 0.1,
        lambd: float = 0.1,
        reference: bool = False,
        *,
        decoupled: bool = True,
    ):
        super().__init__()
        if not isinstance(overcomplete_ratio, int) or overcomplete_ratio < 1:
            raise ValueError(
                "overcomplete_ratio must be a positive integer (code width r·d), "
                f"got {overcomplete_ratio!r}; "
                "use 4 (official CRATE-α) or 1 (a complete dictionary)"
            )
        self.D = nn.Parameter(nn.init.kaiming_uniform_(torch.empty(dim, overcomplete_ratio * dim)))
        if decoupled:
            self.D1 = nn.Parameter(nn.init.kaiming_uniform_(torch.empty(dim, overcomplete_ratio * dim)))
        else:
            self.register_parameter("D1", None)
        self.eta = eta
        self.lambd = lambd
        self.overcomplete_ratio = overcomplete_ratio
        self.decoupled = decoupled
        self.reference = reference

    @property
    def decoder(self) -> Tensor:
        """The decoding dictionary (d × r·d): ``D1`` when decoupled, else the coding dictionary ``D``."""
        return self.D1 if self.decoupled else self.D

    def forward(self, x: Tensor) -> Tensor:
        """D1 A2: (B, N, d) -> (B, N, d)."""
        return self.forward_parts(x).out

    def forward_parts(self, x: Tensor) -> SparseCodes:
        """The codes A2 (B, N, r·d) and the output D1 A2 (B, N, d)."""
        D, eta, lambd = self.D, self.eta, self.lambd
        if not self.reference:  # the same numbers, faster (fast.py: one written-out kernel)
            return SparseCodes(*fast.overcomplete_ista(x, D, self.decoder, eta, lambd))
        # the official einsums (written for any leading dims)
        a1 = F.relu(eta * torch.einsum("pd,...p->...d", D, x) - eta * lambd)  # A1 = ReLU(η D^T X − ηλ)
        Da1 = torch.einsum("dp,...p->...d", D, a1)  # D A1                                   (B, N, d)
        lasso_grad = torch.einsum("pd,...p->...d", D, Da1 - x)  # D^T (D A1 − X)             (B, N, r·d)
        a2 = F.relu(a1 - eta * lasso_grad - eta * lambd)  # A2 = ReLU(A1 − η D^T(D A1 − X) − ηλ)
        return SparseCodes(a2, torch.einsum("dp,...p->...d", self.decoder, a2))  # D1 A2   (B, N, d)

    def extra_repr(self) -> str:
        d, rd = self.D.shape
        return (
            f"dim={d}, codes={rd}, eta={self.eta}, lambd={self.lambd}, decoupled={self.decoupled}, "
            f"reference={self.reference}"
        )


class CRATEAlphaLayer(base.Block, nn.ModuleList):
    """One CRATE-α layer: both blocks residual, LayerNorm eps 1e-6, ``to_out`` without bias::

    Z^{ℓ+½} = Z^ℓ + MSSA(LN(Z^ℓ))
    Z^{ℓ+1} = Z^{ℓ+½} + D1 · ISTA²(LN(Z^{ℓ+½}); D)

    The defaults are the official layer. Switches undo CRATE-α's changes to the sparse coding
    block one at a time (the ablation of arXiv 2405.20299; notebook 09):

    - ``overcomplete_ratio``: the codes are r·d wide (official r = 4);
    - ``decoupled=False``: decode with the coding dictionary D instead of a separate D1;
    - ``residual=False``: the block's output *replaces* the stream, Z^{ℓ+1} = D1 A2, as in CRATE;
    - ``sparse_coding="crate"``: CRATE's own block instead, one ISTA step warm-started at
      X = LN(Z^{ℓ+½}) on a square D whose output is the code itself (``ISTA``; needs r = 1 and
      ``decoupled=False``). With ``residual=False`` this is CRATE's layer in CRATE-α's shell.
    """

    def __init__(
        self,
        dim: int,
        heads: int,
        dim_head: int,
        dropout: float = 0.0,
        overcomplete_ratio: int = 4,
        eta: float = 0.1,
        lambd: float = 0.1,
        reference: bool = False,
        *,
        decoupled: bool = True,
        residual: bool = True,
        sparse_coding: str = "alpha",
    ):
        _check_sparse_coding(sparse_coding, overcomplete_ratio, decoupled)
        coder: nn.Module = (
            OvercompleteISTA(dim, overcomplete_ratio, eta, lambd, reference, decoupled=decoupled)
            if sparse_coding == "alpha"
            else ISTA(dim, eta=eta, lambd=lambd, reference=reference)
        )
        mssa = MSSA(dim, heads, dim_head, dropout, out_bias=False, reference=reference)
        super().__init__([base.PreNorm(dim, mssa, eps=1e-6), base.PreNorm(dim, coder, eps=1e-6)])
        self.residual = residual
        self.sparse_coding = sparse_coding

    @property
    def mssa(self) -> MSSA:
        return self[0].fn

    @property
    def ista(self) -> OvercompleteISTA | ISTA:
        return self[1].fn

    def forward(self, x: Tensor, return_trace: bool = False) -> Tensor | tuple[Tensor, base.LayerTrace]:
        """Z^ℓ (B, N, d) -> Z^{ℓ+1} (B, N, d); ``return_trace=True`` is :meth:`forward_trace`."""
        if return_trace:
            return self.forward_trace(x)
        z_half = x + self[0](x)  # Z^{ℓ+½} = Z^ℓ + MSSA(LN(Z^ℓ))                             (B, N, d)
        out = self[1](z_half)  # D1 A2, A2 = ISTA²(LN(Z^{ℓ+½}); D)                           (B, N, d)
        return z_half + out if self.residual else out  # Z^{ℓ+1} = Z^{ℓ+½} + D1 A2           (B, N, d)

    def forward_trace(self, x: Tensor) -> tuple[Tensor, base.LayerTrace]:
        """Z^{ℓ+1} and what the layer computed (:class:`LayerTrace`; the codes are A2)."""
        parts = self.mssa.forward_parts(self[0].norm(x))
        z_half = x + parts.out
        if self.sparse_coding == "crate":
            codes = out = self[1](z_half)  # (B, N, d): CRATE's code is its output
        else:
            codes, out = self.ista.forward_parts(self[1].norm(z_half))  # (B, N, r·d), (B, N, d)
        z_out = z_half + out if self.residual else out
        trace = base.LayerTrace(proj=parts.proj, attn=parts.attn, z_half=z_half, z_out=z_out, codes=codes)
        return z_out, trace

    def extra_repr(self) -> str:
        return f"sparse_coding={self.sparse_coding!r}, residual={self.residual}"


@dataclass(frozen=True)
class CRATEAlphaConfig(base.ClassifierConfig):
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
        base.check_ista(self.eta, self.lambd)
        ratio = self.overcomplete_ratio
        if isinstance(ratio, bool) or not isinstance(ratio, int) or ratio < 1:
            raise ValueError(
                f"overcomplete_ratio must be a positive integer, got {self.overcomplete_ratio!r}; "
                "use 4 (official CRATE-α) or 1 (a complete dictionary)"
            )
        _check_sparse_coding(self.sparse_coding, self.overcomplete_ratio, self.decoupled)


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


class CRATEAlpha(base.ImageClassifier):
    """CRATE-α classifier. ``CRATEAlpha(CRATEAlphaConfig(...))`` or ``CRATEAlpha(dim=..., ...)``."""

    def __init__(self, config: CRATEAlphaConfig | None = None, **kwargs):
        super().__init__()
        cfg = config if config is not None else CRATEAlphaConfig(**kwargs)
        self.config = cfg
        self.conv1 = nn.Conv2d(
            cfg.channels, cfg.dim, kernel_size=base.pair(cfg.patch_size), stride=base.pair(cfg.patch_size)
        )
        self.init_tokens(cfg)  # pos_embedding (1, N + 1, d), cls_token (1, 1, d)
        self.transformer = base.Transformer(
            [
                CRATEAlphaLayer(
                    cfg.dim,
                    cfg.heads,
                    cfg.head_dim,
                    cfg.dropout,
                    cfg.overcomplete_ratio,
                    cfg.eta,
                    cfg.lambd,
                    cfg.reference,
                    decoupled=cfg.decoupled,
                    residual=cfg.residual,
                    sparse_coding=cfg.sparse_coding,
                )
                for _ in range(cfg.depth)
            ]
        )
        self.mlp_head = nn.Sequential(nn.LayerNorm(cfg.dim), nn.Linear(cfg.dim, cfg.num_classes))

    def embed(self, img: Tensor) -> Tensor:
        """Images (B, C, H, W) -> tokens Z^1 (B, N + 1, d), [CLS] first, positions added."""
        self.check_input(img)
        x = rearrange(self.conv1(img), "b d h w -> b (h w) d")  # patch embedding          (B, N, d)
        return self.add_cls_and_positions(x)  # (B, N + 1, d)
