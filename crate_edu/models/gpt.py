"""The GPT baseline of CRATE-LM: nanoGPT's GPT-2 with a ReLU MLP, built like CRATE-LM.

Faithful to the official crate-lm ``gpt.py`` (docs/notes/crate_lm_official_code.md §10): the same
embeddings, tied head, final LayerNorm and parameter names as
:mod:`crate_edu.models.crate_lm`, so that comparisons change only the layer::

    x^{ℓ+½}  = x^ℓ + CausalSelfAttention(ln_1(x^ℓ))      # separate q, k, v from c_attn (d → 3d)
    h        = ReLU(ln_2(x^{ℓ+½}) W_fc^T + b_fc)          # the MLP's hidden units      (B, T, 4d)
    x^{ℓ+1}  = x^{ℓ+½} + h W_proj^T + b_proj              # residual MLP                (B, T, d)

Against CRATE-LM: the attention has three projections where CausalMSSA has one (q = k = v), the
MLP has two matrices (encoder W_fc, decoder W_proj) where the ISTA block has one W used to code
and to decode, and both sub-blocks are residual. The hidden units h (after the ReLU) are the
neurons compared with CRATE-LM's codes. ``activation="gelu"`` gives GPT-2's own MLP (the tanh
approximation, the official file's unused ``new_gelu``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch.nn.functional as F
from torch import Tensor, nn

from crate_edu.models import base
from crate_edu.models.language import LanguageModel, LMConfig, LMLayerTrace, later_tokens

__all__ = ["ACTIVATIONS", "CausalSelfAttention", "GPTMLP", "GPTBlock", "GPTConfig", "GPT"]

#: The MLP's activation: ReLU (the official baseline) or GPT-2's GELU (tanh approximation).
ACTIVATIONS: tuple[str, ...] = ("relu", "gelu")


class CausalSelfAttention(base.Block):
    """Standard causal multi-head self-attention (official ``CausalSelfAttention`` of gpt.py)::

    q, k, v = split(x W_attn^T + b_attn)                               # (B, h, T, p) each
    A       = softmax(q k^T / √p + M),   M[t, s] = −∞ for s > t         # (B, h, T, T)
    out     = c_proj([A_1 v_1, …, A_h v_h])                            # (B, T, d)

    ``reference=True`` writes the masked softmax out; the default calls
    ``scaled_dot_product_attention(is_causal=True)`` (the official default branch), the same
    numbers within float rounding.
    """

    def __init__(
        self, dim: int, heads: int, dropout: float = 0.0, bias: bool = True, reference: bool = False
    ):
        super().__init__()
        self.dim = dim
        self.heads = heads
        self.scale = (dim // heads) ** -0.5
        self.dropout_p = dropout
        self.reference = reference
        self.c_attn = nn.Linear(dim, 3 * dim, bias=bias)  # [W_q; W_k; W_v]
        self.c_proj = nn.Linear(dim, dim, bias=bias)
        self.attn_dropout = nn.Dropout(dropout)
        self.resid_dropout = nn.Dropout(dropout)

    def qkv(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Queries, keys and values (B, h, T, p) from x (B, T, d)."""
        q, k, v = self.c_attn(x).split(self.dim, dim=2)  # (B, T, d) each
        return tuple(t.unflatten(-1, (self.heads, -1)).transpose(1, 2) for t in (q, k, v))  # type: ignore[return-value]

    def forward(self, x: Tensor) -> Tensor:
        """(B, T, d) -> (B, T, d); row t depends on rows 0 .. t of x only."""
        q, k, v = self.qkv(x)  # (B, h, T, p)
        if self.reference:  # the masked softmax, written out (the official manual branch)
            scores = (q @ k.transpose(-2, -1)) * self.scale  # (B, h, T, T)
            scores = scores.masked_fill(later_tokens(q.shape[2], q.device), float("-inf"))
            y = self.attn_dropout(F.softmax(scores, dim=-1)) @ v  # (B, h, T, p)
        else:
            dropout = self.dropout_p if self.training else 0.0
            y = F.scaled_dot_product_attention(q, k, v, dropout_p=dropout, is_causal=True, scale=self.scale)
        y = y.transpose(1, 2).flatten(2)  # heads side by side                              (B, T, d)
        return self.resid_dropout(self.c_proj(y))

    def forward_parts(self, x: Tensor) -> base.AttentionParts:
        """Keys (B, h, T, p), attention (B, h, T, T) and output (B, T, d), for analysis (always the
        reference arithmetic)."""
        q, k, v = self.qkv(x)
        scores = (q @ k.transpose(-2, -1)) * self.scale
        attn = F.softmax(scores.masked_fill(later_tokens(q.shape[2], q.device), float("-inf")), dim=-1)
        y = (self.attn_dropout(attn) @ v).transpose(1, 2).flatten(2)
        return base.AttentionParts(proj=k, attn=attn, out=self.resid_dropout(self.c_proj(y)))


class GPTMLP(nn.Module):
    """The MLP (official ``MLP``): ``c_proj(act(c_fc(x)))``, d → mlp_ratio·d → d, then dropout."""

    def __init__(
        self, dim: int, mlp_ratio: int = 4, dropout: float = 0.0, bias: bool = True, activation: str = "relu"
    ):
        super().__init__()
        self.c_fc = nn.Linear(dim, mlp_ratio * dim, bias=bias)
        self.c_proj = nn.Linear(mlp_ratio * dim, dim, bias=bias)
        self.dropout = nn.Dropout(dropout)
        self.activation = activation

    def hidden(self, x: Tensor) -> Tensor:
        """The hidden units after the activation (B, T, mlp_ratio·d): the neurons."""
        pre = self.c_fc(x)
        return F.relu(pre) if self.activation == "relu" else F.gelu(pre, approximate="tanh")

    def forward(self, x: Tensor) -> Tensor:
        return self.dropout(self.c_proj(self.hidden(x)))  # (B, T, d)


class GPTBlock(nn.Module):
    """One GPT layer (official ``Block``): both sub-blocks residual::

    x^{ℓ+½} = x^ℓ + attn(ln_1(x^ℓ))
    x^{ℓ+1} = x^{ℓ+½} + mlp(ln_2(x^{ℓ+½}))
    """

    def __init__(
        self,
        dim: int,
        heads: int,
        dropout: float = 0.0,
        mlp_ratio: int = 4,
        activation: str = "relu",
        bias: bool = True,
        reference: bool = False,
    ):
        super().__init__()
        self.ln_1 = nn.LayerNorm(dim, bias=bias)
        self.attn = CausalSelfAttention(dim, heads, dropout, bias, reference)
        self.ln_2 = nn.LayerNorm(dim, bias=bias)
        self.mlp = GPTMLP(dim, mlp_ratio, dropout, bias, activation)

    def forward(self, x: Tensor) -> Tensor:
        z_half = x + self.attn(self.ln_1(x))  # (B, T, d)
        return z_half + self.mlp(self.ln_2(z_half))  # (B, T, d)

    def forward_trace(self, x: Tensor) -> tuple[Tensor, LMLayerTrace]:
        parts = self.attn.forward_parts(self.ln_1(x))
        z_half = x + parts.out
        hidden = self.mlp.hidden(self.ln_2(z_half))  # (B, T, mlp_ratio·d)
        z_out = z_half + self.mlp.dropout(self.mlp.c_proj(hidden))
        return z_out, LMLayerTrace(z_half=z_half, z_out=z_out, codes=hidden, attn=parts.attn)


@dataclass(frozen=True)
class GPTConfig(LMConfig):
    """Configuration of the GPT baseline (defaults: GPT-2 small's widths, ReLU MLP).

    ``mlp_ratio``: the MLP's hidden width in units of d (4); ``activation``: ``"relu"`` (the
    official baseline) or ``"gelu"``; ``bias``: biases in the Linear layers and LayerNorms (nanoGPT's
    default True; the official train.py passes False).
    """

    mlp_ratio: int = 4
    activation: str = "relu"
    bias: bool = True
    reference: bool = False  # the written-out masked softmax instead of scaled_dot_product_attention

    def __post_init__(self):
        super().__post_init__()
        base.check_positive_int("mlp_ratio", self.mlp_ratio)
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {', '.join(ACTIVATIONS)}, got {self.activation!r}")
        base.check_flag("bias", self.bias)

    @property
    def code_width(self) -> int:
        """m, the MLP's hidden width (the neurons per layer)."""
        return self.mlp_ratio * self.dim


class GPT(LanguageModel):
    """The GPT baseline. ``GPT(GPTConfig(...))`` or with keywords; the interface of
    :class:`~crate_edu.models.language.LanguageModel` (the same as CRATE-LM's)."""

    def __init__(self, config: GPTConfig | None = None, **kwargs):
        super().__init__()
        cfg = config if config is not None else GPTConfig(**kwargs)
        self.config = cfg
        layers = [
            GPTBlock(cfg.dim, cfg.heads, cfg.dropout, cfg.mlp_ratio, cfg.activation, cfg.bias, cfg.reference)
            for _ in range(cfg.depth)
        ]
        self.transformer = nn.ModuleDict(
            dict(
                wte=nn.Embedding(cfg.vocab_size, cfg.dim),  # (V, d)
                wpe=nn.Embedding(cfg.block_size, cfg.dim),  # (T_max, d)
                drop=nn.Dropout(cfg.dropout),
                h=nn.ModuleList(layers),
                ln_f=nn.LayerNorm(cfg.dim, bias=cfg.bias),
            )
        )
        self.lm_head = nn.Linear(cfg.dim, cfg.vocab_size, bias=False)
        self.transformer.wte.weight = self.lm_head.weight  # tied
        self.init_weights()
