"""CRATE: the white-box transformer of sparse rate reduction (arXiv 2306.01129), in one file.

Read it next to the paper, top to bottom: the patch embedding, MSSA (eqs. 10–12), ISTA (eqs.
16–17), the layer that chains them, and the classifier::

    patches  = rearrange(img, 'b c (h p1) (w p2) -> b (h w) (p1 p2 c)')   # (B, N, P²·C)
    Z^1      = [cls; LN(Linear(LN(patches)))] + pos_embedding              # (B, N + 1, d)
    Z^{ℓ+½}  = Z^ℓ + MSSA(LN(Z^ℓ))                                          # compression
    Z^{ℓ+1}  = ISTA(LN(Z^{ℓ+½}))                                            # sparsification
    logits   = Linear(LN(Z^{L+1}[:, 0]))                                   # (B, num_classes)

Tokens are rows: a layer input has shape (B, N, d). Faithful to the official ``model/crate.py``:
the same parameter names, initialisation and arithmetic, so official checkpoints load with
``load_state_dict`` (see ``crate_edu.weights.official`` and docs/design.md).

Each block has a ``reference`` flag. ``reference=True`` computes what the official code computes,
written out here; ``False`` (the default) takes the fast path, one call into
:mod:`crate_edu.models.fast`, equal within float rounding. The derivation itself, with γ, κ and U,
is :mod:`crate_edu.coding_rate`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from einops import rearrange
from einops.layers.torch import Rearrange
from torch import Tensor, nn

from crate_edu.models import base, fast

__all__ = ["PatchEmbedding", "MSSA", "ISTA", "CRATELayer", "CRATEConfig", "CRATE"]


class PatchEmbedding(nn.Sequential):
    """The official LN–Linear–LN patch embedding (indices 1, 2, 3 as in the official state dict)."""

    def __init__(self, patch_size, channels: int, dim: int):
        ph, pw = base.pair(patch_size)
        patch_dim = channels * ph * pw
        super().__init__(
            Rearrange("b c (h p1) (w p2) -> b (h w) (p1 p2 c)", p1=ph, p2=pw),  # (B, N, P²·C)
            nn.LayerNorm(patch_dim),
            nn.Linear(patch_dim, dim),
            nn.LayerNorm(dim),
        )


class MSSA(base.Block):
    """Multi-head subspace self-attention (eqs. 10–12, as the official code realises it).

    The shared projection ``qkv`` (bias-free, ``heads * dim_head`` outputs) plays the stacked
    [U_1 … U_K]^T: head k sees w_k = U_k^T z for every token. Queries, keys and values are all
    w_k, so each head computes the softmax "membership" of tokens in subspace k and averages the
    projected tokens with it::

        SSA_k = softmax(w_k w_k^T * dim_head**-0.5) w_k          # (B, N, p)  eq. 11
        MSSA  = to_out([SSA_1, …, SSA_K])                         # (B, N, d)  eq. 12

    Departures from the derivation (docs/design.md): ``to_out`` is a learned linear map (with bias
    for CRATE, without for CRATE-α) instead of γ[U_1 … U_K]; the temperature dim_head**-0.5 is not
    in the derivation; the layer adds MSSA to its input with coefficient 1 instead of (1 − κγ).

    Args:
        dim: token width d.
        heads: number of subspaces K.
        dim_head: subspace dimension p.
        dropout: dropout on the attention probabilities and on the output (official: 0).
        out_bias: whether ``to_out`` has a bias (CRATE: True; CRATE-α: False).
        reference: compute the explicit N × N softmax (the official arithmetic) through autograd,
            as the official code does, instead of the fast path.
        kernel: the fast path's attention kernel, one of ``crate_edu.models.fast.ATTENTION_KERNELS``
            (default ``'auto'``: the fastest for the device; see ``fast.subspace_attention``).
    """

    def __init__(
        self,
        dim: int,
        heads: int = 8,
        dim_head: int = 64,
        dropout: float = 0.0,
        out_bias: bool = True,
        reference: bool = False,
        kernel: str = "auto",
    ):
        super().__init__()
        fast.check_kernel(kernel, dropout)
        inner_dim = heads * dim_head
        self.heads = heads
        self.dim_head = dim_head
        self.scale = dim_head**-0.5
        self.dropout_p = dropout
        self.reference = reference
        self.kernel = kernel
        self.attend = nn.Softmax(dim=-1)
        self.dropout = nn.Dropout(dropout)
        self.qkv = nn.Linear(dim, inner_dim, bias=False)  # [U_1 … U_K]^T
        project_out = not (heads == 1 and dim_head == dim)  # as officially: identity if nothing to map
        self.to_out = (
            nn.Sequential(nn.Linear(inner_dim, dim, bias=out_bias), nn.Dropout(dropout))
            if project_out
            else nn.Identity()
        )

    def forward(self, x: Tensor) -> Tensor:
        """MSSA(x): (B, N, d) -> (B, N, d)."""
        w = rearrange(self.qkv(x), "b n (h p) -> b h n p", h=self.heads)  # w_k = U_k^T z   (B, h, N, p)
        if self.reference:  # the official arithmetic: the N × N memberships, written out
            attn = self.attend(w @ w.transpose(-1, -2) * self.scale)  # softmax(w w^T/√p) (B, h, N, N)
            out = self.dropout(attn) @ w  # SSA_k, eq. 11                                  (B, h, N, p)
        else:  # the same numbers, faster
            dropout = self.dropout_p if self.training else 0.0
            out = fast.subspace_attention(w, self.scale, kernel=self.kernel, dropout=dropout)
        out = rearrange(out, "b h n p -> b n (h p)")  # [SSA_1, …, SSA_K]                 (B, N, K·p)
        return self.to_out(out)  # MSSA = to_out([SSA_1, …, SSA_K]), eq. 12                 (B, N, d)

    def forward_parts(self, x: Tensor) -> base.AttentionParts:
        """Projections w (B, h, N, p), memberships (B, h, N, N) and output (B, N, d), for analysis:
        always the reference arithmetic, so that the N × N memberships exist."""
        w = rearrange(self.qkv(x), "b n (h p) -> b h n p", h=self.heads)  # (B, h, N, p)
        attn = self.attend(w @ w.transpose(-1, -2) * self.scale)  # (B, h, N, N)
        out = rearrange(self.dropout(attn) @ w, "b h n p -> b n (h p)")  # (B, N, K·p)
        return base.AttentionParts(proj=w, attn=attn, out=self.to_out(out))


class ISTA(base.Block):
    """One step of non-negative ISTA on the LASSO problem (eqs. 16–17), CRATE's MLP replacement.

    With dictionary D = ``weight`` (d × d), step size η and sparsity penalty λ, warm-started at the
    input x = LN(Z^{ℓ+½}) (tokens as rows, so D x is ``x @ D.T``)::

        ISTA(x) = ReLU(x + η D^T (x − D x) − η λ)

    The reference path computes D^T x − D^T (D x), three matmuls per token, as the official code
    does. The fast path (``crate_edu.models.fast.ista_step``) computes the same step with two
    matmuls, or folded into one. λ = 0.1 for CRATE classifiers, 0.5 in the CRATE-MAE encoder.
    """

    def __init__(self, dim: int, eta: float = 0.1, lambd: float = 0.1, reference: bool = False):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(dim, dim))  # D
        with torch.no_grad():
            nn.init.kaiming_uniform_(self.weight)  # the official initialisation
        self.eta = eta
        self.lambd = lambd
        self.reference = reference

    def forward(self, x: Tensor) -> Tensor:
        """ISTA(x): (B, N, d) -> (B, N, d), non-negative."""
        D = self.weight
        if self.reference:  # the official arithmetic: three matmuls per token
            x1 = F.linear(x, D)  # D x                                                      (B, N, d)
            grad_1 = F.linear(x1, D.t())  # D^T D x                                         (B, N, d)
            grad_2 = F.linear(x, D.t())  # D^T x                                            (B, N, d)
            grad_update = self.eta * (grad_2 - grad_1) - self.eta * self.lambd  # η D^T(x − D x) − ηλ
            return F.relu(x + grad_update)  # eq. 17                                         (B, N, d)
        return fast.ista_step(x, D, self.eta, self.lambd)  # the same step, faster        (B, N, d)

    def extra_repr(self) -> str:
        return f"dim={self.weight.shape[0]}, eta={self.eta}, lambd={self.lambd}, reference={self.reference}"


class CRATELayer(base.Block, nn.ModuleList):
    """One CRATE layer (official: ``[PreNorm(MSSA), PreNorm(ISTA)]``)::

    Z^{ℓ+½} = Z^ℓ + MSSA(LN(Z^ℓ))        # compression step (residual coefficient 1)
    Z^{ℓ+1} = ISTA(LN(Z^{ℓ+½}))           # sparsification; no residual: ReLU output replaces Z
    """

    #: ISTA's output replaces the stream (no residual around the second block).
    residual = False

    def __init__(
        self,
        dim: int,
        heads: int,
        dim_head: int,
        dropout: float = 0.0,
        eta: float = 0.1,
        lambd: float = 0.1,
        reference: bool = False,
    ):
        super().__init__(
            [
                base.PreNorm(dim, MSSA(dim, heads, dim_head, dropout, out_bias=True, reference=reference)),
                base.PreNorm(dim, ISTA(dim, eta=eta, lambd=lambd, reference=reference)),
            ]
        )

    @property
    def mssa(self) -> MSSA:
        return self[0].fn

    @property
    def ista(self) -> ISTA:
        return self[1].fn

    def forward(self, x: Tensor, return_trace: bool = False) -> Tensor | tuple[Tensor, base.LayerTrace]:
        """Z^ℓ (B, N, d) -> Z^{ℓ+1} (B, N, d); ``return_trace=True`` is :meth:`forward_trace`."""
        if return_trace:
            return self.forward_trace(x)
        z_half = x + self[0](x)  # Z^{ℓ+½} = Z^ℓ + MSSA(LN(Z^ℓ))                             (B, N, d)
        return self[1](z_half)  # Z^{ℓ+1} = ISTA(LN(Z^{ℓ+½}))                                (B, N, d)

    def forward_trace(self, x: Tensor) -> tuple[Tensor, base.LayerTrace]:
        """Z^{ℓ+1} and what the layer computed (:class:`LayerTrace`; the codes are Z^{ℓ+1})."""
        parts = self.mssa.forward_parts(self[0].norm(x))
        z_half = x + parts.out
        z_out = self[1](z_half)
        trace = base.LayerTrace(proj=parts.proj, attn=parts.attn, z_half=z_half, z_out=z_out, codes=z_out)
        return z_out, trace


@dataclass(frozen=True)
class CRATEConfig(base.ClassifierConfig):
    """Configuration of a CRATE classifier (official defaults: CRATE-T at 224 px)."""

    eta: float = 0.1  # ISTA step size η
    lambd: float = 0.1  # ISTA sparsity penalty λ

    def __post_init__(self):
        super().__post_init__()
        base.check_ista(self.eta, self.lambd)


class CRATE(base.ImageClassifier):
    """CRATE classifier. ``CRATE(CRATEConfig(...))`` or ``CRATE(dim=..., depth=..., ...)``.

    ``forward(img)`` -> logits; ``forward_intermediates(img)`` -> (logits, [LayerTrace]); see
    :class:`~crate_edu.models.base.ImageClassifier` for the rest of the interface.
    """

    def __init__(self, config: CRATEConfig | None = None, **kwargs):
        super().__init__()
        cfg = config if config is not None else CRATEConfig(**kwargs)
        self.config = cfg
        self.to_patch_embedding = PatchEmbedding(cfg.patch_size, cfg.channels, cfg.dim)
        self.init_tokens(cfg)  # pos_embedding (1, N + 1, d), cls_token (1, 1, d)
        self.transformer = base.Transformer(
            [
                CRATELayer(cfg.dim, cfg.heads, cfg.head_dim, cfg.dropout, cfg.eta, cfg.lambd, cfg.reference)
                for _ in range(cfg.depth)
            ]
        )
        self.mlp_head = nn.Sequential(nn.LayerNorm(cfg.dim), nn.Linear(cfg.dim, cfg.num_classes))

    def embed(self, img: Tensor) -> Tensor:
        """Images (B, C, H, W) -> tokens Z^1 (B, N + 1, d), [CLS] first, positions added."""
        self.check_input(img)
        return self.add_cls_and_positions(self.to_patch_embedding(img))  # (B, N + 1, d)
