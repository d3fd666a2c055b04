"""The building blocks of the CRATE family, each beside its derivation-literal twin.

Tokens are rows: a layer input has shape (B, N, d). Parameter names are the official ones, so an
official state dict loads without renaming (DESIGN.md §3).

=====================  ==========================================================================
block                  what it computes (paper equation; official realisation)
=====================  ==========================================================================
``MSSA``               multi-head subspace self-attention, eqs. 10–12: w = U^T x per head (shared
                       ``qkv``), softmax(w w^T / sqrt(p)) w, then learned ``to_out``
``ISTA``               one non-negative ISTA step, eqs. 16–17: ReLU(x + η D^T(x − D x) − ηλ)
``OvercompleteISTA``   CRATE-α sparse coding: two ISTA steps from 0 on an overcomplete D (d × 4d),
                       decoded by a separate D1 (d × 4d); switches for the ablation
``LinearDictionary``   CRATE-MAE decoder's square map D̃ (no bias)
``PreNorm``            LayerNorm, then the block (``norm`` / ``fn``, the official names)
=====================  ==========================================================================

Every block has a ``literal`` attribute. ``literal=False`` (default) is the fast path: MSSA through
``torch.nn.functional.scaled_dot_product_attention`` on GPU and through a kernel that writes out the
backward pass of queries = keys = values on CPU (:func:`shared_qkv_attention`), ISTA folded into
one matmul (or two, for small batches) with a hand-written gradient for the folded matrix.
``literal=True``
computes exactly what the official code computes (explicit softmax over the N × N scores, three
matmuls in ISTA); ``tests/unit/models/test_blocks.py`` shows the two agree. ``set_literal(model, True)``
switches a whole model.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

__all__ = [
    "LayerTrace",
    "PreNorm",
    "MSSA",
    "ATTENTION_KERNELS",
    "shared_qkv_attention",
    "set_attention_kernel",
    "ISTA",
    "OvercompleteISTA",
    "LinearDictionary",
    "CRATELayer",
    "CRATEAlphaLayer",
    "SPARSE_CODINGS",
    "CRATEDecoderLayer",
    "Transformer",
    "set_literal",
]


@dataclass
class LayerTrace:
    """What one layer computed, for analysis without hooks.

    Attributes:
        proj: (B, h, N, p) per-head projections U_k^T LN(Z^ℓ) (the ``qkv`` output split by head;
            for the ViT baseline, the keys).
        attn: (B, h, N, N) attention probabilities; row i is token i's softmax over tokens.
        z_half: (B, N, d) Z^{ℓ+½}, the stream after the attention (compression) step.
        z_out: (B, N, d) Z^{ℓ+1}, the layer output (after ISTA / the MLP).
        codes: the sparse codes of the layer's ISTA block: Z^{ℓ+1} itself for CRATE, the
            (B, N, r·d) codes A2 for CRATE-α (its stream is not sparse: the codes are decoded by
            D1 and added back); None where there is no sparse coding (ViT, CRATE-MAE decoder).
    """

    proj: Tensor
    attn: Tensor
    z_half: Tensor
    z_out: Tensor
    codes: Tensor | None = None


class PreNorm(nn.Module):
    """``fn(LayerNorm(x))``: the official pre-norm wrapper (attribute names ``norm`` and ``fn``)."""

    def __init__(self, dim: int, fn: nn.Module, eps: float = 1e-5):
        super().__init__()
        self.norm = nn.LayerNorm(dim, eps=eps)
        self.fn = fn

    def forward(self, x: Tensor, **kwargs) -> Tensor:
        return self.fn(self.norm(x), **kwargs)


#: Attention kernels of MSSA's fast path (see :class:`MSSA`).
ATTENTION_KERNELS: tuple[str, ...] = ("auto", "sdpa", "shared_qkv")


class _SharedQKVAttention(torch.autograd.Function):
    """softmax(s · w w^T) w per (batch, head), with the gradient written out for q = k = v = w.

    A general attention kernel treats queries, keys and values as three tensors; in MSSA they are
    one, which shortens the backward pass. With S = s w w^T, P = softmax_rows(S), O = P w and the
    incoming gradient dO::

        dP = dO w^T                        # (N, N)
        dS = P ∘ (dP − rowsum(dP ∘ P))     # the softmax Jacobian
        dw = P^T dO + s (dS + dS^T) w      # w as the values, then as the queries and the keys

    That is five batched matmuls for forward and backward (two forward, three backward), against
    seven for a fused kernel that recomputes S and forms dQ and dK separately. The forward pass is
    the literal arithmetic (explicit softmax), and the N × N probabilities are kept for the backward
    pass, as on the literal path.

    The N × N work goes in blocks of heads whose score matrices fill about
    :data:`_BLOCK_BYTES` (:func:`_blocks`), so that each block's scores, softmax, gradient and its
    transpose stay in the core's cache between one operation and the next instead of making a
    round trip to memory each time; only P is written out once and read back once. Without a
    gradient to compute (evaluation), P is not kept: one block's worth of scratch serves all. On
    CPU, in float32, this is faster than ``scaled_dot_product_attention`` (``benchmarks/README.md``);
    on GPUs the fused flash and memory-efficient kernels win, and MSSA uses them there.
    """

    @staticmethod
    def forward(ctx, w: Tensor, scale: float) -> Tensor:  # type: ignore[override]
        B, h, N, p = w.shape
        flat, blocks = _blocks(B, h, N, w.element_size())
        w4 = w.reshape(1, B * h, N, p) if flat else w  # flat: a copy when w is a head-split view
        keep = ctx.needs_input_grad[0]  # the backward pass needs every block's P
        size = max(hs.stop - hs.start for _, hs in blocks)
        probs = w.new_empty(*w4.shape[:2], N, N) if keep else w.new_empty(1, size, N, N)
        out = w.new_empty(w4.shape)
        for b, hs in blocks:
            P = probs[b, hs] if keep else probs[0, : hs.stop - hs.start]  # (k, N, N)
            wc = w4[b, hs]  # (k, N, p)
            torch.bmm(wc, wc.transpose(1, 2), out=P).mul_(scale)  # S = s w w^T
            torch.softmax(P, dim=-1, out=P)  # in place: S is not needed again
            torch.bmm(P, wc, out=out[b, hs])  # O = P w
        if keep:
            ctx.save_for_backward(w4, probs)
            ctx.scale, ctx.flat, ctx.blocks = scale, flat, blocks
        return out.view(B, h, N, p)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_out: Tensor) -> tuple[Tensor, None]:  # type: ignore[override]
        w4, probs = ctx.saved_tensors
        B, h, N, p = grad_out.shape
        g4 = grad_out.reshape(1, B * h, N, p) if ctx.flat else grad_out
        grad_w = w4.new_empty(w4.shape)
        size = max(hs.stop - hs.start for _, hs in ctx.blocks)
        grad_s, grad_s_sym = w4.new_empty(size, N, N), w4.new_empty(size, N, N)  # reused per block
        for b, hs in ctx.blocks:
            P, gc, wc, gw = probs[b, hs], g4[b, hs], w4[b, hs], grad_w[b, hs]
            dS, dS_sym = grad_s[: P.shape[0]], grad_s_sym[: P.shape[0]]
            torch.bmm(P.transpose(1, 2), gc, out=gw)  # P^T dO: w as the values
            torch.bmm(gc, wc.transpose(1, 2), out=dS)  # dP = dO w^T
            torch._softmax_backward_data(dS, P, -1, P.dtype, grad_input=dS)  # dS, in place
            torch.add(dS, dS.transpose(1, 2), out=dS_sym)  # w as the queries and the keys
            torch.baddbmm(gw, dS_sym, wc, alpha=ctx.scale, out=gw)  # out=: FlopCounterMode counts it
        return grad_w.view(B, h, N, p), None


#: Bytes of N × N score matrices that one block of :class:`_SharedQKVAttention` works on at once:
#: about a core's L2 cache (1 MiB on current x86 server cores); measured best on 2 cores
#: (``benchmarks/README.md``).
_BLOCK_BYTES = 1 << 20


def _blocks(batch: int, heads: int, tokens: int, itemsize: int) -> tuple[bool, list[tuple[int, slice]]]:
    """How :class:`_SharedQKVAttention` splits its (batch, head) matrices into cache-sized blocks.

    Each block holds about :data:`_BLOCK_BYTES` of N × N scores. When one batch element's heads
    fill that (long sequences), the blocks are ``(b, heads slice)`` of the input as it is, a
    head-split view of (B, N, h·p), with no copy. Otherwise (short sequences, many small matrices)
    the input is first copied to (1, B·h, N, p) (``flat`` is True) and the blocks are slices of
    B·h matrices. Returns ``(flat, [(index, slice), ...])``.
    """
    per_block = max(1, _BLOCK_BYTES // (tokens * tokens * itemsize))
    if per_block <= heads:
        return False, [
            (b, slice(i, min(i + per_block, heads))) for b in range(batch) for i in range(0, heads, per_block)
        ]
    n = batch * heads
    return True, [(0, slice(i, min(i + per_block, n))) for i in range(0, n, per_block)]


def shared_qkv_attention(w: Tensor, scale: float) -> Tensor:
    """softmax(scale · w w^T) w for w of shape (B, h, N, p), with the backward of q = k = v.

    Equal to ``scaled_dot_product_attention(w, w, w, scale=scale)`` and to the literal
    ``softmax(w @ w.transpose(-1, -2) * scale) @ w`` within float rounding, gradients included
    (``tests/unit/models/test_blocks.py``); see :class:`_SharedQKVAttention` for the derivation. Not twice
    differentiable.
    """
    if w.ndim != 4:
        raise ValueError(f"w must have shape (B, heads, N, dim_head), got {tuple(w.shape)}")
    if w.numel() == 0:  # an empty batch (or no tokens): nothing to attend over, an empty output
        return w * scale  # (B, h, N, p), keeps autograd's graph so that backward gives zero-size grads
    return _SharedQKVAttention.apply(w, scale)


def _check_kernel(kernel: str, dropout: float = 0.0) -> None:
    """Raise ``ValueError`` unless ``kernel`` is one of :data:`ATTENTION_KERNELS` and can serve a
    block with attention dropout ``dropout`` (the shared-q/k/v kernel has none)."""
    if kernel not in ATTENTION_KERNELS:
        raise ValueError(f"unknown attention kernel {kernel!r}; choose one of {', '.join(ATTENTION_KERNELS)}")
    if kernel == "shared_qkv" and dropout > 0:
        raise ValueError(
            f"the 'shared_qkv' attention kernel has no attention dropout (dropout={dropout}); "
            "use kernel='auto' or 'sdpa'"
        )


def _resolve_kernel(kernel: str, w: Tensor, dropout_p: float) -> str:
    """The kernel ``'auto'`` stands for: the shared-q/k/v kernel for eager float32/64 CPU work
    without attention dropout or autocast, ``scaled_dot_product_attention`` everywhere else."""
    if kernel != "auto":
        return kernel
    if (
        w.device.type == "cpu"
        and w.dtype in (torch.float32, torch.float64)
        and dropout_p == 0.0
        and not _cpu_autocast_enabled()
        and not _compiling()
    ):
        return "shared_qkv"
    return "sdpa"


def _cpu_autocast_enabled() -> bool:
    return torch.is_autocast_enabled("cpu")


def _compiling() -> bool:
    return torch.compiler.is_compiling()


class MSSA(nn.Module):
    """Multi-head subspace self-attention (eqs. 10–12, as the official code realises it).

    The shared projection ``qkv`` (bias-free, ``heads * dim_head`` outputs) plays the stacked
    [U_1 … U_K]^T: head k sees w_k = U_k^T z for every token. Queries, keys and values are all
    w_k, so each head computes the softmax "membership" of tokens in subspace k and averages the
    projected tokens with it::

        SSA_k = softmax(w_k w_k^T * dim_head**-0.5) w_k          # (B, N, p)  eq. 11
        MSSA  = to_out([SSA_1, …, SSA_K])                         # (B, N, d)  eq. 12

    Departures from the derivation (DESIGN.md §3): ``to_out`` is a learned linear map (with bias
    for CRATE, without for CRATE-α) instead of γ[U_1 … U_K]; the temperature dim_head**-0.5 is not
    in the derivation; the layer adds MSSA to its input with coefficient 1 instead of (1 − κγ).

    Args:
        dim: token width d.
        heads: number of subspaces K.
        dim_head: subspace dimension p.
        dropout: dropout on the attention probabilities and on the output (official: 0).
        out_bias: whether ``to_out`` has a bias (CRATE: True; CRATE-α: False).
        literal: compute the explicit N × N softmax (the official arithmetic) through autograd,
            as the official code does, instead of the fast path.
        kernel: the fast path's attention kernel: ``'sdpa'`` (``scaled_dot_product_attention``:
            flash / memory-efficient kernels on GPU), ``'shared_qkv'`` (explicit softmax with the
            backward pass of q = k = v written out, :func:`shared_qkv_attention`; fastest on CPU),
            or ``'auto'`` (default): ``'shared_qkv'`` for eager float32 CPU work without attention
            dropout, ``'sdpa'`` otherwise (GPU, autocast, ``torch.compile``, dropout).
    """

    def __init__(
        self,
        dim: int,
        heads: int = 8,
        dim_head: int = 64,
        dropout: float = 0.0,
        out_bias: bool = True,
        literal: bool = False,
        kernel: str = "auto",
    ):
        super().__init__()
        _check_kernel(kernel, dropout)
        inner_dim = heads * dim_head
        self.heads = heads
        self.dim_head = dim_head
        self.scale = dim_head**-0.5
        self.dropout_p = dropout
        self.literal = literal
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

    def project(self, x: Tensor) -> Tensor:
        """Per-head projections U_k^T x: (B, N, d) -> (B, h, N, p)."""
        return rearrange(self.qkv(x), "b n (h p) -> b h n p", h=self.heads)

    def attention(self, w: Tensor, queries: Tensor | None = None) -> Tensor:
        """Membership probabilities softmax(w w^T / sqrt(p)): (B, h, N, p) -> (B, h, N, N).

        With ``queries`` (B, h, M, p), only their rows: softmax(queries w^T / sqrt(p)), (B, h, M, N).
        """
        q = w if queries is None else queries
        dots = torch.matmul(q, w.transpose(-1, -2)) * self.scale  # (B, h, M, N)
        return self.attend(dots)

    def forward(self, x: Tensor, return_attn: bool = False) -> Tensor | tuple[Tensor, Tensor]:
        """(B, N, d) -> (B, N, d); with ``return_attn`` also the (B, h, N, N) probabilities."""
        out, _, attn = self.forward_parts(x, need_attn=return_attn)
        return (out, attn) if return_attn else out

    def forward_rows(self, x: Tensor, rows: int) -> Tensor:
        """MSSA's output at the first ``rows`` tokens only: (B, N, d) -> (B, rows, d).

        Every token still serves as a key and a value; only the first ``rows`` serve as queries,
        so the scores are (rows × N) per head. The arithmetic is the literal one (explicit
        softmax) restricted to those rows: equal to ``self(x)[:, :rows]`` within float rounding.
        Used by a classifier's last layer, where only the [CLS] token reaches the head.
        """
        w = self.project(x)  # (B, h, N, p): keys and values for every token
        attn = self.attention(w, queries=w[:, :, :rows])  # (B, h, rows, N)
        out = torch.matmul(self.dropout(attn), w)  # (B, h, rows, p)
        return self.to_out(rearrange(out, "b h n p -> b n (h p)"))

    def forward_parts(self, x: Tensor, need_attn: bool = False) -> tuple[Tensor, Tensor, Tensor | None]:
        """Output, per-head projections and (if asked, or on the literal path) attention maps."""
        w = self.project(x)  # (B, h, N, p)
        if self.literal or need_attn:
            attn = self.attention(w)  # (B, h, N, N)
            out = torch.matmul(self.dropout(attn), w)  # (B, h, N, p)
        else:
            attn = None
            dropout_p = self.dropout_p if self.training else 0.0
            if _resolve_kernel(self.kernel, w, dropout_p) == "shared_qkv":
                out = shared_qkv_attention(w, self.scale)  # (B, h, N, p)
            else:
                out = F.scaled_dot_product_attention(w, w, w, dropout_p=dropout_p, scale=self.scale)
        out = rearrange(out, "b h n p -> b n (h p)")
        return self.to_out(out), w, attn


class _FoldedISTAMatrix(torch.autograd.Function):
    """A(D) = η (D^T − D^T D), the folded ISTA step's update matrix, with a one-matmul backward.

    For an upstream gradient G = ∂L/∂A, since d(D^T D) = dD^T D + D^T dD::

        ∂L/∂D = η (G^T − D (G + G^T))

    one d × d × d matmul, where autograd on ``addmm(…, D^T, D)`` spends two (one per factor).
    """

    @staticmethod
    def forward(ctx, D: Tensor, eta: float) -> Tensor:  # type: ignore[override]
        ctx.save_for_backward(D)
        ctx.eta = eta
        return torch.addmm(D.t(), D.t(), D, beta=eta, alpha=-eta)  # (d, d), one fused op

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None]:  # type: ignore[override]
        (D,) = ctx.saved_tensors
        return torch.addmm(grad.t(), D, grad + grad.t(), beta=ctx.eta, alpha=-ctx.eta), None


class ISTA(nn.Module):
    """One step of non-negative ISTA on the LASSO problem (eqs. 16–17), CRATE's MLP replacement.

    With dictionary D = ``weight`` (d × d), step size η and sparsity penalty λ, warm-started at the
    input x = LN(Z^{ℓ+½}) (tokens as rows, so D x is ``x @ D.T``)::

        ISTA(x) = ReLU(x + η D^T (x − D x) − η λ)

    Three algebraically equal ways to compute it, each a method here:

    - ``step_literal``: D^T x − D^T (D x), three matmuls per token, as the official code does
      (used when ``literal=True``);
    - ``step_two_matmuls``: D^T (x − D x), two matmuls per token;
    - ``step_folded``: the step before the ReLU is *affine* in x, so fold it into one matrix,
      x (I + η D − η D^T D) in row form: one matmul per token, plus O(d³) to form the matrix.
      The identity stays out of the matrix: x + x (η D − η D^T D), the addition fused into the
      same ``addmm``. In float32 a matrix holding I would round the small update at the scale of
      1: twice the literal path's rounding error on average, up to 5× at worst, enough to flip
      the occasional ReLU whose input is within rounding of zero. Kept apart, the average error is
      within 1.2× of the literal path's (``tests/unit/models/test_blocks.py``).

    The fast path (``literal=False``) folds when the batch holds at least ``2 d`` tokens, where the
    d³ is paid back, and uses two matmuls otherwise. λ = 0.1 for CRATE classifiers, 0.5 in the
    CRATE-MAE encoder.
    """

    def __init__(self, dim: int, eta: float = 0.1, lambd: float = 0.1, literal: bool = False):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(dim, dim))  # D
        with torch.no_grad():
            nn.init.kaiming_uniform_(self.weight)  # the official initialisation
        self.eta = eta
        self.lambd = lambd
        self.literal = literal

    def step_literal(self, x: Tensor) -> Tensor:
        D = self.weight
        x1 = F.linear(x, D)  # D x                 (B, N, d)
        grad_1 = F.linear(x1, D.t())  # D^T D x     (B, N, d)
        grad_2 = F.linear(x, D.t())  # D^T x        (B, N, d)
        grad_update = self.eta * (grad_2 - grad_1) - self.eta * self.lambd
        return F.relu(x + grad_update)

    def step_two_matmuls(self, x: Tensor) -> Tensor:
        D = self.weight
        residual = x - F.linear(x, D)  # x − D x          (B, N, d)
        return F.relu(x + self.eta * F.linear(residual, D.t()) - self.eta * self.lambd)

    def folded_matrix(self) -> Tensor:
        """The step's update as one matrix, laid out for ``F.linear``: η (D^T − D^T D), so that
        the step before the ReLU is ``x + F.linear(x, A)`` (the linear part is I + A).

        Its gradient is written out (:class:`_FoldedISTAMatrix`): one d × d × d matmul instead of
        the two autograd would spend on D^T D.
        """
        return _FoldedISTAMatrix.apply(self.weight, self.eta)

    def step_folded(self, x: Tensor) -> Tensor:
        flat = x.reshape(-1, x.shape[-1])  # (tokens, d)
        pre = torch.addmm(flat, flat, self.folded_matrix().t())  # x + x A^T: one matmul
        return F.relu(pre.sub_(self.eta * self.lambd)).view(x.shape)  # in place: addmm keeps no output

    def forward(self, x: Tensor) -> Tensor:
        if self.literal:
            return self.step_literal(x)
        d = x.shape[-1]
        if x.numel() >= 2 * d * d:  # at least 2d tokens: folding pays for its O(d³)
            return self.step_folded(x)
        return self.step_two_matmuls(x)

    def extra_repr(self) -> str:
        return f"dim={self.weight.shape[0]}, eta={self.eta}, lambd={self.lambd}, literal={self.literal}"


class OvercompleteISTA(nn.Module):
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
        literal: compute with the official einsums.
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
        literal: bool = False,
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
        self.literal = literal

    @property
    def decoder(self) -> Tensor:
        """The decoding dictionary (d × r·d): ``D1`` when decoupled, else the coding dictionary ``D``."""
        return self.D1 if self.decoupled else self.D

    def codes(self, x: Tensor) -> Tensor:
        """The sparse codes A2: (B, N, d) -> (B, N, r·d), non-negative."""
        D, eta, lambd = self.D, self.eta, self.lambd
        if self.literal:  # the official einsums (written for any leading dims)
            a1 = F.relu(eta * torch.einsum("pd,...p->...d", D, x) - eta * lambd)
            Da1 = torch.einsum("dp,...p->...d", D, a1)
            lasso_grad = torch.einsum("pd,...p->...d", D, Da1 - x)
            return F.relu(a1 - eta * lasso_grad - eta * lambd)
        a1 = F.relu(eta * (x @ D) - eta * lambd)  # (B, N, r·d)
        residual = a1 @ D.t() - x  # D A1 − X          (B, N, d)
        return F.relu(a1 - eta * (residual @ D) - eta * lambd)

    def decode(self, codes: Tensor) -> Tensor:
        """D1 A2 (or D A2 when not decoupled): (B, N, r·d) -> (B, N, d)."""
        if self.literal:
            return torch.einsum("dp,...p->...d", self.decoder, codes)
        return codes @ self.decoder.t()

    def forward(self, x: Tensor) -> Tensor:
        return self.decode(self.codes(x))

    def extra_repr(self) -> str:
        d, rd = self.D.shape
        return (
            f"dim={d}, codes={rd}, eta={self.eta}, lambd={self.lambd}, decoupled={self.decoupled}, "
            f"literal={self.literal}"
        )


class LinearDictionary(nn.Module):
    """The CRATE-MAE decoder's square linear map D̃ (no bias): x -> D̃ x, tokens as rows."""

    def __init__(self, dim: int):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(dim, dim))
        with torch.no_grad():
            nn.init.kaiming_uniform_(self.weight)

    def forward(self, x: Tensor) -> Tensor:
        return F.linear(x, self.weight)


class CRATELayer(nn.ModuleList):
    """One CRATE layer (official: ``[PreNorm(MSSA), PreNorm(ISTA)]``)::

    Z^{ℓ+½} = Z^ℓ + MSSA(LN(Z^ℓ))        # compression step (residual coefficient 1)
    Z^{ℓ+1} = ISTA(LN(Z^{ℓ+½}))           # sparsification; no residual: ReLU output replaces Z
    """

    def __init__(
        self,
        dim: int,
        heads: int,
        dim_head: int,
        dropout: float = 0.0,
        eta: float = 0.1,
        lambd: float = 0.1,
        literal: bool = False,
    ):
        super().__init__(
            [
                PreNorm(dim, MSSA(dim, heads, dim_head, dropout, out_bias=True, literal=literal)),
                PreNorm(dim, ISTA(dim, eta=eta, lambd=lambd, literal=literal)),
            ]
        )

    @property
    def mssa(self) -> MSSA:
        return self[0].fn

    @property
    def ista(self) -> ISTA:
        return self[1].fn

    def forward_rows(self, x: Tensor, rows: int) -> Tensor:
        """The layer's output at the first ``rows`` tokens: (B, N, d) -> (B, rows, d).

        Equal to ``self(x)[:, :rows]``: every token is a key and a value of the attention, and
        everything after it (residual, LayerNorm, ISTA) is token-wise, so the other rows are not
        needed (see ``ImageClassifier.forward``).
        """
        attn_block, ista_block = self[0], self[1]
        z_half = x[:, :rows] + attn_block.fn.forward_rows(attn_block.norm(x), rows)
        return ista_block(z_half)

    def forward(self, x: Tensor, return_trace: bool = False) -> Tensor | tuple[Tensor, LayerTrace]:
        attn_block, ista_block = self[0], self[1]
        if not return_trace:
            z_half = x + attn_block(x)
            return ista_block(z_half)
        out, w, attn = attn_block.fn.forward_parts(attn_block.norm(x), need_attn=True)
        z_half = x + out
        z_out = ista_block(z_half)
        return z_out, LayerTrace(proj=w, attn=attn, z_half=z_half, z_out=z_out, codes=z_out)


#: Sparse-coding blocks a CRATE-α layer can use (its ``sparse_coding`` switch).
SPARSE_CODINGS: tuple[str, ...] = ("alpha", "crate")


class CRATEAlphaLayer(nn.ModuleList):
    """One CRATE-α layer: both blocks residual, LayerNorm eps 1e-6, ``to_out`` without bias::

    Z^{ℓ+½} = Z^ℓ + MSSA(LN(Z^ℓ))
    Z^{ℓ+1} = Z^{ℓ+½} + D1 · ISTA²(LN(Z^{ℓ+½}); D)

    The defaults are the official layer. Three switches undo CRATE-α's changes to the sparse coding
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
        literal: bool = False,
        *,
        decoupled: bool = True,
        residual: bool = True,
        sparse_coding: str = "alpha",
    ):
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
        coder: nn.Module = (
            OvercompleteISTA(dim, overcomplete_ratio, eta, lambd, literal, decoupled=decoupled)
            if sparse_coding == "alpha"
            else ISTA(dim, eta=eta, lambd=lambd, literal=literal)
        )
        super().__init__(
            [
                PreNorm(dim, MSSA(dim, heads, dim_head, dropout, out_bias=False, literal=literal), eps=1e-6),
                PreNorm(dim, coder, eps=1e-6),
            ]
        )
        self.residual = residual
        self.sparse_coding = sparse_coding

    @property
    def mssa(self) -> MSSA:
        return self[0].fn

    @property
    def ista(self) -> OvercompleteISTA | ISTA:
        return self[1].fn

    def sparse_code(self, z_half: Tensor) -> tuple[Tensor, Tensor]:
        """(codes, block output) of the sparse-coding block for the stream Z^{ℓ+½} (B, N, d)."""
        block = self[1]
        x = block.norm(z_half)  # (B, N, d)
        if self.sparse_coding == "crate":
            codes = block.fn(x)  # (B, N, d): CRATE's code is its output
            return codes, codes
        codes = block.fn.codes(x)  # (B, N, r·d)
        return codes, block.fn.decode(codes)  # (B, N, d)

    def forward_rows(self, x: Tensor, rows: int) -> Tensor:
        """The layer's output at the first ``rows`` tokens: (B, N, d) -> (B, rows, d), equal to
        ``self(x)[:, :rows]`` (everything after the attention is token-wise)."""
        attn_block, ista_block = self[0], self[1]
        z_half = x[:, :rows] + attn_block.fn.forward_rows(attn_block.norm(x), rows)
        out = ista_block(z_half)
        return z_half + out if self.residual else out

    def forward(self, x: Tensor, return_trace: bool = False) -> Tensor | tuple[Tensor, LayerTrace]:
        attn_block, ista_block = self[0], self[1]
        if not return_trace:
            z_half = x + attn_block(x)
            out = ista_block(z_half)
            return z_half + out if self.residual else out
        out, w, attn = attn_block.fn.forward_parts(attn_block.norm(x), need_attn=True)
        z_half = x + out
        codes, coded = self.sparse_code(z_half)  # (B, N, r·d), (B, N, d)
        z_out = z_half + coded if self.residual else coded
        return z_out, LayerTrace(proj=w, attn=attn, z_half=z_half, z_out=z_out, codes=codes)

    def extra_repr(self) -> str:
        return f"sparse_coding={self.sparse_coding!r}, residual={self.residual}"


class CRATEDecoderLayer(nn.ModuleList):
    """One CRATE-MAE decoder layer, the inverse of encoder layer L + 1 − ℓ (DESIGN.md §2)::

        Z̃^{ℓ+½} = D̃ LN(Z̃^ℓ)                        # undoes ISTA's sparsification (linear map)
        Z̃^{ℓ+1} = Z̃^{ℓ+½} − MSSA(LN(Z̃^{ℓ+½}))        # undoes the compression step

    Official attribute order: the linear map first (``0``), then MSSA (``1``).
    """

    def __init__(self, dim: int, heads: int, dim_head: int, dropout: float = 0.0, literal: bool = False):
        super().__init__(
            [
                PreNorm(dim, LinearDictionary(dim)),
                PreNorm(dim, MSSA(dim, heads, dim_head, dropout, out_bias=True, literal=literal)),
            ]
        )

    @property
    def mssa(self) -> MSSA:
        return self[1].fn

    def forward(self, x: Tensor, return_trace: bool = False) -> Tensor | tuple[Tensor, LayerTrace]:
        dict_block, attn_block = self[0], self[1]
        z_half = dict_block(x)
        if not return_trace:
            return z_half - attn_block(z_half)
        out, w, attn = attn_block.fn.forward_parts(attn_block.norm(z_half), need_attn=True)
        z_out = z_half - out
        return z_out, LayerTrace(proj=w, attn=attn, z_half=z_half, z_out=z_out)


class Transformer(nn.Module):
    """A stack of layers under the official attribute name ``layers``."""

    def __init__(self, layers: list[nn.Module]):
        super().__init__()
        self.layers = nn.ModuleList(layers)

    def forward(self, x: Tensor, rows: int | None = None) -> Tensor:
        """(B, N, d) -> (B, N, d); with ``rows``, the last layer computes only the first ``rows``
        tokens' outputs (its ``forward_rows``) and the result is (B, rows, d)."""
        last = len(self.layers) - 1
        for i, layer in enumerate(self.layers):
            x = layer.forward_rows(x, rows) if rows is not None and i == last else layer(x)
        return x

    def forward_trace(self, x: Tensor) -> tuple[Tensor, list[LayerTrace]]:
        traces = []
        for layer in self.layers:
            x, trace = layer(x, return_trace=True)
            traces.append(trace)
        return x, traces


def set_literal(model: nn.Module, literal: bool = True) -> nn.Module:
    """Switch every block of ``model`` to the derivation-literal (True) or fast (False) path."""
    for module in model.modules():
        if hasattr(module, "literal") and isinstance(module.literal, bool):
            module.literal = literal
    return model


def set_attention_kernel(model: nn.Module, kernel: str) -> nn.Module:
    """Set the fast-path attention kernel (one of :data:`ATTENTION_KERNELS`) of every MSSA block."""
    _check_kernel(kernel)
    blocks = [m for m in model.modules() if isinstance(m, MSSA)]
    for module in blocks:
        _check_kernel(kernel, module.dropout_p)
    for module in blocks:
        module.kernel = kernel
    return model
