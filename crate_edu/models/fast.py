"""The fast path: the same numbers as the official arithmetic, computed faster.

crate_edu computes each block at three levels, with one name each:

1. **derivation** — :mod:`crate_edu.coding_rate`: the gradient steps of the papers, with γ, κ and
   the subspaces U (``mssa_step``, ``ista_step``);
2. **reference** — the official code's arithmetic, written out in the model files
   (``crate.py``, ``crate_alpha.py``, ...): the explicit N × N softmax, three matmuls in ISTA.
   A block computes it when its ``reference`` flag is set (``set_reference(model, True)``);
3. **fast** — this module, the default: each block reaches it through one call.

The fast path equals the reference path within float rounding, forward and gradients
(``tests/unit/models/test_fast.py``; the official fixtures in ``tests/unit/models/test_models.py``).
What it does:

- MSSA's attention (:func:`subspace_attention`): on CPU a kernel that writes out the backward
  pass of queries = keys = values (:func:`shared_qkv_attention`), elsewhere PyTorch's
  ``scaled_dot_product_attention``; the choice is the block's ``kernel``
  (:data:`ATTENTION_KERNELS`, :func:`set_attention_kernel`); ``causal=True`` gives the language
  models' masked attention (each token attends to itself and the tokens before it): the shared
  kernel with its scores masked and the same written-out backward, or ``is_causal=True`` in
  ``scaled_dot_product_attention`` (the ``'auto'`` choice there, on the CPU too);
- ISTA's step (:func:`ista_step`): folded into one matmul with a hand-written gradient for the
  folded matrix (:func:`ista_folded`), or two matmuls for small batches (:func:`ista_two_matmuls`);
- CRATE-α's overcomplete sparse coding block (:func:`overcomplete_ista`): its four matmuls with
  the scaling and shifts folded into them and a written-out backward (:class:`_OvercompleteISTA`);
- CRATE-LM's sparse coding block (:func:`tied_overcomplete_ista`): the same block with the decoder
  tied to the dictionary, four matmuls where the official code spends five (it computes D^T x
  twice);
- a classifier's last layer (:func:`forward_cls_logits`): only the [CLS] row, the one row the head
  reads.

What each part gains is measured in ``benchmarks/train_step.py``, for CRATE-α in
``benchmarks/crate_alpha_step.py`` and for the language models in ``benchmarks/lm_step.py``
(results and discussion in ``benchmarks/README.md``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

__all__ = [
    "ATTENTION_KERNELS",
    "check_kernel",
    "subspace_attention",
    "shared_qkv_attention",
    "set_attention_kernel",
    "ista_step",
    "ista_two_matmuls",
    "ista_folded",
    "folded_ista_matrix",
    "overcomplete_ista",
    "overcomplete_ista_matmuls",
    "tied_overcomplete_ista",
    "prunes_last_layer",
    "forward_cls_logits",
]


# ---------------------------------------------------------------------------------- MSSA's attention
#: Attention kernels of MSSA's fast path (the block's ``kernel``).
ATTENTION_KERNELS: tuple[str, ...] = ("auto", "sdpa", "shared_qkv")


def check_kernel(kernel: str, dropout: float = 0.0) -> None:
    """Raise ``ValueError`` unless ``kernel`` is one of :data:`ATTENTION_KERNELS` and can serve a
    block with attention dropout ``dropout`` (the shared-q/k/v kernel has none)."""
    if kernel not in ATTENTION_KERNELS:
        raise ValueError(f"unknown attention kernel {kernel!r}; choose one of {', '.join(ATTENTION_KERNELS)}")
    if kernel == "shared_qkv" and dropout > 0:
        raise ValueError(
            f"the 'shared_qkv' attention kernel has no attention dropout (dropout={dropout}); "
            "use kernel='auto' or 'sdpa'"
        )


def subspace_attention(
    w: Tensor, scale: float, kernel: str = "auto", dropout: float = 0.0, causal: bool = False
) -> Tensor:
    """softmax(scale · w w^T) w per (batch, head), for w of shape (B, h, N, p): MSSA's fast path.

    ``kernel`` is ``'shared_qkv'`` (:func:`shared_qkv_attention`, fastest on CPU), ``'sdpa'``
    (``scaled_dot_product_attention``: flash / memory-efficient kernels on GPU) or ``'auto'``:
    ``'shared_qkv'`` for eager float32/64 CPU work without attention dropout or autocast,
    ``'sdpa'`` everywhere else (GPU, autocast, ``torch.compile``, dropout). ``dropout`` is the
    attention dropout probability (0 in evaluation). ``causal=True`` masks the scores of later
    tokens (token i attends to tokens 0..i): the language models' attention. There ``'auto'`` is
    ``'sdpa'`` on the CPU too: its causal kernel skips the masked half of the scores, which the
    shared-q/k/v kernel computes and discards, so it is as fast at 128 tokens and twice as fast at
    1024 (``benchmarks/lm_step.py``).
    """
    if _resolve_kernel(kernel, w, dropout, causal) == "shared_qkv":
        if causal:
            return shared_qkv_attention(w, scale, causal=True)  # (B, h, N, p)
        return shared_qkv_attention(w, scale)  # (B, h, N, p)
    return F.scaled_dot_product_attention(w, w, w, dropout_p=dropout, scale=scale, is_causal=causal)


def _resolve_kernel(kernel: str, w: Tensor, dropout: float, causal: bool = False) -> str:
    """The kernel ``'auto'`` stands for (see :func:`subspace_attention`)."""
    if kernel != "auto":
        return kernel
    if (
        not causal
        and w.device.type == "cpu"
        and w.dtype in (torch.float32, torch.float64)
        and dropout == 0.0
        and not torch.is_autocast_enabled("cpu")
        and not torch.compiler.is_compiling()
    ):
        return "shared_qkv"
    return "sdpa"


def shared_qkv_attention(w: Tensor, scale: float, causal: bool = False) -> Tensor:
    """softmax(scale · w w^T) w for w of shape (B, h, N, p), with the backward of q = k = v.

    Equal to ``scaled_dot_product_attention(w, w, w, scale=scale, is_causal=causal)`` and to the
    reference ``softmax(w @ w.transpose(-1, -2) * scale) @ w`` (with the scores of later tokens set
    to −∞ when ``causal``) within float rounding, gradients included
    (``tests/unit/models/test_fast.py``, ``tests/unit/models/test_crate_lm.py``); see
    :class:`_SharedQKVAttention` for the derivation. Not twice differentiable.
    """
    if w.ndim != 4:
        raise ValueError(f"w must have shape (B, heads, N, dim_head), got {tuple(w.shape)}")
    if w.numel() == 0:  # an empty batch (or no tokens): nothing to attend over, an empty output
        return w * scale  # (B, h, N, p), keeps autograd's graph so that backward gives zero-size grads
    return _SharedQKVAttention.apply(w, scale, causal)


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
    the reference arithmetic (explicit softmax), and the N × N probabilities are kept for the
    backward pass, as on the reference path.

    Causal attention (``causal=True``, the language models) sets the scores of later tokens to −∞
    before the softmax, so P is zero above the diagonal. The backward pass needs no change: dS =
    P ∘ (…) is zero wherever P is, so the masked entries pass no gradient.

    The N × N work goes in blocks of heads whose score matrices fill about
    :data:`_BLOCK_BYTES` (:func:`_blocks`), so that each block's scores, softmax, gradient and its
    transpose stay in the core's cache between one operation and the next instead of making a
    round trip to memory each time; only P is written out once and read back once. Without a
    gradient to compute (evaluation), P is not kept: one block's worth of scratch serves all. On
    CPU, in float32, this beats ``scaled_dot_product_attention`` (``benchmarks/README.md``); on
    GPUs the fused flash and memory-efficient kernels win, and MSSA uses them there.
    """

    @staticmethod
    def forward(ctx, w: Tensor, scale: float, causal: bool = False) -> Tensor:  # type: ignore[override]
        B, h, N, p = w.shape
        flat, blocks = _blocks(B, h, N, w.element_size())
        w4 = w.reshape(1, B * h, N, p) if flat else w  # flat: a copy when w is a head-split view
        keep = ctx.needs_input_grad[0]  # the backward pass needs every block's P
        size = max(hs.stop - hs.start for _, hs in blocks)
        probs = w.new_empty(*w4.shape[:2], N, N) if keep else w.new_empty(1, size, N, N)
        out = w.new_empty(w4.shape)
        later = torch.ones(N, N, dtype=torch.bool, device=w.device).triu_(1) if causal else None
        for b, hs in blocks:
            P = probs[b, hs] if keep else probs[0, : hs.stop - hs.start]  # (k, N, N)
            wc = w4[b, hs]  # (k, N, p)
            torch.bmm(wc, wc.transpose(1, 2), out=P).mul_(scale)  # S = s w w^T
            if later is not None:
                P.masked_fill_(later, float("-inf"))  # token i sees tokens 0..i only
            torch.softmax(P, dim=-1, out=P)  # in place: S is not needed again
            torch.bmm(P, wc, out=out[b, hs])  # O = P w
        if keep:
            ctx.save_for_backward(w4, probs)
            ctx.scale, ctx.flat, ctx.blocks = scale, flat, blocks
        return out.view(B, h, N, p)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_out: Tensor) -> tuple[Tensor, None, None]:  # type: ignore[override]
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
        return grad_w.view(B, h, N, p), None, None


#: Bytes of N × N score matrices that one block of :class:`_SharedQKVAttention` works on at once:
#: about a core's L2 cache (1 MiB on current x86 server cores); chosen by measurement
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


def set_attention_kernel(model: nn.Module, kernel: str) -> nn.Module:
    """Set the fast-path attention kernel (one of :data:`ATTENTION_KERNELS`) of every MSSA block
    of ``model`` (the blocks with a ``kernel``); returns ``model``."""
    check_kernel(kernel)
    blocks = [m for m in model.modules() if isinstance(getattr(m, "kernel", None), str)]
    for module in blocks:
        check_kernel(kernel, module.dropout_p)
    for module in blocks:
        module.kernel = kernel
    return model


# ---------------------------------------------------------------------------------------- ISTA's step
def ista_step(x: Tensor, D: Tensor, eta: float, lambd: float) -> Tensor:
    """ISTA(x) = ReLU(x + η D^T (x − D x) − η λ) for tokens x (..., d) as rows: ISTA's fast path.

    Folds the step into one matmul (:func:`ista_folded`) when the batch holds at least ``2 d``
    tokens, where the O(d³) of forming the folded matrix is paid back; two matmuls otherwise
    (:func:`ista_two_matmuls`).
    """
    d = x.shape[-1]
    if x.numel() >= 2 * d * d:  # at least 2d tokens
        return ista_folded(x, D, eta, lambd)
    return ista_two_matmuls(x, D, eta, lambd)


def ista_two_matmuls(x: Tensor, D: Tensor, eta: float, lambd: float) -> Tensor:
    """The step as D^T (x − D x): two matmuls per token, where the reference spends three."""
    residual = x - F.linear(x, D)  # x − D x                                       (..., d)
    return F.relu(x + eta * F.linear(residual, D.t()) - eta * lambd)  # ReLU(x + η D^T(x − D x) − ηλ)


def ista_folded(x: Tensor, D: Tensor, eta: float, lambd: float) -> Tensor:
    """The step as one matmul: before the ReLU it is *affine* in x, x (I + η D − η D^T D) − ηλ in
    row form, so the matrix is formed once per batch (:func:`folded_ista_matrix`).

    The identity stays out of the matrix: x + x A^T, the addition fused into the same ``addmm``.
    In float32 a matrix holding I would round the small update at the scale of 1, enough to flip
    the occasional ReLU whose input is within rounding of zero; kept apart, the rounding error
    stays near the reference step's (``tests/unit/models/test_fast.py`` measures both).
    """
    flat = x.reshape(-1, x.shape[-1])  # (tokens, d)
    pre = torch.addmm(flat, flat, folded_ista_matrix(D, eta).t())  # x + x A^T: one matmul
    return F.relu(pre.sub_(eta * lambd)).view(x.shape)  # in place: addmm keeps no output


def folded_ista_matrix(D: Tensor, eta: float) -> Tensor:
    """A = η (D^T − D^T D), laid out for ``F.linear``: the step before the ReLU is x + F.linear(x, A).

    Its gradient is written out (:class:`_FoldedISTAMatrix`): one d × d × d matmul instead of the
    two autograd would spend on D^T D.
    """
    return _FoldedISTAMatrix.apply(D, eta)


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


# ------------------------------------------------------------------- CRATE-α's sparse coding block
def overcomplete_ista(x: Tensor, D: Tensor, D1: Tensor, eta: float, lambd: float) -> tuple[Tensor, Tensor]:
    """CRATE-α's sparse coding block, its fast path: the codes A2 and the output D1 A2.

    For tokens x (..., d) as rows and dictionaries D, D1 (d, r·d)::

        A1 = ReLU(η (x D − λ))                                   # (..., r·d)
        A2 = ReLU(A1 − η ((A1 D^T − x) D + λ))                   # (..., r·d)
        out = A2 D1^T                                            # (..., d)

    Returns ``(A2, out)``. Eager float32/64 work goes through :class:`_OvercompleteISTA` (the
    elementwise work folded into the four matmuls, a written-out backward that keeps four
    tensors); under autocast or ``torch.compile`` the same four matmuls go through autograd
    (:func:`overcomplete_ista_matmuls`). ``D1`` may be ``D`` itself (the tied block).
    """
    if (
        x.dtype in (torch.float32, torch.float64)
        and not x.is_meta  # shapes only (FLOP counts): no autocast state to ask
        and not torch.is_autocast_enabled(x.device.type)
        and not torch.compiler.is_compiling()
    ):
        return _OvercompleteISTA.apply(x, D, D1, eta, lambd)
    return overcomplete_ista_matmuls(x, D, D1, eta, lambd)


def overcomplete_ista_matmuls(
    x: Tensor, D: Tensor, D1: Tensor, eta: float, lambd: float
) -> tuple[Tensor, Tensor]:
    """The block as four plain matmuls through autograd: ``(A2, out)`` as :func:`overcomplete_ista`."""
    a1 = F.relu(eta * (x @ D) - eta * lambd)  # A1 = ReLU(η x D − ηλ)                   (..., r·d)
    residual = a1 @ D.t() - x  # A1 D^T − x                                            (..., d)
    a2 = F.relu(a1 - eta * (residual @ D) - eta * lambd)  # A2                           (..., r·d)
    return a2, a2 @ D1.t()  # out = A2 D1^T                                             (..., d)


class _OvercompleteISTA(torch.autograd.Function):
    """CRATE-α's block with its elementwise work folded into the matmuls and its backward written out.

    Both ISTA steps have one form: from codes A (A0 = 0), with y = x − A D^T, the step is
    ReLU(A + η (y D − λ)). Appending a column of −1 to y and a row λ 1^T to D makes the shift part
    of the product, and ``addmm``'s factor α = η its scaling: with D⁺ = [D; λ 1^T] ((d + 1) × r·d)
    and y⁺ = [y, −1] (N × (d + 1))::

        A1 = ReLU(η x⁺ D⁺)                x⁺ = [x, −1]; one addmm (β = 0, α = η)
        y⁺ = x⁺ − [A1 D^T, 0]             one addmm, into a copy of x⁺
        A2 = ReLU(A1 + η y⁺ D⁺)           one addmm (α = η)
        out = A2 D1^T

    so each r·d-wide step costs its matmul and one ReLU in place (and one copy of A1, which the
    backward pass keeps): no separate scaling, shift or subtraction over the wide codes. The
    backward pass, with G2 = ∂L/∂A2 (from ``out``, plus any gradient of the codes themselves)::

        G2  = (∂L/∂out D1 + ∂L/∂A2) ∘ [A2 > 0]            ∂L/∂D1 = ∂L/∂out^T A2
        dy  = η G2 D^T                                     gradient of y = x − A1 D^T
        G1  = (G2 − dy D) ∘ [A1 > 0]                       A1 directly, then through y
        ∂L/∂D = η (y^T G2 + x^T G1) − dy^T A1
        ∂L/∂x = dy + η G1 D^T

    eight matmuls, the minimum for four linear maps (an input and a weight gradient each),
    accumulated in place (``addmm(..., out=)``), with two elementwise passes over the wide codes
    (the ReLU masks, in place), where autograd on the plain form spends about a dozen, each into a
    new tensor. Kept for the backward pass: x⁺, y⁺ (d + 1 wide), A1 and A2 (r·d wide), what
    autograd keeps too. Not twice differentiable.
    """

    @staticmethod
    def forward(ctx, x: Tensor, D: Tensor, D1: Tensor, eta: float, lambd: float):  # type: ignore[override]
        shape, d = x.shape, D.shape[0]
        flat = x.reshape(-1, d)  # tokens as rows                                         (N, d)
        xp = torch.cat([flat, flat.new_full((flat.shape[0], 1), -1.0)], dim=1)  # x⁺       (N, d + 1)
        Dp = torch.cat([D, D.new_full((1, D.shape[1]), lambd)])  # D⁺ = [D; λ 1^T]          (d + 1, r·d)
        zero = x.new_zeros(()).expand(xp.shape[0], D.shape[1])  # beta=0: addmm only scales by η
        a1 = torch.addmm(zero, xp, Dp, beta=0, alpha=eta).relu_()  # A1 = ReLU(η (x D − λ))  (N, r·d)
        yp = xp.clone()
        y = yp[:, :d]  # out=: in place, and FlopCounterMode counts it (it misses addmm_)
        torch.addmm(y, a1, D.t(), alpha=-1, out=y)  # y = x − A1 D^T, so y⁺ = [y, −1]      (N, d)
        a2 = torch.addmm(a1, yp, Dp, alpha=eta).relu_()  # A2 = ReLU(A1 + η (y D − λ))     (N, r·d)
        out = torch.mm(a2, D1.t())  # D1 A2                                                (N, d)
        ctx.save_for_backward(xp, yp, a1, a2, D, D1)
        ctx.eta, ctx.shape = eta, shape
        ctx.set_materialize_grads(False)
        return a2.view(*shape[:-1], a2.shape[1]), out.view(shape)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_codes: Tensor | None, grad_out: Tensor | None):  # type: ignore[override]
        xp, yp, a1, a2, D, D1 = ctx.saved_tensors
        eta, d = ctx.eta, D.shape[0]
        need_x, need_D, need_D1 = ctx.needs_input_grad[:3]
        go = grad_out.reshape(-1, d) if grad_out is not None else None
        grad_x = grad_D = grad_D1 = None
        if need_D1 and go is not None:
            grad_D1 = torch.mm(go.t(), a2)  # ∂L/∂out^T A2                                (d, r·d)
        if not (need_x or need_D) or (go is None and grad_codes is None):
            return grad_x, grad_D, grad_D1, None, None
        g = torch.mm(go, D1) if go is not None else torch.zeros_like(a2)  # ∂L/∂A2 via out (N, r·d)
        if grad_codes is not None:
            g.add_(grad_codes.reshape(g.shape))
        torch.ops.aten.threshold_backward.grad_input(g, a2, 0, grad_input=g)  # G2, in place
        dy = torch.mm(g, D.t()).mul_(eta)  # η G2 D^T                                      (N, d)
        if need_D:  # η y^T G2 − dy^T A1                                                   (d, r·d)
            grad_D = torch.mm(yp[:, :d].t(), g).mul_(eta)
            torch.addmm(grad_D, dy.t(), a1, alpha=-1, out=grad_D)
        torch.addmm(g, dy, D, alpha=-1, out=g)  # ∂L/∂A1 = G2 − dy D
        torch.ops.aten.threshold_backward.grad_input(g, a1, 0, grad_input=g)  # G1, in place
        if need_D:
            torch.addmm(grad_D, xp[:, :d].t(), g, alpha=eta, out=grad_D)  # + η x^T G1
        if need_x:
            grad_x = torch.addmm(dy, g, D.t(), alpha=eta).view(ctx.shape)  # dy + η G1 D^T  (..., d)
        return grad_x, grad_D, grad_D1, None, None


# ------------------------------------------------------------------- CRATE-LM's sparse coding block
def tied_overcomplete_ista(x: Tensor, W: Tensor, eta: float, lambd: float) -> tuple[Tensor, Tensor]:
    """CRATE-LM's sparse coding block, its fast path: the codes z1 and their decoding z1 W.

    ``W`` (m, d) is the official ``ista.weight`` (m = 4d), the dictionary in row form: D = W^T
    (d, m). For tokens x (..., d) as rows the official block computes::

        z0  = ReLU(η x W^T − ηλ)                          # x W^T: matmul 1           (..., m)
        z1  = ReLU(z0 + η (x W^T − (z0 W) W^T) − ηλ)      # x W^T again, z0 W, · W^T: 2, 3, 4
        out = z1 W                                        # decode: matmul 5          (..., d)

    five matmuls, D^T x among them twice. Since x W^T − (z0 W) W^T = (x − z0 W) W^T, the second
    step needs no D^T x of its own: four matmuls (x W^T, z0 W, (x − z0 W) W^T, z1 W), exact in
    exact arithmetic. That is CRATE-α's block with its decoder tied to its dictionary, so this is
    :func:`overcomplete_ista` with D = D1 = W^T, and its folded shifts and written-out backward
    come with it. Returns ``(z1, out)``.
    """
    D = W.t()  # the dictionary, (d, m)
    return overcomplete_ista(x, D, D, eta, lambd)


# ------------------------------------------------------------------------- the last layer, pruned
def prunes_last_layer(model: nn.Module) -> bool:
    """Whether ``model.forward`` computes only the [CLS] row of the last layer
    (:func:`forward_cls_logits`): ``pool='cls'``, ``model.prune_last_layer`` set (the default),
    and no block of the last layer on the reference path. A model with its own rule says so
    (ToST: its last class-attention block, ``ToST.prunes_last_layer``)."""
    if callable(own := getattr(model, "prunes_last_layer", None)):
        return own()
    if not (model.prune_last_layer and model.config.pool == "cls"):
        return False
    last = model.transformer.layers[-1]
    return hasattr(last, "residual") and not any(getattr(m, "reference", False) for m in last.modules())


def forward_cls_logits(model: nn.Module, img: Tensor) -> Tensor:
    """A classifier's logits (B, num_classes), its last layer computing only the [CLS] row.

    Exact: the head reads one row, the [CLS] token still attends to every token, and everything
    after the attention (residual, LayerNorm, ISTA or MLP) is token-wise, so the other N rows of
    the last layer would be computed and dropped (and, in training, back-propagated as zeros).
    Used by ``ImageClassifier.forward`` when :func:`prunes_last_layer`.
    """
    x = model.embed(img)  # (B, N + 1, d)
    layers = model.transformer.layers
    for layer in layers[:-1]:
        x = layer(x)  # (B, N + 1, d)
    cls = _layer_rows(layers[-1], x, rows=1)[:, 0]  # (B, d)
    return model.mlp_head(cls)  # (B, num_classes)


def _layer_rows(layer: nn.Module, x: Tensor, rows: int) -> Tensor:
    """A layer ``[PreNorm(attention), PreNorm(block)]``'s output at its first ``rows`` tokens:
    (B, N, d) -> (B, rows, d), equal to ``layer(x)[:, :rows]``. ``layer.residual`` says whether the
    second block adds to the stream (CRATE-α, ViT) or replaces it (CRATE's ISTA)."""
    attn_block, second = layer[0], layer[1]
    z_half = x[:, :rows] + _attention_rows(attn_block.fn, attn_block.norm(x), rows)  # (B, rows, d)
    out = second(z_half)  # token-wise                                                (B, rows, d)
    return z_half + out if layer.residual else out


def _attention_rows(attn: nn.Module, x: Tensor, rows: int) -> Tensor:
    """An attention block's output at the first ``rows`` tokens: (B, N, d) -> (B, rows, d).

    Every token still serves as a key and a value; only the first ``rows`` serve as queries, so
    the scores are (rows × N) per head: the reference arithmetic restricted to those rows.
    """
    if hasattr(attn, "to_qkv"):  # ViT: separate queries, keys and values
        chunks = attn.to_qkv(x).chunk(3, dim=-1)
        q, k, v = (rearrange(t, "b n (h p) -> b h n p", h=attn.heads) for t in chunks)
    else:  # MSSA: queries = keys = values = U_k^T z
        q = k = v = rearrange(attn.qkv(x), "b n (h p) -> b h n p", h=attn.heads)  # (B, h, N, p)
    probs = torch.softmax(q[:, :, :rows] @ k.transpose(-1, -2) * attn.scale, dim=-1)  # (B, h, rows, N)
    out = attn.dropout(probs) @ v  # (B, h, rows, p)
    return attn.to_out(rearrange(out, "b h n p -> b n (h p)"))  # (B, rows, d)
