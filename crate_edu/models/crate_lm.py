"""CRATE-LM: the causal CRATE language model (arXiv 2410.16443), in one file.

Read it top to bottom next to the official ``crate_overcomplete.py`` (crate-lm/crate-lm; facts
with file and line in docs/notes/crate_lm_official_code.md). Tokens are rows; a layer input has
shape (B, T, d); row t may look at tokens 0 .. t only::

    x^0      = wte[idx] + wpe[0 .. T-1]                                    # (B, T, d)
    x^{ℓ+½}  = x^ℓ + CausalMSSA(LN_1(x^ℓ))                                 # compression
    z0       = ReLU(η v W^T − ηλ),   v = LN_2(x^{ℓ+½})                     # ISTA step 1 from 0  (B, T, 4d)
    z1       = ReLU(z0 + η (v W^T − (z0 W) W^T) − ηλ)                     # ISTA step 2         (B, T, 4d)
    x^{ℓ+1}  = z1 W                                                        # decoded, no residual (B, T, d)
    logits   = LN_f(x^L) wte^T                                             # (B, T, V)

W = ``ista.weight`` (4d × d) is the overcomplete dictionary in row form (D = W^T, 4d atoms of
width d), used to code and to decode; η = λ = 0.1. The codes z1 are the model's "neurons".

``ista="complete"`` is the official ``crate.py`` instead: CRATE's original ISTA block
(:class:`crate_edu.models.crate.ISTA`: W is d × d, one step warm-started at v, its output is the
stream) and no final LayerNorm (``final_norm=False``)::

    x^{ℓ+1}  = ReLU(v + η (v W − (v W^T) W) − ηλ)                          # (B, T, d)

Departures from the derivation, as in CRATE (docs/design.md): MSSA's output map ``c_proj`` is
learned, the residual coefficient is 1, the attention has a 1/√p temperature, and W is not
constrained. Added for language: the causal mask, and an overcomplete dictionary used twice per
layer (two ISTA steps from 0, then decoding by the same W, where CRATE-α decodes by another).

Each block has a ``reference`` flag: ``True`` computes what the official code computes, written out
here; ``False`` (the default) takes the fast path, one call into :mod:`crate_edu.models.fast`,
equal within float rounding (``tests/unit/models/test_crate_lm.py``). The parameter names are the
official ones, so the published state dict loads with ``load_state_dict``
(``crate_edu.load_official('crate_lm_12l_pile', path)``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from crate_edu.models import base, fast
from crate_edu.models.crate import ISTA
from crate_edu.models.crate_alpha import SparseCodes
from crate_edu.models.language import LanguageModel, LMConfig, LMLayerTrace, later_tokens
from crate_edu.models.tost import CausalTSSA

__all__ = [
    "ISTA_KINDS",
    "ATTENTION_KINDS",
    "CausalMSSA",
    "TiedOvercompleteISTA",
    "CRATELMBlock",
    "CRATELMConfig",
    "CRATELanguageModel",
]

#: The sparse coding blocks: CRATE-LM's (``crate_overcomplete.py``) and CRATE's (``crate.py``).
ISTA_KINDS: tuple[str, ...] = ("overcomplete", "complete")
#: The causal attentions: CRATE-LM's MSSA, or ToST's TSSA (linear in T; :mod:`crate_edu.models.tost`).
ATTENTION_KINDS: tuple[str, ...] = ("mssa", "tssa")


class CausalMSSA(base.Block):
    """Causal multi-head subspace self-attention (official ``CausalSelfAttention``).

    ``c_attn`` (d × d, no bias) is the shared projection [U_1 … U_K]^T: head k sees w_k = U_k^T z,
    used as query, key and value alike. Each token attends to itself and the tokens before it::

        A_k  = softmax(w_k w_k^T / √p + M)      M[t, s] = −∞ for s > t      # (B, T, T) per head
        out  = c_proj([A_1 w_1, …, A_K w_K])                               # (B, T, d)

    Args:
        dim: token width d.
        heads: number of subspaces K (p = d / K).
        dropout: on the attention probabilities and the output (official: 0).
        reference: the explicit T × T softmax with the mask, as the official code's manual branch
            (its default branch, ``scaled_dot_product_attention(is_causal=True)``, computes the same).
        kernel: the fast path's attention kernel (``crate_edu.models.fast.ATTENTION_KERNELS``).
    """

    def __init__(
        self, dim: int, heads: int, dropout: float = 0.0, reference: bool = False, kernel: str = "auto"
    ):
        super().__init__()
        fast.check_kernel(kernel, dropout)
        self.heads = heads
        self.dim_head = dim // heads
        self.scale = self.dim_head**-0.5
        self.dropout_p = dropout
        self.reference = reference
        self.kernel = kernel
        self.c_attn = nn.Linear(dim, dim, bias=False)  # [U_1 … U_K]^T, shared by q, k and v
        self.c_proj = nn.Linear(dim, dim, bias=True)  # the learned output map (with bias, always)
        self.attn_dropout = nn.Dropout(dropout)
        self.resid_dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        """(B, T, d) -> (B, T, d); row t depends on rows 0 .. t of x only."""
        w = rearrange(self.c_attn(x), "b t (h p) -> b h t p", h=self.heads)  # w_k = U_k^T z   (B, h, T, p)
        if self.reference:  # the official arithmetic: the T × T memberships, masked, written out
            scores = (w @ w.transpose(-2, -1)) * self.scale  # w w^T / √p                    (B, h, T, T)
            scores = scores.masked_fill(later_tokens(w.shape[2], w.device), float("-inf"))  # + M
            attn = F.softmax(scores, dim=-1)  # A_k                                          (B, h, T, T)
            y = self.attn_dropout(attn) @ w  # A_k w_k                                       (B, h, T, p)
        else:  # the same numbers, faster
            dropout = self.dropout_p if self.training else 0.0
            y = fast.subspace_attention(w, self.scale, kernel=self.kernel, dropout=dropout, causal=True)
        y = rearrange(y, "b h t p -> b t (h p)")  # [A_1 w_1, …, A_K w_K]                     (B, T, d)
        return self.resid_dropout(self.c_proj(y))  # (B, T, d)

    def forward_parts(self, x: Tensor) -> base.AttentionParts:
        """Projections w (B, h, T, p), memberships (B, h, T, T) and output (B, T, d), for analysis:
        always the reference arithmetic, so that the T × T memberships exist."""
        w = rearrange(self.c_attn(x), "b t (h p) -> b h t p", h=self.heads)
        scores = (w @ w.transpose(-2, -1)) * self.scale
        attn = F.softmax(scores.masked_fill(later_tokens(w.shape[2], w.device), float("-inf")), dim=-1)
        y = rearrange(self.attn_dropout(attn) @ w, "b h t p -> b t (h p)")
        return base.AttentionParts(proj=w, attn=attn, out=self.resid_dropout(self.c_proj(y)))


class TiedOvercompleteISTA(base.Block):
    """CRATE-LM's sparse coding block (official ``MLP``): two ISTA steps from 0, decoded by the same W.

    ``weight`` W (r·d × d, r = 4) is the dictionary D = W^T in row form; for v = LN_2(x^{ℓ+½})::

        z0  = ReLU(η v W^T − ηλ)                          # one step from z = 0     (B, T, r·d)
        z1  = ReLU(z0 + η (v W^T − (z0 W) W^T) − ηλ)      # a second step            (B, T, r·d)
        out = z1 W                                        # D z1: decoded, no residual (B, T, d)

    The official code computes v W^T twice (five matmuls); the fast path
    (:func:`~crate_edu.models.fast.tied_overcomplete_ista`) computes it once (four).
    """

    def __init__(
        self,
        dim: int,
        overcomplete_ratio: int = 4,
        eta: float = 0.1,
        lambd: float = 0.1,
        reference: bool = False,
    ):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(overcomplete_ratio * dim, dim))  # W = D^T
        with torch.no_grad():
            nn.init.kaiming_uniform_(self.weight)  # the official initialisation
        self.eta = eta
        self.lambd = lambd
        self.reference = reference

    def forward(self, x: Tensor) -> Tensor:
        """z1 W: (B, T, d) -> (B, T, d)."""
        return self.forward_parts(x).out

    def forward_parts(self, x: Tensor) -> SparseCodes:
        """The codes z1 (B, T, r·d), non-negative, and the output z1 W (B, T, d)."""
        W, eta, lambd = self.weight, self.eta, self.lambd
        if self.reference:  # the official arithmetic, operation for operation
            z0 = F.relu(eta * F.linear(x, W) - eta * lambd)  # ReLU(η v W^T − ηλ)            (B, T, r·d)
            x1 = F.linear(z0, W.t())  # z0 W = D z0                                           (B, T, d)
            grad_1 = F.linear(x1, W)  # (z0 W) W^T = D^T D z0                                 (B, T, r·d)
            grad_2 = F.linear(x, W)  # v W^T = D^T v, a second time                          (B, T, r·d)
            grad_update = eta * (grad_2 - grad_1) - eta * lambd  # η D^T (v − D z0) − ηλ
            z1 = F.relu(z0 + grad_update)  # the codes                                       (B, T, r·d)
            return SparseCodes(codes=z1, out=F.linear(z1, W.t()))  # D z1                    (B, T, d)
        codes, out = fast.tied_overcomplete_ista(x, W, eta, lambd)  # the same, four matmuls
        return SparseCodes(codes=codes, out=out)

    def extra_repr(self) -> str:
        m, d = self.weight.shape
        return f"dim={d}, codes={m}, eta={self.eta}, lambd={self.lambd}, reference={self.reference}"


class CRATELMBlock(base.Block):
    """One CRATE-LM layer (official ``Block``)::

    x^{ℓ+½} = x^ℓ + attn(prenorm_1(x^ℓ))          # causal MSSA, residual coefficient 1
    x^{ℓ+1} = ista(prenorm_2(x^{ℓ+½}))             # sparse coding; no residual: it replaces the stream

    ``attention="tssa"`` puts ToST's causal TSSA (:class:`~crate_edu.models.tost.CausalTSSA`, with
    CausalMSSA's biases and a ``denom_bias`` of ``block_size`` rows) in MSSA's place.
    """

    def __init__(
        self,
        dim: int,
        heads: int,
        dropout: float = 0.0,
        ista: str = "overcomplete",
        overcomplete_ratio: int = 4,
        eta: float = 0.1,
        lambd: float = 0.1,
        reference: bool = False,
        attention: str = "mssa",
        block_size: int = 1024,
    ):
        super().__init__()
        self.prenorm_1 = nn.LayerNorm(dim)  # eps 1e-5, with bias, as officially
        if attention == "tssa":  # ToST's causal TSSA: linear in T, no T × T matrix
            self.attn: nn.Module = CausalTSSA(dim, heads, block_size, dropout=dropout)
        else:
            self.attn = CausalMSSA(dim, heads, dropout, reference=reference)
        self.prenorm_2 = nn.LayerNorm(dim)
        if ista == "overcomplete":
            self.ista: nn.Module = TiedOvercompleteISTA(dim, overcomplete_ratio, eta, lambd, reference)
        else:  # CRATE's original block, as the official crate.py
            self.ista = ISTA(dim, eta=eta, lambd=lambd, reference=reference)

    def forward(self, x: Tensor) -> Tensor:
        """x^ℓ (B, T, d) -> x^{ℓ+1} (B, T, d)."""
        z_half = x + self.attn(self.prenorm_1(x))  # x^{ℓ+½}                                (B, T, d)
        return self.ista(self.prenorm_2(z_half))  # x^{ℓ+1}                                 (B, T, d)

    def forward_trace(self, x: Tensor) -> tuple[Tensor, LMLayerTrace]:
        """x^{ℓ+1} and what the layer computed (:class:`~crate_edu.models.language.LMLayerTrace`; with
        TSSA its ``attn`` is the membership Π (B, h, T): TSSA has no T × T matrix)."""
        parts = self.attn.forward_parts(self.prenorm_1(x))
        z_half = x + parts.out
        v = self.prenorm_2(z_half)
        if isinstance(self.ista, TiedOvercompleteISTA):
            codes, z_out = self.ista.forward_parts(v)  # the codes z1 (B, T, 4d)
        else:
            codes = z_out = self.ista(v)  # CRATE's ISTA output is its code (B, T, d)
        return z_out, LMLayerTrace(z_half=z_half, z_out=z_out, codes=codes, attn=parts.attn)


@dataclass(frozen=True)
class CRATELMConfig(LMConfig):
    """Configuration of a CRATE language model (defaults: the published 12-layer CRATE-LM).

    ``ista`` is ``"overcomplete"`` (CRATE-LM, ``crate_overcomplete.py``: W is
    ``overcomplete_ratio`` · d × d) or ``"complete"`` (``crate.py``: CRATE's d × d block; give
    ``final_norm=False`` to match that file, which has no ``ln_f``). ``eta`` and ``lambd`` are the
    ISTA step size and penalty (official 0.1 and 0.1, fixed in the official code). ``attention`` is
    ``"mssa"`` (CRATE-LM) or ``"tssa"`` (ToST's causal TSSA in MSSA's place: not a published model).
    """

    ista: str = "overcomplete"
    overcomplete_ratio: int = 4
    eta: float = 0.1
    lambd: float = 0.1
    final_norm: bool = True
    reference: bool = False  # the official arithmetic, written out, instead of the fast path
    attention: str = "mssa"

    def __post_init__(self):
        super().__post_init__()
        if self.attention not in ATTENTION_KINDS:
            raise ValueError(
                f"attention must be 'mssa' (CRATE-LM's causal MSSA) or 'tssa' (ToST's causal TSSA, "
                f"linear in the context), got {self.attention!r}"
            )
        if self.ista not in ISTA_KINDS:
            raise ValueError(
                f"ista must be 'overcomplete' (CRATE-LM: 4d codes, two steps, decoded) or 'complete' "
                f"(CRATE's d × d block), got {self.ista!r}"
            )
        base.check_positive_int("overcomplete_ratio", self.overcomplete_ratio)
        base.check_ista(self.eta, self.lambd)
        base.check_flag("final_norm", self.final_norm)

    @property
    def code_width(self) -> int:
        """m, the width of the codes (the neurons per layer): r·d, or d for the complete block."""
        return self.overcomplete_ratio * self.dim if self.ista == "overcomplete" else self.dim


class CRATELanguageModel(LanguageModel):
    """The causal CRATE language model. ``CRATELanguageModel(CRATELMConfig(...))`` or with keywords.

    ``forward(idx)`` -> logits (B, T, V) at every position; ``forward_trace``, ``generate`` and
    ``num_params`` as in :class:`~crate_edu.models.language.LanguageModel`. The module tree and
    names are the official ones (``transformer.wte``, ``.wpe``, ``.h.{i}``, ``.ln_f``; ``lm_head``
    tied to ``wte``).
    """

    def __init__(self, config: CRATELMConfig | None = None, **kwargs):
        super().__init__()
        cfg = config if config is not None else CRATELMConfig(**kwargs)
        self.config = cfg
        layers = [
            CRATELMBlock(
                cfg.dim,
                cfg.heads,
                cfg.dropout,
                cfg.ista,
                cfg.overcomplete_ratio,
                cfg.eta,
                cfg.lambd,
                cfg.reference,
                cfg.attention,
                cfg.block_size,
            )
            for _ in range(cfg.depth)
        ]
        modules = dict(
            wte=nn.Embedding(cfg.vocab_size, cfg.dim),  # tokens                    (V, d)
            wpe=nn.Embedding(cfg.block_size, cfg.dim),  # learned positions        (T_max, d)
            drop=nn.Dropout(cfg.dropout),
            h=nn.ModuleList(layers),
        )
        if cfg.final_norm:
            modules["ln_f"] = nn.LayerNorm(cfg.dim)
        self.transformer = nn.ModuleDict(modules)
        self.lm_head = nn.Linear(cfg.dim, cfg.vocab_size, bias=False)
        self.transformer.wte.weight = self.lm_head.weight  # tied: logits = x wte^T
        self.init_weights()
