"""Coding rates, rate reduction and the two CRATE operators derived from them.

Paper: Yu et al., "White-Box Transformers via Sparse Rate Reduction", arXiv 2306.01129.
Equation numbers below are that paper's. The last section goes back to the theory before CRATE:
MCR² with class labels (Yu et al. 2020, arXiv 2006.08558) and the operators E, C_j of its gradient
that ReduNet is built from (Chan et al., arXiv 2105.10446).

This module is the **derivation**, the first of crate_edu's three levels (docs/design.md): the
gradient steps as the paper derives them, with γ, κ and the subspaces U. The models compute the
official code's arithmetic instead (the **reference** path, ``reference=True``) or, by default,
the same numbers faster (the **fast** path, :mod:`crate_edu.models.fast`); the notebooks check
each level against the one before.

Convention: **tokens are rows**. A set of N tokens of width d is a tensor ``Z`` of shape
``(..., N, d)``, the transpose of the paper's ``Z ∈ R^{d×N}``, so it is laid out like the model
tensors ``(B, N, d)`` and the per-head tensors ``(B, h, N, p)``. Every function batches over the
leading dimensions. A family of K subspaces is one tensor ``U`` of shape ``(K, d, p)``; ``U[k]``
is the paper's ``U_k ∈ R^{d×p}`` (orthonormal columns in theory; not required here). In row form
the paper's ``U_k^T Z`` (p×N) becomes ``Z @ U_k`` of shape ``(N, p)``. Rates are in nats.

Map of the module:

=================================  ==============================================================
eq. 7                              :func:`coding_rate` R(Z; ε), with the d×d or the N×N Gram
eq. 8                              :func:`compression_rate` R^c(Z; U_[K])
R − R^c                            :func:`rate_reduction` ΔR, :func:`rate_reduction_bound` its
                                   maximum over complete splits
eq. 1                              :func:`sparse_rate_reduction` R − R^c − λ‖Z‖
eq. 9                              :func:`grad_compression_rate` ∇_Z R^c in closed form
App. A.2                           :func:`grad_compression_rate_neumann` (I + γA)^{-1} ≈ I − γA
eq. 9 step                         :func:`gram_step` Z − κ ∇_Z R^c
eqs. 10–11                         :func:`ssa` subspace self-attention
eq. 12                             :func:`mssa`, :func:`mssa_step` (1 − κγ) Z + κγ MSSA(Z), with
                                   a temperature τ and a residual coefficient as knobs
eq. 12, causal (language)          :func:`causal_mssa`, :func:`causal_mssa_step` (each token
                                   against its prefix, γ_t = p/((t+1)ε²): :func:`prefix_gamma`),
                                   :func:`causal_grad_compression_rate` ∇_{z_t} R^c(Z_{≤t})
eq. 11's softmax                   :func:`softmax_membership`, :func:`membership_entropy`
a step against −∇R^c               :func:`cosine`
eqs. 16–17                         :func:`lasso_objective`, :func:`soft_threshold_nonneg`,
                                   :func:`ista_step`, :func:`ista_solve`, :func:`max_step_size`
sparse codes, measured             :func:`fraction_nonzero`, :func:`l1_norm`,
                                   :func:`reconstruction_error`
layer-wise figure                  :func:`measure_coding_rate`, :func:`measure_sparsity`,
                                   :func:`measure_nonzero` (as the official ``vis_utils``),
                                   :func:`measure_coding_rate_range`
toy data                           :func:`union_of_subspaces`, :func:`random_complete_split`
MCR² (arXiv 2006.08558)            :func:`class_compression_rate` R^c(Z, Π) (classes given, not
                                   subspaces), :func:`mcr2` ΔR = R − R^c, :func:`label_memberships`
                                   Π, :func:`subspaces_at_angle` (why MCR² prefers orthogonal
                                   subspaces), :func:`redunet_mixture` (the official toy data)
ReduNet (arXiv 2105.10446)         :func:`expansion_operator` E, :func:`compression_operators`
                                   C_j and γ_j, :func:`grad_coding_rate` Z E,
                                   :func:`grad_class_compression_rate`, :func:`grad_mcr2`
=================================  ==============================================================
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

__all__ = [
    "coding_rate",
    "compression_rate",
    "rate_reduction",
    "rate_reduction_bound",
    "sparse_rate_reduction",
    "grad_compression_rate",
    "grad_compression_rate_neumann",
    "gram_step",
    "ssa",
    "mssa",
    "mssa_step",
    "prefix_gamma",
    "causal_grad_compression_rate",
    "causal_mssa",
    "causal_mssa_step",
    "softmax_membership",
    "membership_entropy",
    "cosine",
    "lasso_objective",
    "soft_threshold_nonneg",
    "ista_step",
    "ista_solve",
    "max_step_size",
    "fraction_nonzero",
    "l1_norm",
    "reconstruction_error",
    "measure_coding_rate",
    "measure_coding_rate_range",
    "measure_sparsity",
    "measure_nonzero",
    "union_of_subspaces",
    "random_complete_split",
    "label_memberships",
    "class_compression_rate",
    "mcr2",
    "expansion_operator",
    "compression_operators",
    "grad_coding_rate",
    "grad_class_compression_rate",
    "grad_mcr2",
    "subspaces_at_angle",
    "REDUNET_MIXTURE_CENTERS",
    "redunet_mixture",
]

_FORMS = ("auto", "d", "n")


# ---------------------------------------------------------------------------------------------
# input checks: every message says what was received, what was expected and what to do
# ---------------------------------------------------------------------------------------------


def _check_tokens(Z: torch.Tensor, name: str = "Z") -> None:
    if not isinstance(Z, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of shape (..., N, d), got {type(Z).__name__}")
    if Z.ndim < 2:
        raise ValueError(
            f"{name} must have shape (..., N, d) with tokens as rows (at least 2 dims), got shape "
            f"{tuple(Z.shape)}; for a single token use {name}[None, :], for the paper's d×N layout "
            f"pass {name}.T"
        )
    if not Z.is_floating_point():
        raise ValueError(f"{name} must be a floating-point tensor, got dtype {Z.dtype}; use {name}.float()")


def _check_eps(eps: float, name: str = "eps") -> None:
    if not (isinstance(eps, (int, float)) and math.isfinite(eps) and eps > 0):
        raise ValueError(
            f"{name} is the distortion ε and must be a finite number > 0, got {eps!r}; "
            f"the paper's examples use ε = 0.5, the official layer-wise measurement ε² = 0.01"
        )


def _check_subspaces(Z: torch.Tensor, U: torch.Tensor) -> None:
    _check_tokens(Z)
    if not isinstance(U, torch.Tensor):
        raise TypeError(f"U must be a torch.Tensor of shape (K, d, p), got {type(U).__name__}")
    if U.ndim != 3:
        hint = "; for a single subspace U_k of shape (d, p) pass U_k[None]" if U.ndim == 2 else ""
        raise ValueError(
            f"U must have shape (K, d, p) (K subspaces U_k ∈ R^(d×p)), got {tuple(U.shape)}{hint}"
        )
    if U.shape[1] != Z.shape[-1]:
        raise ValueError(
            f"U has ambient dimension d={U.shape[1]} but the tokens in Z have width d={Z.shape[-1]} "
            f"(Z shape {tuple(Z.shape)}, U shape {tuple(U.shape)}); U must be (K, d, p) with the same d "
            f"as Z's last dim — if U is stored as (K, p, d) pass U.transpose(-1, -2)"
        )


def _check_form(form: str) -> None:
    if form not in _FORMS:
        raise ValueError(
            f"form must be one of {_FORMS} ('d': d×d Gram Z^T Z, 'n': N×N Gram Z Z^T), got {form!r}"
        )


# ---------------------------------------------------------------------------------------------
# log-determinant of I + c·Gram, the one numerical kernel everything below shares
# ---------------------------------------------------------------------------------------------


def _logdet_pd(M: torch.Tensor) -> torch.Tensor:
    """log det of symmetric positive-definite matrices (..., m, m) -> (...), via Cholesky.

    log det M = 2 Σ_i log L_ii for M = L L^T. I + c·Gram with c > 0 is always PD, so Cholesky only
    fails for non-finite input or catastrophic round-off; then fall back to ``slogdet``.
    """
    L, info = torch.linalg.cholesky_ex(M)
    if bool((info != 0).any()):
        return torch.linalg.slogdet(M).logabsdet
    return 2.0 * torch.log(torch.diagonal(L, dim1=-2, dim2=-1)).sum(-1)


def _half_logdet_gram(W: torch.Tensor, scale: float | torch.Tensor, form: str = "auto") -> torch.Tensor:
    """½ logdet(I + scale · Gram(W)) for W (..., N, m) -> (...), with either Gram.

    form "d": Gram = W^T W (m×m);  form "n": Gram = W W^T (N×N);  "auto": the smaller one.
    The two are equal by Sylvester's identity det(I_m + c W^T W) = det(I_N + c W W^T).
    """
    N, m = W.shape[-2], W.shape[-1]
    use_d = form == "d" or (form == "auto" and m <= N)
    if use_d:
        G = W.transpose(-2, -1) @ W  # (..., m, m)
    else:
        G = W @ W.transpose(-2, -1)  # (..., N, N)
    eye = torch.eye(G.shape[-1], dtype=W.dtype, device=W.device)
    return 0.5 * _logdet_pd(eye + scale * G)


def _project(Z: torch.Tensor, U: torch.Tensor) -> torch.Tensor:
    """Per-subspace coordinates U_k^T z_i of every token: (..., N, d), (K, d, p) -> (..., K, N, p)."""
    U = U.to(dtype=Z.dtype, device=Z.device)
    return Z.unsqueeze(-3) @ U  # (..., 1, N, d) @ (K, d, p) -> (..., K, N, p)


def _projected(Z: torch.Tensor, U: torch.Tensor, eps: float) -> tuple[float, torch.Tensor]:
    """γ = p/(Nε²) and the per-subspace coordinates W_k = U_k^T Z, after checking Z, U and ε."""
    _check_subspaces(Z, U)
    _check_eps(eps)
    N, p = Z.shape[-2], U.shape[-1]
    return p / (N * eps**2), _project(Z, U)  # γ, (..., K, N, p)


def _lift(W: torch.Tensor, U: torch.Tensor) -> torch.Tensor:
    """Σ_k W_k U_k^T, back to the ambient space: (..., K, N, p), (K, d, p) -> (..., N, d)."""
    U = U.to(dtype=W.dtype, device=W.device)
    return torch.einsum("...knp,kdp->...nd", W, U)


# ---------------------------------------------------------------------------------------------
# rates: eqs. 7, 8 and 1
# ---------------------------------------------------------------------------------------------


def coding_rate(Z: torch.Tensor, eps: float = 0.5, *, form: str = "auto") -> torch.Tensor:
    """Coding rate R(Z; ε) of N tokens, eq. 7, in nats.

    Paper notation (Z ∈ R^{d×N}): R(Z) = ½ logdet(I_N + d/(N ε²) Z^T Z). In row form (Z of shape
    (N, d)) the same number is ½ logdet(I_d + d/(N ε²) Z^T Z) with the d×d Gram (``form="d"``)
    or ½ logdet(I_N + d/(N ε²) Z Z^T) with the N×N Gram (``form="n"``); ``"auto"`` uses the
    smaller. Computed by Cholesky (I + PSD is positive definite), differentiable.

    Args:
        Z: (..., N, d) tokens as rows.
        eps: distortion ε > 0.
        form: "auto", "d" or "n".

    Returns:
        (...) coding rate in nats.
    """
    _check_tokens(Z)
    _check_eps(eps)
    _check_form(form)
    N, d = Z.shape[-2], Z.shape[-1]
    return _half_logdet_gram(Z, d / (N * eps**2), form)  # (...)


def compression_rate(
    Z: torch.Tensor, U: torch.Tensor, eps: float = 0.5, *, form: str = "auto"
) -> torch.Tensor:
    """Compression term R^c(Z; U_[K]) = Σ_k R(U_k^T Z), eq. 8, in nats.

    Each term is ½ logdet(I + p/(N ε²) (U_k^T Z)^T (U_k^T Z)): the coding rate of the tokens'
    coordinates in subspace k, with the subspace dimension p in place of d.

    Args:
        Z: (..., N, d) tokens as rows.
        U: (K, d, p) subspace bases.
        eps: distortion ε > 0.
        form: "auto", "d" (p×p Grams) or "n" (N×N Grams).

    Returns:
        (...) compression rate in nats.
    """
    _check_form(form)
    gamma, W = _projected(Z, U, eps)  # γ = p/(Nε²), W_k = U_k^T Z (..., K, N, p)
    return _half_logdet_gram(W, gamma, form).sum(-1)  # (..., K) -> (...)


def rate_reduction(Z: torch.Tensor, U: torch.Tensor, eps: float = 0.5) -> torch.Tensor:
    """Rate reduction ΔR(Z; U_[K]) = R(Z) − R^c(Z; U_[K]) (eqs. 7, 8), in nats.

    Large when the tokens are spread out as a whole (large R) but each subspace's coordinates
    are compact (small R^c). Not always ≥ 0: with U_k's that overlap or span more than R^d
    (e.g. U_1 = U_2 = I_d gives ΔR = −R(Z)), Σ_k R(U_k^T Z) exceeds R(Z). Compare ΔR only between
    U's that capture the same energy (e.g. Σ_k U_k U_k^T = I): a U that misses the data has a
    small R^c, hence a large ΔR, for a bad reason.

    Args:
        Z: (..., N, d). U: (K, d, p). eps: ε > 0.

    Returns:
        (...) in nats.
    """
    return coding_rate(Z, eps) - compression_rate(Z, U, eps)


def rate_reduction_bound(Z: torch.Tensor, p: int, eps: float = 0.5) -> torch.Tensor:
    """The largest ΔR(Z; U_[K]) over complete splits: K orthogonal p-dim subspaces with K·p = d.

    R^c only sees the K diagonal blocks of the d×d Gram Z^T Z written in the basis [U_1 … U_K];
    keeping the diagonal blocks makes the eigenvalues more even, and Σ_i log(1 + cλ_i) is concave,
    so R^c ≥ ½ Σ_i log(1 + p λ_i/(N ε²)) over the eigenvalues λ_i of Z^T Z. Hence

        ΔR ≤ ΔR* = ½ Σ_i log((1 + d λ_i/(N ε²)) / (1 + p λ_i/(N ε²))) ≥ 0,

    with equality when the Gram is block-diagonal in the U basis: noiseless tokens on orthogonal
    subspaces, coded with the true U (notebook 01, §3).

    Args:
        Z: (..., N, d) tokens as rows. p: subspace dimension. eps: ε > 0.

    Returns:
        (...) in nats.
    """
    _check_tokens(Z)
    _check_eps(eps)
    N, d = Z.shape[-2], Z.shape[-1]
    lam = torch.linalg.eigvalsh(Z.transpose(-2, -1) @ Z).clamp_min(0)  # (..., d) eigenvalues of the Gram
    return 0.5 * torch.log((1 + d * lam / (N * eps**2)) / (1 + p * lam / (N * eps**2))).sum(-1)


def sparse_rate_reduction(
    Z: torch.Tensor, U: torch.Tensor, eps: float = 0.5, lam: float = 0.1, norm: str = "l1"
) -> torch.Tensor:
    """Sparse rate reduction R(Z) − R^c(Z; U_[K]) − λ‖Z‖, the objective of eq. 1, in nats.

    Normalisation of the sparsity term (a choice the paper leaves open): the **per-token average**
    ‖Z‖ = (1/N) Σ_i ‖z_i‖, so it is O(d) like R and R^c (whose 1/N inside the logdet already makes
    them rates for the whole set rather than sums over tokens) and λ keeps its meaning when N
    changes. ``norm="l0"`` counts non-zeros (the paper's ‖·‖_0, not differentiable);
    ``norm="l1"`` is the convex relaxation that ISTA (eqs. 16–17) works with.

    Args:
        Z: (..., N, d). U: (K, d, p). eps: ε > 0. lam: λ ≥ 0. norm: "l1" or "l0".

    Returns:
        (...) objective value (to be maximised).
    """
    if norm not in ("l1", "l0"):
        raise ValueError(
            f"norm must be 'l1' (relaxed, differentiable) or 'l0' (count of non-zeros), got {norm!r}"
        )
    rate_red = rate_reduction(Z, U, eps)  # (...)
    if norm == "l1":
        sparsity = Z.abs().sum(-1).mean(-1)  # (..., N) -> (...)
    else:
        sparsity = (Z != 0).to(Z.dtype).sum(-1).mean(-1)  # (...)
    return rate_red - lam * sparsity


# ---------------------------------------------------------------------------------------------
# gradient of R^c: eq. 9, and its Neumann approximation (App. A.2)
# ---------------------------------------------------------------------------------------------


def grad_compression_rate(
    Z: torch.Tensor, U: torch.Tensor, eps: float = 0.5, *, form: str = "auto"
) -> torch.Tensor:
    """Closed-form gradient ∇_Z R^c(Z; U_[K]), eq. 9.

    Paper (Z ∈ R^{d×N}): ∇_Z R^c = γ Σ_k U_k U_k^T Z (I_N + γ (U_k^T Z)^T (U_k^T Z))^{-1},
    γ = p/(N ε²). Transposed to rows, with W_k = Z U_k of shape (N, p):

        ∇_Z R^c = γ Σ_k (I_N + γ W_k W_k^T)^{-1} W_k U_k^T           (form "n", as eq. 9)
                = γ Σ_k W_k (I_p + γ W_k^T W_k)^{-1} U_k^T           (form "d", push-through)

    The two agree by (I + γ W W^T)^{-1} W = W (I + γ W^T W)^{-1}; "auto" solves the smaller system.

    Args:
        Z: (..., N, d). U: (K, d, p). eps: ε > 0. form: "auto", "d" or "n".

    Returns:
        (..., N, d), the same shape as Z.
    """
    _check_form(form)
    gamma, W = _projected(Z, U, eps)  # γ = p/(Nε²), W_k = U_k^T Z (..., K, N, p)
    N, p = W.shape[-2:]
    if form == "d" or (form == "auto" and p <= N):
        M = torch.eye(p, dtype=Z.dtype, device=Z.device) + gamma * (W.transpose(-2, -1) @ W)  # (..., K, p, p)
        S = torch.linalg.solve(M, W, left=False)  # W M^{-1}: (..., K, N, p)
    else:
        M = torch.eye(N, dtype=Z.dtype, device=Z.device) + gamma * (W @ W.transpose(-2, -1))  # (..., K, N, N)
        S = torch.linalg.solve(M, W)  # M^{-1} W: (..., K, N, p)
    return gamma * _lift(S, U)  # (..., N, d)


def grad_compression_rate_neumann(Z: torch.Tensor, U: torch.Tensor, eps: float = 0.5) -> torch.Tensor:
    """First-order Neumann approximation of eq. 9 (App. A.2, the first step towards MSSA).

    (I + γ A_k)^{-1} ≈ I − γ A_k with A_k = W_k W_k^T (the N×N Gram of subspace k's coordinates),
    γ = p/(N ε²), so

        ∇_Z R^c ≈ γ Σ_k (W_k − γ W_k W_k^T W_k) U_k^T.

    The error term per subspace is γ²A²(I + γA)^{-1} W_k: relative to the exact term it is at most
    (γ‖A_k‖₂)² — tiny when γ‖A‖ ≪ 1 (large ε or small tokens), useless when γ‖A‖ ≳ 1.

    Args:
        Z: (..., N, d). U: (K, d, p). eps: ε > 0.

    Returns:
        (..., N, d).
    """
    gamma, W = _projected(Z, U, eps)  # γ = p/(Nε²), W_k = U_k^T Z (..., K, N, p)
    S = W - gamma * (W @ (W.transpose(-2, -1) @ W))  # W (W^T W) costs N p², not N² p: (..., K, N, p)
    return gamma * _lift(S, U)  # (..., N, d)


def gram_step(Z: torch.Tensor, U: torch.Tensor, eps: float = 0.5, kappa: float = 0.1) -> torch.Tensor:
    """One exact gradient-descent step on R^c: Z − κ ∇_Z R^c(Z; U_[K]) (eq. 9), shape like Z.

    The step that MSSA approximates; use it beside :func:`mssa_step` to see what the approximations
    change.
    """
    return Z - kappa * grad_compression_rate(Z, U, eps)


# ---------------------------------------------------------------------------------------------
# MSSA as derived: eqs. 10–12
# ---------------------------------------------------------------------------------------------


def _membership(W: torch.Tensor, membership: str, tau: float = 1.0) -> torch.Tensor:
    """The N×N matrix that mixes tokens: softmax_rows(τ W W^T) (eq. 11: τ = 1) or the Gram W W^T."""
    G = W @ W.transpose(-2, -1)  # (..., N, N)
    if membership == "softmax":
        return torch.softmax(tau * G, dim=-1)  # each row sums to 1
    if membership == "gram":
        return G
    raise ValueError(
        f"membership must be 'softmax' (eq. 11, MSSA as published) or 'gram' (the Neumann-series "
        f"term before the softmax replacement), got {membership!r}"
    )


def ssa(Z: torch.Tensor, U_k: torch.Tensor, *, membership: str = "softmax") -> torch.Tensor:
    """Subspace self-attention SSA(Z | U_k), eq. 11, in tokens-as-rows form.

    Paper: SSA(Z | U_k) = (U_k^T Z) softmax((U_k^T Z)^T (U_k^T Z)) ∈ R^{p×N}, softmax over each
    column. Transposed, with W = Z U_k (N, p) and the Gram symmetric, this is ordinary attention
    with query = key = value = W and no temperature:

        SSA(Z | U_k)^T = softmax_rows(W W^T) W.

    ``membership="gram"`` keeps the Gram itself, W W^T W: the term the Neumann series produces
    before the derivation swaps in the softmax (App. A.2), so the two can be compared.

    Args:
        Z: (..., N, d) tokens. U_k: (d, p) one subspace basis. membership: "softmax" or "gram".

    Returns:
        (..., N, p) subspace coordinates of the attended tokens.
    """
    _check_tokens(Z)
    if not isinstance(U_k, torch.Tensor) or U_k.ndim != 2 or U_k.shape[0] != Z.shape[-1]:
        got = tuple(U_k.shape) if isinstance(U_k, torch.Tensor) else type(U_k).__name__
        raise ValueError(
            f"U_k must be one basis of shape (d, p) with d = Z.shape[-1] = {Z.shape[-1]}, got {got}; "
            f"for K stacked bases (K, d, p) use mssa(Z, U)"
        )
    W = Z @ U_k.to(dtype=Z.dtype, device=Z.device)  # (..., N, p)
    return _membership(W, membership) @ W  # (..., N, N) @ (..., N, p) -> (..., N, p)


def mssa(
    Z: torch.Tensor, U: torch.Tensor, eps: float = 0.5, *, membership: str = "softmax", tau: float = 1.0
) -> torch.Tensor:
    """Multi-head subspace self-attention MSSA(Z | U_[K]), eq. 12, rows form.

    Paper: MSSA = γ [U_1 … U_K] [SSA(Z|U_1); …; SSA(Z|U_K)], γ = p/(N ε²). In rows:
    γ Σ_k SSA_k^T U_k^T, i.e. K heads of :func:`ssa`, each mapped back to R^d by its own U_k.
    (The trained CRATE replaces γ[U_1 … U_K] by a learned output projection.)

    Args:
        Z: (..., N, d). U: (K, d, p). eps: ε > 0. membership: "softmax" (eq. 11) or "gram".
        tau: temperature τ of the softmax, softmax(τ W_k W_k^T): 1 in the derivation, 1/√p in the
            official code.

    Returns:
        (..., N, d).
    """
    gamma, W = _projected(Z, U, eps)  # γ = p/(Nε²), W_k = U_k^T Z (..., K, N, p): one head per subspace
    A = _membership(W, membership, tau)  # (..., K, N, N)
    return gamma * _lift(A @ W, U)  # (..., N, d)


def mssa_step(
    Z: torch.Tensor,
    U: torch.Tensor,
    eps: float = 0.5,
    kappa: float = 0.1,
    *,
    membership: str = "softmax",
    tau: float = 1.0,
    residual: float | None = None,
) -> torch.Tensor:
    """The derived attention step Z^{ℓ+½} = (1 − κγ) Z + κγ MSSA(Z | U_[K]) (App. A.2, eq. 12).

    It is :func:`gram_step` after three approximations: first-order Neumann series
    (:func:`grad_compression_rate_neumann`), Σ_k U_k U_k^T ≈ I, and the Gram W_k W_k^T replaced by
    a softmax "membership" matrix. With ``membership="gram"`` and Σ_k U_k U_k^T = I it equals the
    Neumann step Z − κ ∇R^c_neumann exactly. γ = p/(N ε²). The official model instead uses
    Z + MSSA_learned(LN(Z)); two of its departures are knobs here, to measure them: the softmax
    temperature ``tau`` (official 1/√p) and the ``residual`` coefficient c of c Z + κγ MSSA(Z)
    (official 1).

    Args:
        Z: (..., N, d). U: (K, d, p). eps: ε > 0. kappa: step size κ (κγ < 1 keeps the step a
            contraction towards the attended tokens). membership: "softmax" or "gram".
        tau: temperature τ of the softmax (1: the derivation).
        residual: coefficient c of Z; None: the derived 1 − κγ.

    Returns:
        (..., N, d).
    """
    M = mssa(Z, U, eps, membership=membership, tau=tau)  # (..., N, d); validates the inputs
    N, p = Z.shape[-2], U.shape[-1]
    gamma = p / (N * eps**2)
    c = 1.0 - kappa * gamma if residual is None else residual
    return c * Z + kappa * gamma * M


# ---------------------------------------------------------------------------------------------
# the causal step, for language: each token compresses against its prefix
# ---------------------------------------------------------------------------------------------


def prefix_gamma(n: int, p: int, eps: float = 0.5, *, dtype=None, device=None) -> torch.Tensor:
    """γ_t = p / ((t + 1) ε²) for t = 0 … n − 1: eq. 9's γ for the prefix Z_{≤t} of t + 1 tokens.

    Returns:
        (n,) tensor.
    """
    _check_eps(eps)
    t = torch.arange(1, n + 1, dtype=dtype or torch.get_default_dtype(), device=device)
    return p / (t * eps**2)


def causal_grad_compression_rate(Z: torch.Tensor, U: torch.Tensor, eps: float = 0.5) -> torch.Tensor:
    """Row t: ∇_{z_t} R^c(Z_{≤t}; U_[K]), the gradient of the prefix's compression term with respect
    to its newest token (eq. 9 on each prefix).

    A language model may not let token t see tokens after it, so its compression step for token
    t descends the coding rate of the tokens it can see, Z_{≤t} = (z_0, …, z_t), and moves z_t
    alone. Computed prefix by prefix from :func:`grad_compression_rate` (N solves: a reference for
    checking, not a fast path).

    Args:
        Z: (..., N, d). U: (K, d, p). eps: ε > 0.

    Returns:
        (..., N, d).
    """
    _check_subspaces(Z, U)
    _check_eps(eps)
    rows = [grad_compression_rate(Z[..., : t + 1, :], U, eps)[..., t, :] for t in range(Z.shape[-2])]
    return torch.stack(rows, dim=-2)  # (..., N, d)


def causal_mssa(
    Z: torch.Tensor, U: torch.Tensor, eps: float = 0.5, *, membership: str = "softmax", tau: float = 1.0
) -> torch.Tensor:
    """Causal MSSA: row t is MSSA(Z_{≤t} | U_[K]) at token t (eq. 12 on each prefix).

    Each head's membership is masked so that token t mixes only tokens s ≤ t, and the step size
    is the prefix's γ_t = p/((t + 1) ε²) (:func:`prefix_gamma`)::

        A_k[t, s] = softmax_{s ≤ t}(τ w_t · w_s)      (0 for s > t)
        row t     = γ_t Σ_k (A_k W_k)[t] U_k^T

    The masked softmax over s ≤ t is the softmax over the prefix, so this equals running
    :func:`mssa` on every prefix and keeping its last row; one masked N × N product does all of
    them at once. The official causal block replaces γ_t [U_1 … U_K] by one learned output map for
    every position, as CRATE does for images.

    Args:
        Z: (..., N, d). U: (K, d, p). eps: ε > 0. membership: "softmax" (eq. 11) or "gram".
        tau: temperature τ of the softmax (1: the derivation; 1/√p: the official code).

    Returns:
        (..., N, d).
    """
    _check_subspaces(Z, U)
    _check_eps(eps)
    W = _project(Z, U)  # W_k = U_k^T Z                                             (..., K, N, p)
    N, p = W.shape[-2:]
    G = W @ W.transpose(-2, -1)  # w_t · w_s                                           (..., K, N, N)
    future = torch.ones(N, N, dtype=torch.bool, device=Z.device).triu(1)  # s > t: not visible
    if membership == "softmax":
        A = torch.softmax((tau * G).masked_fill(future, float("-inf")), dim=-1)  # rows sum to 1
    elif membership == "gram":
        A = G.masked_fill(future, 0.0)
    else:
        _membership(W, membership)  # raises the one-line error naming the valid memberships
    gamma = prefix_gamma(N, p, eps, dtype=Z.dtype, device=Z.device).unsqueeze(-1)  # γ_t   (N, 1)
    return gamma * _lift(A @ W, U)  # (..., N, d)


def causal_mssa_step(
    Z: torch.Tensor,
    U: torch.Tensor,
    eps: float = 0.5,
    kappa: float = 0.1,
    *,
    membership: str = "softmax",
    tau: float = 1.0,
) -> torch.Tensor:
    """The causal attention step: row t is :func:`mssa_step` on the prefix Z_{≤t}, at token t::

        z_t^{ℓ+½} = (1 − κγ_t) z_t + κγ_t MSSA(Z_{≤t})_t,     γ_t = p/((t + 1) ε²)

    It approximates z_t − κ ∇_{z_t} R^c(Z_{≤t}) (:func:`causal_grad_compression_rate`) as
    :func:`mssa_step` approximates Z − κ ∇R^c, and no output depends on a later token.

    Returns:
        (..., N, d).
    """
    M = causal_mssa(Z, U, eps, membership=membership, tau=tau)  # (..., N, d); validates the inputs
    gamma = prefix_gamma(Z.shape[-2], U.shape[-1], eps, dtype=Z.dtype, device=Z.device).unsqueeze(-1)
    return (1.0 - kappa * gamma) * Z + kappa * gamma * M  # as mssa_step, with γ_t per row


def softmax_membership(Z: torch.Tensor, U: torch.Tensor, tau: float = 1.0) -> torch.Tensor:
    """The softmax membership of every head, softmax_rows(τ W_k W_k^T) with W_k = Z U_k (eq. 11).

    Row i of head k is token i's distribution over the tokens it averages in that head; τ = 1 in
    the derivation, 1/√p in the official code.

    Args:
        Z: (..., N, d). U: (K, d, p). tau: temperature τ.

    Returns:
        (..., K, N, N), every row summing to 1.
    """
    _check_subspaces(Z, U)
    return _membership(_project(Z, U), "softmax", tau)  # (..., K, N, N)


def membership_entropy(A: torch.Tensor) -> torch.Tensor:
    """Mean row entropy of row-stochastic matrices A (..., N, N), in nats: log N = uniform, 0 = one-hot.

    Returns:
        0-dim tensor, the mean over every row of every matrix.
    """
    return -torch.special.xlogy(A, A).sum(-1).mean()  # 0 log 0 = 0


def cosine(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Cosine of the angle between two tensors of one shape, each read as one vector.

    For example the direction of an update against the descent direction −∇_Z R^c: +1 descends
    fastest, 0 does not move R^c to first order, −1 climbs.

    Returns:
        0-dim tensor in [−1, 1].
    """
    if a.shape != b.shape:
        raise ValueError(f"cosine needs two tensors of one shape, got {tuple(a.shape)} and {tuple(b.shape)}")
    return (a * b).sum() / (a.norm() * b.norm())


# ---------------------------------------------------------------------------------------------
# sparse coding: LASSO and ISTA, eqs. 16–17
# ---------------------------------------------------------------------------------------------


def _check_lasso(Z: torch.Tensor | None, X: torch.Tensor, D: torch.Tensor) -> None:
    _check_tokens(X, "X")
    if not isinstance(D, torch.Tensor) or D.ndim < 2:
        raise ValueError("D must be a dictionary tensor of shape (d, m) (X ≈ Z D^T with codes Z of width m)")
    if D.shape[-2] != X.shape[-1]:
        raise ValueError(
            f"dictionary D has {D.shape[-2]} rows but the signals X have width d={X.shape[-1]}; "
            f"D must be (d, m) so that X (N, d) ≈ Z (N, m) @ D^T — transpose D if it is (m, d)"
        )
    if Z is not None:
        _check_tokens(Z)
        if Z.shape[-1] != D.shape[-1]:
            raise ValueError(
                f"codes Z have width {Z.shape[-1]} but D has m={D.shape[-1]} atoms (columns); "
                f"Z must be (..., N, m) for D of shape (d, m)"
            )


def lasso_objective(Z: torch.Tensor, X: torch.Tensor, D: torch.Tensor, lam: float = 0.1) -> torch.Tensor:
    """Non-negative LASSO objective of the ISTA block (eqs. 16–17), rows form.

        F(Z) = λ ‖Z‖₁ + ½ ‖X − Z D^T‖_F²,   minimised over Z ≥ 0

    (paper: λ‖Z‖₁ + ½‖X − D Z‖_F² with X, Z as columns). Sums run over all tokens and entries.
    Scaling: the paper writes the fit term without the ½; the official update
    Z + η D^T(X − D Z) − ηλ, then ReLU, is exactly a proximal-gradient step of step size η on this
    ½-version (equivalently, of step size η/2 on λ'‖Z‖₁ + ‖X − D Z‖_F² with λ' = 2λ: dropping the
    ½ doubles the fit term, so the same iterates need the penalty doubled). The constraint Z ≥ 0 is
    not added as +∞ here: evaluate F at feasible Z (ISTA iterates always are).

    Args:
        Z: (..., N, m) codes. X: (..., N, d) signals. D: (d, m) dictionary. lam: λ ≥ 0.

    Returns:
        (...) objective value.
    """
    _check_lasso(Z, X, D)
    D = D.to(dtype=Z.dtype, device=Z.device)
    R = X - Z @ D.transpose(-2, -1)  # (..., N, d) residual
    return lam * Z.abs().sum((-2, -1)) + 0.5 * R.pow(2).sum((-2, -1))


def soft_threshold_nonneg(x: torch.Tensor, t: float | torch.Tensor) -> torch.Tensor:
    """Proximal map of t‖·‖₁ + indicator(· ≥ 0): ReLU(x − t), elementwise."""
    return F.relu(x - t)


def ista_step(
    Z: torch.Tensor, X: torch.Tensor, D: torch.Tensor, eta: float = 0.1, lam: float = 0.1
) -> torch.Tensor:
    """One non-negative ISTA step on :func:`lasso_objective` (eqs. 16–17), rows form.

        Z⁺ = ReLU(Z + η (X − Z D^T) D − η λ)

    (paper: ReLU(Z + η D^T (X − D Z) − η λ 1)). It decreases the objective whenever Z ≥ 0 and
    η ≤ 1/‖D‖₂² (see :func:`max_step_size`). CRATE's ISTA block is one such step with a square D,
    warm-started at the signal itself: ``ista_step(Z, Z, D, eta, lam)`` (η = λ = 0.1 officially).

    Args:
        Z: (..., N, m) current codes. X: (..., N, d) signals. D: (d, m). eta: step η > 0.
        lam: λ ≥ 0.

    Returns:
        (..., N, m) non-negative codes.
    """
    _check_lasso(Z, X, D)
    D = D.to(dtype=Z.dtype, device=Z.device)
    residual = X - Z @ D.transpose(-2, -1)  # (..., N, d)
    return soft_threshold_nonneg(Z + eta * (residual @ D), eta * lam)  # (..., N, m)


def max_step_size(D: torch.Tensor) -> torch.Tensor:
    """1/‖D‖₂², the largest ISTA step η with guaranteed descent (‖D‖₂ the spectral norm)."""
    return 1.0 / torch.linalg.matrix_norm(D, ord=2).pow(2)


def ista_solve(
    X: torch.Tensor,
    D: torch.Tensor,
    eta: float = 0.1,
    lam: float = 0.1,
    steps: int = 100,
    *,
    init: str | torch.Tensor = "zeros",
    return_history: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Run ``steps`` ISTA iterations (:func:`ista_step`) on the non-negative LASSO.

    Args:
        X: (..., N, d) signals. D: (d, m) dictionary. eta: step η (≤ 1/‖D‖₂² for monotone descent).
        lam: λ. steps: number of iterations.
        init: "zeros" (feasible start, any m), "x" (CRATE's warm start Z0 = X; needs m = d) or a
            tensor (..., N, m).
        return_history: also return the objective after each step.

    Returns:
        Z (..., N, m), or (Z, history) with history (steps + 1, ...) holding F(Z0), …, F(Z_steps).
    """
    _check_lasso(None, X, D)
    if isinstance(init, torch.Tensor):
        Z = init
    elif init == "zeros":
        Z = X.new_zeros(*X.shape[:-1], D.shape[-1])
    elif init == "x":
        if D.shape[-1] != X.shape[-1]:
            raise ValueError(
                f"init='x' needs a square dictionary (m = d = {X.shape[-1]}), got D of shape "
                f"{tuple(D.shape)}; use init='zeros'"
            )
        Z = X
    else:
        raise ValueError(f"init must be 'zeros', 'x' or a tensor of shape (..., N, m), got {init!r}")
    history = [lasso_objective(Z, X, D, lam)]
    for _ in range(steps):
        Z = ista_step(Z, X, D, eta, lam)
        if return_history:
            history.append(lasso_objective(Z, X, D, lam))
    if return_history:
        return Z, torch.stack(history)
    return Z


# ---------------------------------------------------------------------------------------------
# sparse codes, measured
# ---------------------------------------------------------------------------------------------


def fraction_nonzero(
    Z: torch.Tensor, dim: int | tuple[int, ...] | None = None, tol: float = 0.0
) -> torch.Tensor:
    """Fraction of entries with |z| > tol, over ``dim`` (all entries if None). In [0, 1]."""
    dtype = Z.dtype if Z.is_floating_point() else torch.get_default_dtype()
    mask = (Z.abs() > tol).to(dtype)
    return mask.mean() if dim is None else mask.mean(dim)


def l1_norm(Z: torch.Tensor, dim: int | tuple[int, ...] | None = None) -> torch.Tensor:
    """ℓ1 norm Σ|z| over ``dim`` (all entries if None)."""
    return Z.abs().sum() if dim is None else Z.abs().sum(dim)


def reconstruction_error(X: torch.Tensor, Z: torch.Tensor, D: torch.Tensor) -> torch.Tensor:
    """Relative reconstruction error ‖X − D Z‖_F / ‖X‖_F of codes Z, rows form ‖X − Z D^T‖ / ‖X‖.

    Args:
        X: (..., N, d) signals. Z: (..., N, m) codes. D: (d, m) dictionary.

    Returns:
        (...) relative error: 0 for a perfect fit, 1 for the zero code.
    """
    _check_lasso(Z, X, D)
    D = D.to(dtype=Z.dtype, device=Z.device)
    R = X - Z @ D.transpose(-2, -1)  # (..., N, d) residual
    return torch.linalg.vector_norm(R, dim=(-2, -1)) / torch.linalg.vector_norm(X, dim=(-2, -1))


# ---------------------------------------------------------------------------------------------
# layer-wise measurement, as the official vis_utils does it
# ---------------------------------------------------------------------------------------------


def measure_coding_rate(proj: torch.Tensor, eps: float = 0.01) -> tuple[torch.Tensor, torch.Tensor]:
    """Compression of one layer as the official CRATE code measures it (the layer-wise figure).

    ``proj`` holds the per-head projections U_k^T LN(Z^ℓ) (the ``qkv`` output split into heads).
    Each token's per-head vector is normalised to unit norm; per head,
    R_k = ½ logdet(I_n + p/(n·eps) X_k X_k^T) — note ``eps`` sits in the ε² slot of eq. 7/8
    (official eps = 0.01, i.e. ε = 0.1); the K heads are summed (the R^c of eq. 8 on normalised
    tokens); then mean and unbiased std (``torch.std``) over the batch. The logdet is taken on the
    smaller Gram (equal by Sylvester's identity); a zero token vector stays zero instead of NaN.

    Args:
        proj: (b, h, n, p) per-head token coordinates.
        eps: the ε² stand-in, > 0.

    Returns:
        (mean, std), 0-dim tensors in nats.
    """
    _check_tokens(proj, "proj")
    if proj.ndim != 4:
        raise ValueError(
            f"proj must be (b, h, n, p) per-head projections, got shape {tuple(proj.shape)}; "
            f"split a (b, n, h·p) qkv output with einops.rearrange(x, 'b n (h p) -> b h n p', h=heads)"
        )
    _check_eps(eps)
    n, p = proj.shape[-2], proj.shape[-1]
    X = proj / proj.norm(dim=-1, keepdim=True).clamp_min(torch.finfo(proj.dtype).tiny)  # (b, h, n, p)
    R = _half_logdet_gram(X, p / (n * eps), "auto").sum(-1)  # (b, h) -> (b,)
    return R.mean(), R.std()


def measure_coding_rate_range(n: int, p: int, heads: int, eps: float = 0.01) -> tuple[float, float]:
    """(min, max) of :func:`measure_coding_rate` for ``heads`` heads of n unit tokens in R^p.

    The n×n Gram of unit tokens has trace n and rank at most m = min(n, p), and Σ_i log(1 + cλ_i)
    is concave in the eigenvalues: smallest when one eigenvalue takes everything (all tokens of a
    head along one direction, maximally compressed), largest when m eigenvalues are equal (tokens
    spread over m orthogonal directions)::

        K/2 · log(1 + p/eps)  ≤  R^c  ≤  K·m/2 · log(1 + p/(m·eps))

    Returns:
        (min, max) in nats.
    """
    _check_eps(eps)
    m = min(n, p)
    return heads / 2 * math.log(1 + p / eps), heads * m / 2 * math.log(1 + p / (m * eps))


def _per_sample_zero_fraction(z: torch.Tensor) -> torch.Tensor:
    if not isinstance(z, torch.Tensor) or z.ndim < 2:
        shape = tuple(z.shape) if isinstance(z, torch.Tensor) else type(z).__name__
        raise ValueError(f"z must be a batch of ISTA outputs of shape (b, n, d), got {shape}")
    dtype = z.dtype if z.is_floating_point() else torch.get_default_dtype()
    return (z == 0).to(dtype).flatten(1).mean(-1)  # (b,)


def measure_sparsity(z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Sparsity of one layer's ISTA output as the official code measures it.

    For each sample the fraction of entries that are exactly zero; then the mean and the
    population std (ddof = 0, as ``numpy.std``) over the batch. The official layer-wise plot shows
    ``1 − this``, the fraction of non-zeros (:func:`measure_nonzero`); lower is sparser there.

    Args:
        z: (b, n, d) ISTA outputs Z^{ℓ+1} (any (b, ...) works: all non-batch entries count).

    Returns:
        (mean, std) of the per-sample fraction of zeros, 0-dim tensors.
    """
    s = _per_sample_zero_fraction(z)  # (b,)
    return s.mean(), s.std(correction=0)


def measure_nonzero(z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and population std over the batch of the per-sample fraction of non-zero entries."""
    s = 1.0 - _per_sample_zero_fraction(z)  # (b,)
    return s.mean(), s.std(correction=0)


# ---------------------------------------------------------------------------------------------
# toy data: tokens on a union of low-dimensional subspaces
# ---------------------------------------------------------------------------------------------


def union_of_subspaces(
    n_per: int,
    K: int,
    d: int,
    p: int,
    noise: float = 0.0,
    generator: torch.Generator | None = None,
    *,
    orthogonal: bool = True,
    dtype: torch.dtype | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Tokens drawn from a union of K subspaces of dimension p in R^d: the ideal data of CRATE.

    Token i of class k is z_i = U_k a_i + σ g_i with a_i ~ N(0, I_p / p) and g_i ~ N(0, I_d / d),
    so the signal and the noise both have expected squared norm 1 and σ = ``noise`` is a
    noise-to-signal ratio. Tokens are ordered by class.

    Args:
        n_per: tokens per subspace. K: number of subspaces. d: ambient dimension.
        p: subspace dimension. noise: σ ≥ 0. generator: for reproducibility.
        orthogonal: mutually orthogonal subspaces (needs K·p ≤ d); otherwise independent random
            ones (each with orthonormal columns).
        dtype: default ``torch.get_default_dtype()``.

    Returns:
        Z (K·n_per, d), labels (K·n_per,) int64, U (K, d, p) the true orthonormal bases.
    """
    if min(n_per, K, d, p) < 1 or p > d:
        raise ValueError(f"need n_per, K, d, p ≥ 1 and p ≤ d, got n_per={n_per}, K={K}, d={d}, p={p}")
    if noise < 0:
        raise ValueError(f"noise is a standard-deviation ratio and must be ≥ 0, got {noise}")
    if orthogonal and K * p > d:
        raise ValueError(
            f"K·p = {K * p} orthogonal directions do not fit in d = {d}; lower K or p, raise d, "
            f"or pass orthogonal=False"
        )
    dtype = dtype or torch.get_default_dtype()

    def randn(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=generator, dtype=dtype)

    if orthogonal:
        Q, _ = torch.linalg.qr(randn(d, K * p))  # (d, K·p) orthonormal columns
        U = Q.reshape(d, K, p).permute(1, 0, 2).contiguous()  # (K, d, p)
    else:
        U, _ = torch.linalg.qr(randn(K, d, p))  # (K, d, p)
    A = randn(K, n_per, p) / math.sqrt(p)  # (K, n_per, p) coefficients
    Z = (A @ U.transpose(-2, -1)).reshape(K * n_per, d)  # (N, d)
    Z = Z + noise * randn(K * n_per, d) / math.sqrt(d)
    labels = torch.arange(K).repeat_interleave(n_per)  # (N,)
    return Z, labels, U


def random_complete_split(
    d: int, K: int, p: int, generator: torch.Generator | None = None, *, dtype: torch.dtype | None = None
) -> torch.Tensor:
    """K mutually orthogonal p-dim subspaces with K·p = d, in a random orientation.

    A "complete split" of R^d: Σ_k U_k U_k^T = I_d, the assumption of the MSSA derivation. The
    bases are the columns of the Q factor of a Gaussian d×d matrix, in groups of p.

    Args:
        d: ambient dimension. K: number of subspaces. p: their dimension (K·p = d).
        generator: for reproducibility. dtype: default ``torch.get_default_dtype()``.

    Returns:
        U (K, d, p) with orthonormal columns.
    """
    if K * p != d:
        raise ValueError(f"a complete split needs K·p = d, got K={K}, p={p}, d={d}; choose p = d // K")
    dtype = dtype or torch.get_default_dtype()
    Q, _ = torch.linalg.qr(torch.randn(d, d, generator=generator, dtype=dtype))  # (d, d) orthogonal
    return Q.reshape(d, K, p).permute(1, 0, 2)  # (K, d, p): Σ_k U_k U_k^T = Q Q^T = I


# ---------------------------------------------------------------------------------------------
# MCR² with labels (Yu et al. 2020, arXiv 2006.08558) and its gradient (ReduNet, arXiv 2105.10446)
# ---------------------------------------------------------------------------------------------


def _check_memberships(labels: torch.Tensor, Z: torch.Tensor, num_classes: int | None) -> torch.Tensor:
    """Labels (m,) int or memberships (..., m, K) float -> memberships Π (..., m, K) in Z's dtype."""
    _check_tokens(Z)
    m = Z.shape[-2]
    if m < 1:
        raise ValueError(f"Z has no samples (shape {tuple(Z.shape)}); MCR² needs m ≥ 1 rows")
    if num_classes is not None and not (isinstance(num_classes, int) and num_classes >= 1):
        raise ValueError(f"num_classes must be an int ≥ 1 or None (max label + 1), got {num_classes!r}")
    if not isinstance(labels, torch.Tensor):
        raise TypeError(
            f"labels must be a torch.Tensor: class indices (m,) or memberships (m, K), got "
            f"{type(labels).__name__}; use torch.as_tensor(labels)"
        )
    if labels.is_floating_point():
        if labels.ndim < 2 or labels.shape[-2] != m:
            raise ValueError(
                f"float labels are memberships Π of shape (..., m, K) with m = {m} rows like Z, got shape "
                f"{tuple(labels.shape)}; for class indices pass an int64 tensor of shape ({m},)"
            )
        if num_classes is not None and labels.shape[-1] != num_classes:
            raise ValueError(
                f"memberships have K = {labels.shape[-1]} columns but num_classes = {num_classes}; "
                f"drop num_classes or pass Π of shape (m, {num_classes})"
            )
        if not bool(torch.isfinite(labels).all()) or bool((labels < 0).any()):
            raise ValueError(
                "memberships Π must be finite and ≥ 0 (row i: how much sample i belongs to each class)"
            )
        return labels.to(dtype=Z.dtype, device=Z.device)
    if labels.ndim != 1 or labels.shape[0] != m:
        raise ValueError(
            f"labels must be class indices of shape (m,) = ({m},) (one per row of Z), got shape "
            f"{tuple(labels.shape)}; flatten them with labels.reshape(-1)"
        )
    if labels.dtype == torch.bool or labels.is_complex():
        raise ValueError(f"labels must be integer class indices, got dtype {labels.dtype}; use labels.long()")
    K = int(labels.max()) + 1 if num_classes is None else num_classes
    if int(labels.min()) < 0 or int(labels.max()) >= K:
        raise ValueError(
            f"labels must lie in 0..{K - 1} (num_classes = {K}), got values from {int(labels.min())} to "
            f"{int(labels.max())}; relabel them 0..K-1 or raise num_classes"
        )
    return F.one_hot(labels.long().to(Z.device), K).to(Z.dtype)  # (m, K)


def label_memberships(
    labels: torch.Tensor, num_classes: int | None = None, *, dtype: torch.dtype | None = None
) -> torch.Tensor:
    """The membership matrix Π of class labels: Π[i, j] = 1 if sample i is in class j, else 0.

    The paper's Π_j ∈ R^{m×m} is the diagonal matrix diag(Π[:, j]); tr(Π_j) = m_j.

    Args:
        labels: (m,) integer class indices in 0..K−1.
        num_classes: K (default: max label + 1; a class with no sample gives a zero column).
        dtype: default ``torch.get_default_dtype()``.

    Returns:
        (m, K) one-hot rows.
    """
    if isinstance(labels, torch.Tensor) and labels.is_floating_point():
        raise ValueError(f"labels must be integer class indices, got dtype {labels.dtype}; use labels.long()")
    m = labels.shape[0] if isinstance(labels, torch.Tensor) and labels.ndim >= 1 else 1
    Z = torch.empty(m, 1, dtype=dtype or torch.get_default_dtype())
    return _check_memberships(labels, Z, num_classes)


def _class_grams(Z: torch.Tensor, Pi: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """tr Π_j = m_j (..., K) and the class Grams Z^T Π_j Z (..., K, d, d)."""
    counts = Pi.sum(-2)  # (..., K)
    G = torch.einsum("...mk,...md,...me->...kde", Pi, Z, Z)  # (..., K, d, d)
    return counts, G


def _class_scales(counts: torch.Tensor, d: int, eps: float) -> torch.Tensor:
    """α_j = d/(m_j ε²) for each class, 0 for an empty class (whose Gram is 0 anyway)."""
    safe = torch.where(counts > 0, counts, torch.ones_like(counts))
    return torch.where(counts > 0, d / (safe * eps**2), torch.zeros_like(counts))  # (..., K)


def class_compression_rate(
    Z: torch.Tensor, labels: torch.Tensor, eps: float = 0.5, *, num_classes: int | None = None
) -> torch.Tensor:
    """MCR²'s compression term R^c(Z, Π; ε): the coding rate of each class, weighted by its size.

    Paper (Yu et al. 2020; Z ∈ R^{d×m}, Π_j = diag of class j's memberships):

        R^c(Z, Π) = Σ_j tr(Π_j)/(2m) · logdet(I + d/(tr(Π_j) ε²) · Z Π_j Z^T).

    In rows form (Z of shape (m, d), Z_j the m_j rows of class j):

        R^c(Z, Π) = Σ_j (m_j / 2m) · logdet(I_d + d/(m_j ε²) · Z_j^T Z_j),

    i.e. Σ_j (m_j/m) R(Z_j): each class coded on its own, as the official ``compute_loss_vec``
    computes it (whose ``eps`` is this ε²). Unlike eq. 8 of CRATE (:func:`compression_rate`), the
    classes are given, not subspaces. A class with no sample contributes 0.

    Args:
        Z: (..., m, d) samples as rows.
        labels: (m,) class indices, or memberships Π (..., m, K) (soft, ≥ 0; rows need not sum to 1).
        eps: distortion ε > 0.
        num_classes: K, for class indices (default max label + 1).

    Returns:
        (...) in nats.
    """
    Pi = _check_memberships(labels, Z, num_classes)  # (..., m, K)
    _check_eps(eps)
    m, d = Z.shape[-2], Z.shape[-1]
    counts, G = _class_grams(Z, Pi)  # m_j (..., K), Z_j^T Z_j (..., K, d, d)
    alpha = _class_scales(counts, d, eps)  # α_j = d/(m_j ε²)
    eye = torch.eye(d, dtype=Z.dtype, device=Z.device)
    half_logdet = 0.5 * _logdet_pd(eye + alpha[..., None, None] * G)  # (..., K)
    return (counts / m * half_logdet).sum(-1)  # Σ_j (m_j/m) · ½ logdet(…)


def mcr2(
    Z: torch.Tensor, labels: torch.Tensor, eps: float = 0.5, *, num_classes: int | None = None
) -> torch.Tensor:
    """Maximal coding rate reduction ΔR(Z, Π; ε) = R(Z) − R^c(Z, Π), in nats (Yu et al. 2020).

    Large when the samples as a whole span a large volume (R) while each class is compact (R^c).
    It is ≥ 0 for one-hot Π (concavity of logdet) and, for classes of fixed size and energy,
    largest when the classes lie on mutually orthogonal subspaces (see
    :func:`subspaces_at_angle`). Scale matters: R grows with ‖Z‖, so MCR² is used on normalised
    samples (ReduNet projects each sample to the unit sphere).

    Args:
        Z: (..., m, d). labels: (m,) class indices or memberships (..., m, K). eps: ε > 0.
        num_classes: K for class indices.

    Returns:
        (...) in nats.
    """
    Rc = class_compression_rate(Z, labels, eps, num_classes=num_classes)  # checks Z, labels and ε first
    return coding_rate(Z, eps) - Rc


def expansion_operator(Z: torch.Tensor, eps: float = 0.5) -> torch.Tensor:
    """ReduNet's expansion operator E = α (I + α Z^T Z)^{-1}, α = d/(m ε²) (ReduNet, arXiv 2105.10446).

    Paper (Z ∈ R^{d×m}): E = α (I + α Z Z^*)^{-1}, so that ∂R/∂Z = E Z. In rows form ∇_Z R = Z E
    (E is symmetric): :func:`grad_coding_rate`.

    Args:
        Z: (..., m, d) samples as rows. eps: ε > 0.

    Returns:
        (..., d, d) symmetric positive definite.
    """
    _check_tokens(Z)
    _check_eps(eps)
    m, d = Z.shape[-2], Z.shape[-1]
    alpha = d / (m * eps**2)
    eye = torch.eye(d, dtype=Z.dtype, device=Z.device)
    return alpha * torch.linalg.inv(eye + alpha * (Z.transpose(-2, -1) @ Z))  # (..., d, d)


def compression_operators(
    Z: torch.Tensor, labels: torch.Tensor, eps: float = 0.5, *, num_classes: int | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """ReduNet's compression operators C_j = α_j (I + α_j Z_j^T Z_j)^{-1} and weights γ_j = m_j/m.

    α_j = d/(m_j ε²) (arXiv 2105.10446; paper form α_j (I + α_j Z Π_j Z^*)^{-1}). With them
    the class-j part of ∇R^c is γ_j Π_j Z C_j in rows form (:func:`grad_class_compression_rate`).
    An empty class gets C_j = 0 and γ_j = 0.

    Args:
        Z: (..., m, d). labels: (m,) class indices or memberships (..., m, K). eps: ε > 0.
        num_classes: K for class indices.

    Returns:
        (C, gamma): C (..., K, d, d), gamma (..., K).
    """
    Pi = _check_memberships(labels, Z, num_classes)  # (..., m, K)
    _check_eps(eps)
    m, d = Z.shape[-2], Z.shape[-1]
    counts, G = _class_grams(Z, Pi)  # (..., K), (..., K, d, d)
    alpha = _class_scales(counts, d, eps)[..., None, None]  # (..., K, 1, 1)
    eye = torch.eye(d, dtype=Z.dtype, device=Z.device)
    C = alpha * torch.linalg.inv(eye + alpha * G)  # (..., K, d, d)
    return C, counts / m


def grad_coding_rate(Z: torch.Tensor, eps: float = 0.5) -> torch.Tensor:
    """Closed-form gradient ∇_Z R(Z; ε) = Z E, E = α (I + α Z^T Z)^{-1} (rows form of ∂R/∂Z = E Z).

    Row i is E z_i: the direction that expands the whole set.

    Args:
        Z: (..., m, d). eps: ε > 0.

    Returns:
        (..., m, d), the same shape as Z.
    """
    _check_tokens(Z)
    _check_eps(eps)
    m, d = Z.shape[-2], Z.shape[-1]
    alpha = d / (m * eps**2)
    M = torch.eye(d, dtype=Z.dtype, device=Z.device) + alpha * (Z.transpose(-2, -1) @ Z)  # (..., d, d)
    return alpha * torch.linalg.solve(M, Z, left=False)  # α Z M^{-1} = Z E


def grad_class_compression_rate(
    Z: torch.Tensor, labels: torch.Tensor, eps: float = 0.5, *, num_classes: int | None = None
) -> torch.Tensor:
    """Closed-form gradient ∇_Z R^c(Z, Π; ε) = Σ_j γ_j Π_j Z C_j (rows form of Σ_j γ_j C_j Z Π_j).

    For one-hot Π, row i of class j is γ_j C_j z_i: sample i is pulled towards compressing its
    own class only.

    Args:
        Z: (..., m, d). labels: (m,) class indices or memberships (..., m, K). eps: ε > 0.
        num_classes: K for class indices.

    Returns:
        (..., m, d).
    """
    Pi = _check_memberships(labels, Z, num_classes)  # (..., m, K)
    C, gamma = compression_operators(Z, Pi, eps)  # (..., K, d, d), (..., K)
    CZ = torch.einsum("...kde,...me->...kmd", C, Z)  # C_j z_i for every class: (..., K, m, d)
    return torch.einsum("...k,...mk,...kmd->...md", gamma, Pi, CZ)  # Σ_j γ_j π_ij C_j z_i


def grad_mcr2(
    Z: torch.Tensor, labels: torch.Tensor, eps: float = 0.5, *, num_classes: int | None = None
) -> torch.Tensor:
    """Closed-form gradient of MCR²: ∇_Z ΔR = Z E − Σ_j γ_j Π_j Z C_j (arXiv 2105.10446).

    Row i of class j: E z_i − γ_j C_j z_i. One ReduNet layer is the step z ← z + η (this), then a
    projection back to the unit sphere (:mod:`crate_edu.models.redunet`).

    Args:
        Z: (..., m, d). labels: (m,) class indices or memberships (..., m, K). eps: ε > 0.
        num_classes: K for class indices.

    Returns:
        (..., m, d).
    """
    grad_Rc = grad_class_compression_rate(Z, labels, eps, num_classes=num_classes)  # checks inputs first
    return grad_coding_rate(Z, eps) - grad_Rc


def subspaces_at_angle(
    n_per: int,
    d: int,
    p: int,
    theta: float,
    generator: torch.Generator | None = None,
    *,
    dtype: torch.dtype | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Two classes on p-dimensional subspaces whose principal angles all equal θ (MCR²'s toy).

    Class 0 is z = U_1 a, class 1 is z = U_2 b with U_2 = cos θ U_1 + sin θ V (V ⊥ U_1), and
    a, b ~ N(0, I_p/p). The bases and the coefficients depend only on the generator, not on θ: with
    one seed, changing θ rotates class 1's subspace and nothing else, so R^c(Z, Π) stays fixed
    (each class's Gram is only rotated) while R(Z), hence ΔR, changes. θ = 0: one shared
    subspace; θ = π/2: orthogonal subspaces.

    Args:
        n_per: samples per class. d: ambient dimension (≥ 2p). p: subspace dimension.
        theta: angle in radians. generator: draw the same bases and coefficients for every θ.
        dtype: default ``torch.get_default_dtype()``.

    Returns:
        Z (2·n_per, d), labels (2·n_per,) int64.
    """
    if min(n_per, d, p) < 1 or 2 * p > d:
        raise ValueError(
            f"need n_per, d, p ≥ 1 and 2p ≤ d (room for V ⊥ U_1), got n_per={n_per}, d={d}, p={p}"
        )
    if not math.isfinite(theta):
        raise ValueError(f"theta is an angle in radians and must be finite, got {theta!r}")
    dtype = dtype or torch.get_default_dtype()
    Q, _ = torch.linalg.qr(torch.randn(d, 2 * p, generator=generator, dtype=dtype))  # (d, 2p)
    U1, V = Q[:, :p], Q[:, p:]  # orthonormal, U1 ⊥ V
    U2 = math.cos(theta) * U1 + math.sin(theta) * V  # (d, p), orthonormal columns for every θ
    A = torch.randn(2, n_per, p, generator=generator, dtype=dtype) / math.sqrt(p)  # coefficients
    Z = torch.cat([A[0] @ U1.T, A[1] @ U2.T])  # (2·n_per, d)
    return Z, torch.arange(2).repeat_interleave(n_per)


#: The class centres of the official ReduNet toy mixtures (examples/utils_example.py:5-83), by
#: dimension and configuration number. 3-D configuration 3 keeps the official cos(5π/6) as its
#: third centre's y (utils_example.py:63; probably meant sin).
REDUNET_MIXTURE_CENTERS: dict[int, dict[int, tuple[tuple[float, ...], ...]]] = {
    2: {
        1: ((1.0, 0.0), (0.0, 1.0)),
        2: ((math.cos(math.pi / 3), math.sin(math.pi / 3)), (1.0, 0.0)),
        3: ((math.cos(math.pi / 4), math.sin(math.pi / 4)), (1.0, 0.0)),
        4: ((math.cos(3 * math.pi / 4), math.sin(3 * math.pi / 4)), (1.0, 0.0)),
        5: ((math.cos(2 * math.pi / 3), math.sin(2 * math.pi / 3)), (1.0, 0.0)),
        6: (
            (math.cos(3 * math.pi / 4), math.sin(3 * math.pi / 4)),
            (math.cos(4 * math.pi / 3), math.sin(4 * math.pi / 3)),
            (1.0, 0.0),
        ),
        7: (
            (math.cos(3 * math.pi / 4), math.sin(3 * math.pi / 4)),
            (math.cos(4 * math.pi / 3), math.sin(4 * math.pi / 3)),
            (math.cos(math.pi / 4), math.sin(math.pi / 4)),
        ),
        8: tuple(
            (math.cos(a), math.sin(a))
            for a in (
                math.pi / 6,
                math.pi / 2,
                3 * math.pi / 4,
                5 * math.pi / 4,
                7 * math.pi / 4,
                3 * math.pi / 2,
            )
        ),
    },
    3: {
        1: ((1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (0.0, 0.0, 1.0)),
        2: (
            (math.cos(math.pi / 4), math.sin(math.pi / 4), 1.0),
            (math.cos(2 * math.pi / 3), math.sin(2 * math.pi / 3), 1.0),
            (math.cos(math.pi), math.sin(math.pi), 1.0),
        ),
        3: (
            (math.cos(math.pi / 4), math.sin(math.pi / 4), 1.0),
            (math.cos(2 * math.pi / 3), math.sin(2 * math.pi / 3), 1.0),
            (math.cos(5 * math.pi / 6), math.cos(5 * math.pi / 6), 1.0),
        ),
    },
}


def redunet_mixture(
    dim: int = 2,
    data: int = 1,
    noise: float = 0.1,
    samples: int = 100,
    rng: int | np.random.RandomState = 0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The official ReduNet toy data: Gaussians around unit centres, projected to the unit sphere.

    As ``generate_2d`` / ``generate_3d`` of the official examples/utils_example.py: for each class
    in order, ``samples`` draws of N(centre, noise² I) from numpy's legacy generator, then every
    sample divided by its norm (float64), returned as float32. The official notebooks use
    configuration 1, noise 0.1 and 100 samples per class, drawing the training set and then the
    test set from numpy's global stream; pass one ``np.random.RandomState`` twice to do the same.
    ``rng=s`` draws what ``np.random.seed(s)`` followed by the official generator draws.

    Args:
        dim: 2 (configurations 1–8: two, three or six classes on the circle) or 3 (1–3: three
            classes on the sphere). data: the configuration number. noise: standard deviation
            ≥ 0. samples: per class. rng: a seed or a ``np.random.RandomState``.

    Returns:
        X (K·samples, dim) float32 on the unit sphere, labels (K·samples,) int64, ordered by class.
    """
    if dim not in REDUNET_MIXTURE_CENTERS:
        raise ValueError(f"dim must be 2 or 3 (the official 2-D and 3-D mixtures), got {dim!r}")
    if data not in REDUNET_MIXTURE_CENTERS[dim]:
        raise ValueError(
            f"data must be one of {sorted(REDUNET_MIXTURE_CENTERS[dim])} for dim={dim} (the official "
            f"configurations), got {data!r}"
        )
    if not (isinstance(noise, (int, float)) and math.isfinite(noise) and noise >= 0):
        raise ValueError(f"noise is a standard deviation and must be a finite number ≥ 0, got {noise!r}")
    if isinstance(samples, bool) or not isinstance(samples, int) or samples < 1:
        raise ValueError(f"samples is the number per class and must be a positive int, got {samples!r}")
    state = rng if isinstance(rng, np.random.RandomState) else np.random.RandomState(rng)
    centres = REDUNET_MIXTURE_CENTERS[dim][data]
    X = np.concatenate([state.normal(loc=c, scale=noise, size=(samples, dim)) for c in centres])
    X = X / np.linalg.norm(X, axis=1, ord=2, keepdims=True)  # onto the unit sphere
    labels = np.repeat(np.arange(len(centres)), samples)
    return torch.tensor(X).float(), torch.tensor(labels).long()
