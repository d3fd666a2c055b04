"""Tests for crate_edu.coding_rate: every function against the math it claims to compute."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from crate_edu import coding_rate as cr

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "official_coding_rate_fixture.pt"
F64 = torch.float64


def _data(seed: int = 0, n_per: int = 20, K: int = 3, d: int = 12, p: int = 4, noise: float = 0.05):
    g = torch.Generator().manual_seed(seed)
    return cr.union_of_subspaces(n_per, K, d, p, noise, g, dtype=F64)


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).norm() / b.norm()).item()


# ---------------------------------------------------------------------------------------------
# toy data
# ---------------------------------------------------------------------------------------------


def test_union_of_subspaces_shapes_and_membership():
    Z, labels, U = _data(noise=0.0)
    assert Z.shape == (60, 12) and labels.shape == (60,) and U.shape == (3, 12, 4)
    assert torch.equal(labels, torch.arange(3).repeat_interleave(20))
    # orthonormal bases of mutually orthogonal subspaces: [U_1 … U_K] has orthonormal columns
    B = U.permute(1, 0, 2).reshape(12, 12)
    torch.testing.assert_close(B.T @ B, torch.eye(12, dtype=F64), rtol=0, atol=1e-12)
    # without noise each token lies exactly in its own subspace and is orthogonal to the others
    for k in range(3):
        Zk = Z[labels == k]
        torch.testing.assert_close(Zk @ U[k] @ U[k].T, Zk, rtol=0, atol=1e-12)
        assert (Z[labels != k] @ U[k]).abs().max() < 1e-12
    # same seed, same data
    torch.testing.assert_close(_data(noise=0.0)[0], Z, rtol=0, atol=0)


# ---------------------------------------------------------------------------------------------
# R, R^c, ΔR (eqs. 7, 8)
# ---------------------------------------------------------------------------------------------


def test_random_complete_split_is_an_orthogonal_decomposition():
    U = cr.random_complete_split(12, 3, 4, torch.Generator().manual_seed(5), dtype=F64)
    assert U.shape == (3, 12, 4) and U.dtype == F64
    torch.testing.assert_close(
        torch.einsum("kdp,kep->de", U, U), torch.eye(12, dtype=F64), rtol=0, atol=1e-12
    )
    again = cr.random_complete_split(12, 3, 4, torch.Generator().manual_seed(5), dtype=F64)
    other = cr.random_complete_split(12, 3, 4, torch.Generator().manual_seed(6), dtype=F64)
    assert torch.equal(U, again) and not torch.allclose(U, other)
    with pytest.raises(ValueError, match=r"K·p = d, got K=3, p=5, d=12"):
        cr.random_complete_split(12, 3, 5)


def test_coding_rate_matches_definition_and_both_grams_agree():
    Z, _, U = _data()
    N, d = Z.shape
    eps = 0.5
    # the paper's form as written: Z_paper = Z^T ∈ R^{d×N}, ½ logdet(I_N + d/(Nε²) Z_paper^T Z_paper)
    Zp = Z.T
    expected = 0.5 * torch.logdet(torch.eye(N, dtype=F64) + d / (N * eps**2) * Zp.T @ Zp)
    for form in ("auto", "d", "n"):
        torch.testing.assert_close(cr.coding_rate(Z, eps, form=form), expected, rtol=1e-9, atol=0)
    Rc_d = cr.compression_rate(Z, U, eps, form="d")
    Rc_n = cr.compression_rate(Z, U, eps, form="n")
    torch.testing.assert_close(Rc_d, Rc_n, rtol=1e-9, atol=0)
    # float32: same number to float32 precision (~1e-6 relative; 1e-5 allows for logdet round-off)
    Z32, U32 = Z.float(), U.float()
    r_d, r_n = cr.coding_rate(Z32, eps, form="d"), cr.coding_rate(Z32, eps, form="n")
    torch.testing.assert_close(r_d, r_n, rtol=1e-5, atol=0)
    torch.testing.assert_close(r_d.double(), expected, rtol=1e-5, atol=0)
    torch.testing.assert_close(
        cr.compression_rate(Z32, U32, eps, form="d"),
        cr.compression_rate(Z32, U32, eps, form="n"),
        rtol=1e-5,
        atol=0,
    )


def test_compression_rate_is_sum_of_subspace_rates():
    Z, _, U = _data()
    N, p = Z.shape[0], U.shape[-1]
    eps = 0.5
    terms = []
    for k in range(U.shape[0]):
        Wp = U[k].T @ Z.T  # paper: U_k^T Z ∈ R^{p×N}
        terms.append(0.5 * torch.logdet(torch.eye(N, dtype=F64) + p / (N * eps**2) * Wp.T @ Wp))
    torch.testing.assert_close(cr.compression_rate(Z, U, eps), torch.stack(terms).sum(), rtol=1e-9, atol=0)


def test_rate_reduction_is_positive_and_largest_for_the_true_subspaces():
    """The ideal case of CRATE: tokens on orthogonal subspaces, U the true bases.

    Compared against a random complete orthonormal split of R^d into K blocks (Σ U_k U_k^T = I for
    both, so both U capture all the energy), the true U has the smaller R^c and the larger ΔR.
    (A random U with K·p < d is no fair rival: it captures less energy, so R^c drops for a bad
    reason, and it can beat the true U.)
    """
    K, d, p = 3, 12, 4
    gaps = []
    for seed in range(5):
        Z, _, U = _data(seed=seed)
        g = torch.Generator().manual_seed(100 + seed)
        Q, _ = torch.linalg.qr(torch.randn(d, d, generator=g, dtype=F64))
        U_rand = Q.reshape(d, K, p).permute(1, 0, 2)  # (K, d, p), also a complete orthonormal split
        dR_true, dR_rand = cr.rate_reduction(Z, U), cr.rate_reduction(Z, U_rand)
        assert dR_true > 0 and dR_rand > 0
        gaps.append((dR_true - dR_rand).item())
    # measured gaps (nats): about 0.07 to 0.19 with these seeds
    assert min(gaps) > 0.03, gaps
    # ΔR ≥ 0 is not a law: two copies of the full space give R^c = 2R, so ΔR = −R
    eye2 = torch.eye(d, dtype=F64).expand(2, d, d)
    torch.testing.assert_close(cr.rate_reduction(Z, eye2), -cr.coding_rate(Z), rtol=1e-12, atol=0)


def test_rate_reduction_bound_caps_every_complete_split_and_the_true_U_reaches_it():
    """ΔR ≤ ΔR* for every complete split; equality for noiseless tokens on orthogonal subspaces
    coded with the true U; a random split of the same data stays clearly below."""
    Z0, _, U = _data(noise=0.0)  # K·p = d = 12
    eps = 0.5
    bound = cr.rate_reduction_bound(Z0, 4, eps)
    torch.testing.assert_close(cr.rate_reduction(Z0, U, eps), bound, rtol=1e-10, atol=0)
    Z, _, _ = _data(noise=0.3)
    for seed in range(5):
        g = torch.Generator().manual_seed(seed)
        for ZZ in (Z0, Z):
            Ur = cr.random_complete_split(12, 3, 4, g, dtype=F64)
            assert cr.rate_reduction(ZZ, Ur, eps) <= cr.rate_reduction_bound(ZZ, 4, eps) + 1e-12
    assert cr.rate_reduction(Z0, Ur, eps) < bound - 0.1  # measured 3.957 vs 4.131
    # the formula itself: ½ Σ log((1 + dλ/(Nε²)) / (1 + pλ/(Nε²))) over the eigenvalues of Z^T Z
    lam = torch.linalg.eigvalsh(Z.T @ Z)
    c = 1 / (Z.shape[0] * eps**2)
    expected = 0.5 * (torch.log1p(12 * c * lam) - torch.log1p(4 * c * lam)).sum()
    torch.testing.assert_close(cr.rate_reduction_bound(Z, 4, eps), expected, rtol=1e-12, atol=0)
    batched = cr.rate_reduction_bound(torch.stack([Z0, Z]), 4, eps)
    torch.testing.assert_close(batched, torch.stack([bound, cr.rate_reduction_bound(Z, 4, eps)]))


def test_sparse_rate_reduction_normalisation():
    Z, _, U = _data()
    Z = Z.clone()
    Z[:, :3] = 0.0  # a few exact zeros so l0 differs from d
    dR = cr.rate_reduction(Z, U)
    N = Z.shape[0]
    torch.testing.assert_close(
        cr.sparse_rate_reduction(Z, U, lam=0.1, norm="l1"), dR - 0.1 * Z.abs().sum() / N, rtol=1e-12, atol=0
    )
    # l0: average count of non-zeros per token = 12 − 3 = 9
    torch.testing.assert_close(
        cr.sparse_rate_reduction(Z, U, lam=0.1, norm="l0"), dR - 0.1 * 9.0, rtol=1e-12, atol=0
    )
    # the per-token average makes the value independent of repeating the token set
    Z2 = torch.cat([Z, Z])
    torch.testing.assert_close(
        cr.sparse_rate_reduction(Z2, U), cr.sparse_rate_reduction(Z, U), rtol=1e-9, atol=0
    )


def test_rates_batch_over_batch_and_heads():
    g = torch.Generator().manual_seed(1)
    Z = torch.randn(2, 3, 10, 8, generator=g, dtype=F64)  # (b, h, N, d)
    U, _ = torch.linalg.qr(torch.randn(2, 8, 3, generator=g, dtype=F64))  # (K, d, p)
    R, Rc = cr.coding_rate(Z), cr.compression_rate(Z, U)
    G, Gn, M = cr.grad_compression_rate(Z, U), cr.grad_compression_rate_neumann(Z, U), cr.mssa(Z, U)
    assert R.shape == Rc.shape == (2, 3)
    assert G.shape == Gn.shape == M.shape == Z.shape
    for b in range(2):
        for h in range(3):
            torch.testing.assert_close(R[b, h], cr.coding_rate(Z[b, h]), rtol=1e-12, atol=0)
            torch.testing.assert_close(Rc[b, h], cr.compression_rate(Z[b, h], U), rtol=1e-12, atol=0)
            torch.testing.assert_close(G[b, h], cr.grad_compression_rate(Z[b, h], U), rtol=1e-12, atol=1e-15)
            torch.testing.assert_close(M[b, h], cr.mssa(Z[b, h], U), rtol=1e-12, atol=1e-15)


# ---------------------------------------------------------------------------------------------
# ∇R^c (eq. 9) and its Neumann approximation
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("form", ["auto", "d", "n"])
def test_closed_form_gradient_equals_autograd(form):
    Z, _, U = _data()
    # a non-orthonormal U too: eq. 9 holds for any U
    U_bad = U + 0.3 * torch.randn(U.shape, generator=torch.Generator().manual_seed(3), dtype=F64)
    for UU in (U, U_bad):
        for eps in (0.1, 0.5, 2.0):
            Zr = Z.clone().requires_grad_(True)
            (g_auto,) = torch.autograd.grad(cr.compression_rate(Zr, UU, eps), Zr)
            g_closed = cr.grad_compression_rate(Z, UU, eps, form=form)
            # measured relative error ≤ 1.4e-14 (float64 round-off)
            assert _rel(g_closed, g_auto) < 1e-10


def test_neumann_error_vanishes_quadratically_in_gamma_norm_A():
    """(I + γA)^{-1} − (I − γA) = γ²A²(I + γA)^{-1}: relative error ≤ t² with t = γ‖A‖₂.

    Measured (this data): ε = 0.5, 1, 2, 4, 8 → t ≈ 2.45, 0.61, 0.15, 0.038, 0.0096 and relative
    error ≈ 2.6, 0.19, 0.013, 8.3e-4, 5.2e-5; error / t² → 0.57, and doubling ε divides the error
    by ≈ 16 = 2⁴ once t is small.
    """
    Z, _, U = _data()
    N, p = Z.shape[0], U.shape[-1]
    ts, errs = [], []
    for eps in (0.5, 1.0, 2.0, 4.0, 8.0):
        gamma = p / (N * eps**2)
        t = (gamma * torch.linalg.matrix_norm(Z @ U, ord=2).pow(2)).max().item()  # max_k γ‖W_k W_k^T‖₂
        err = _rel(cr.grad_compression_rate_neumann(Z, U, eps), cr.grad_compression_rate(Z, U, eps))
        ts.append(t)
        errs.append(err)
    assert all(a > b for a, b in zip(errs[:-1], errs[1:], strict=True))  # grows with γ
    for t, e in zip(ts, errs, strict=True):
        assert e <= t**2  # the bound (U orthonormal and mutually orthogonal)
    assert errs[-1] < 1e-4 and errs[0] > 1.0  # accurate at large ε, useless at the paper's ε = 0.5
    # quadratic in t ∝ γ ∝ 1/ε²: doubling ε divides t by 4 and the error by ≈ 16 once t is small
    ratios = [errs[i] / errs[i + 1] for i in range(2, len(errs) - 1)]  # ε: 2 → 4, 4 → 8
    for ratio in ratios:
        assert 12.0 < ratio < 17.0, ratios


def test_neumann_gradient_is_first_order_series():
    """The approximation as written: γ Σ_k (W_k − γ W_k W_k^T W_k) U_k^T."""
    Z, _, U = _data()
    N, p = Z.shape[0], U.shape[-1]
    eps = 0.7
    gamma = p / (N * eps**2)
    expected = sum(gamma * (Z @ U[k] - gamma * Z @ U[k] @ U[k].T @ Z.T @ Z @ U[k]) @ U[k].T for k in range(3))
    torch.testing.assert_close(cr.grad_compression_rate_neumann(Z, U, eps), expected, rtol=1e-10, atol=1e-14)


# ---------------------------------------------------------------------------------------------
# MSSA as derived (eqs. 10–12)
# ---------------------------------------------------------------------------------------------


def test_ssa_and_mssa_equal_the_paper_column_form():
    Z, _, U = _data()
    N, p = Z.shape[0], U.shape[-1]
    eps = 0.5
    gamma = p / (N * eps**2)
    Zp = Z.T  # (d, N), paper layout
    ssa_paper = []
    for k in range(3):
        Wp = U[k].T @ Zp  # (p, N)
        ssa_paper.append(Wp @ torch.softmax(Wp.T @ Wp, dim=0))  # softmax over each column
        torch.testing.assert_close(cr.ssa(Z, U[k]), ssa_paper[-1].T, rtol=1e-12, atol=1e-14)
    U_cat = torch.cat(list(U), dim=1)  # [U_1 … U_K] (d, K·p)
    mssa_paper = gamma * U_cat @ torch.cat(ssa_paper, dim=0)  # (d, N)
    torch.testing.assert_close(cr.mssa(Z, U, eps), mssa_paper.T, rtol=1e-12, atol=1e-14)


def test_mssa_step_with_gram_membership_is_the_neumann_step():
    """Undo the softmax replacement and, with Σ U_k U_k^T = I, the step is exactly Z − κ ∇R^c_neumann."""
    Z, _, U = _data()  # K·p = d: a complete orthonormal split
    for eps, kappa in ((0.5, 0.3), (2.0, 1.0)):
        step = cr.mssa_step(Z, U, eps, kappa, membership="gram")
        torch.testing.assert_close(
            step, Z - kappa * cr.grad_compression_rate_neumann(Z, U, eps), rtol=1e-10, atol=1e-13
        )


@pytest.mark.parametrize("tau,residual", [(1.0, None), (0.5, None), (1.0, 1.0), (0.25, 0.7)])
def test_mssa_step_knobs_are_the_temperature_and_the_residual_coefficient(tau, residual):
    """c Z + κγ · γ Σ_k softmax(τ W_k W_k^T) W_k U_k^T, with c = 1 − κγ unless given."""
    Z, _, U = _data()
    eps, kappa = 0.5, 0.4
    gamma = U.shape[-1] / (Z.shape[0] * eps**2)
    attended = 0
    for U_k in U:
        W = Z @ U_k  # (N, p)
        attended = attended + torch.softmax(tau * (W @ W.T), dim=-1) @ W @ U_k.T
    c = 1 - kappa * gamma if residual is None else residual
    expected = c * Z + kappa * gamma * gamma * attended
    step = cr.mssa_step(Z, U, eps, kappa, tau=tau, residual=residual)
    torch.testing.assert_close(step, expected, rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(cr.mssa(Z, U, eps, tau=tau), gamma * attended, rtol=1e-12, atol=1e-14)
    if tau == 1.0 and residual is None:  # the defaults are the derived step
        assert torch.equal(step, cr.mssa_step(Z, U, eps, kappa))
    else:
        assert (step - cr.mssa_step(Z, U, eps, kappa)).abs().max() > 1e-3


def test_softmax_membership_is_each_heads_attention():
    Z, _, U = _data()
    for tau in (1.0, 0.3):
        A = cr.softmax_membership(Z, U, tau)  # (K, N, N)
        assert A.shape == (3, 60, 60)
        torch.testing.assert_close(A.sum(-1), torch.ones(3, 60, dtype=F64), rtol=0, atol=1e-12)
        for k, U_k in enumerate(U):
            W = Z @ U_k
            torch.testing.assert_close(A[k], torch.softmax(tau * W @ W.T, dim=-1), rtol=1e-12, atol=1e-15)
    torch.testing.assert_close(cr.softmax_membership(Z, U)[1] @ (Z @ U[1]), cr.ssa(Z, U[1]))  # eq. 11
    batched = cr.softmax_membership(torch.stack([Z, 2 * Z]), U)  # (2, K, N, N)
    torch.testing.assert_close(batched[1], cr.softmax_membership(2 * Z, U))
    # a larger scale of the tokens sharpens the membership, as a larger τ does
    assert cr.membership_entropy(cr.softmax_membership(3 * Z, U)) < cr.membership_entropy(
        cr.softmax_membership(Z, U)
    )


def test_membership_entropy_from_uniform_to_one_hot():
    n = 7
    uniform = torch.full((2, n, n), 1 / n, dtype=F64)
    assert cr.membership_entropy(uniform).item() == pytest.approx(math.log(n), rel=1e-12)
    assert cr.membership_entropy(torch.eye(n)).item() == 0.0  # 0 log 0 = 0, also in float32
    two = torch.tensor([[0.5, 0.5, 0.0], [1.0, 0.0, 0.0]], dtype=F64)  # rows: log 2 and 0
    assert cr.membership_entropy(two).item() == pytest.approx(math.log(2) / 2, rel=1e-12)


def test_cosine_of_two_updates():
    g = torch.Generator().manual_seed(0)
    a = torch.randn(10, 4, generator=g, dtype=F64)
    b = torch.randn(10, 4, generator=g, dtype=F64)
    assert cr.cosine(a, 3 * a).item() == pytest.approx(1.0, abs=1e-12)
    assert cr.cosine(a, -a).item() == pytest.approx(-1.0, abs=1e-12)
    b_perp = b - (a * b).sum() / (a * a).sum() * a  # b without its component along a
    assert abs(cr.cosine(a, b_perp).item()) < 1e-12
    expected = (a.flatten() @ b.flatten()) / (a.flatten().norm() * b.flatten().norm())
    torch.testing.assert_close(cr.cosine(a, b), expected, rtol=1e-12, atol=0)
    with pytest.raises(ValueError, match=r"one shape, got \(10, 4\) and \(4, 10\)"):
        cr.cosine(a, b.T)


def test_gradient_step_and_mssa_step_both_lower_Rc_for_small_kappa():
    """Exact gradient step: a descent direction at any ε. The MSSA step, on this data, too.

    Measured ΔR^c after one step (nats), ε = 0.5 (γ ≈ 0.27): κ = 0.01: exact −0.0072, MSSA −0.016;
    κ = 0.1: −0.072, −0.158. ε = 0.1 (γ ≈ 6.7): κ = 0.01: −0.034, −0.154; the MSSA direction has
    cosine ≈ −0.97 (ε = 0.5) and −0.19 (ε = 0.1) with ∇R^c. Its descent comes from the (1 − κγ)
    shrinkage: shrinking alone, (1 − κγ) Z, lowers R^c more (κ = 0.1: −0.163 at ε = 0.5, −11.4 at
    ε = 0.1); the attention term pushes part of it back (cf. Hu et al., NeurIPS 2024). With κγ > 1
    (ε = 0.1, κ = 1) the MSSA step overshoots and R^c rises.
    """
    Z, _, U = _data()
    N, p = Z.shape[0], U.shape[-1]
    for eps in (0.5, 0.1):
        R0 = cr.compression_rate(Z, U, eps)
        grad = cr.grad_compression_rate(Z, U, eps)
        assert (grad * (cr.mssa(Z, U, eps) - Z)).sum() < 0  # MSSA(Z) − Z is a descent direction here
        for kappa in (1e-3, 1e-2, 0.1):
            assert cr.compression_rate(cr.gram_step(Z, U, eps, kappa), U, eps) < R0
            assert cr.compression_rate(cr.mssa_step(Z, U, eps, kappa), U, eps) < R0
        # the attention term alone does not compress here: pure shrinkage lowers R^c further
        gamma = p / (N * eps**2)
        R_shrink = cr.compression_rate((1 - 0.1 * gamma) * Z, U, eps)
        assert R_shrink < cr.compression_rate(cr.mssa_step(Z, U, eps, 0.1), U, eps)
        # first order: the exact step lowers R^c by κ‖∇R^c‖² + O(κ²)
        kappa = 1e-4
        drop = R0 - cr.compression_rate(cr.gram_step(Z, U, eps, kappa), U, eps)
        assert drop.item() == pytest.approx(kappa * grad.pow(2).sum().item(), rel=1e-2)
    eps, kappa = 0.1, 1.0
    assert kappa * p / (N * eps**2) > 1
    assert cr.compression_rate(cr.mssa_step(Z, U, eps, kappa), U, eps) > cr.compression_rate(Z, U, eps)


# ---------------------------------------------------------------------------------------------
# LASSO and ISTA (eqs. 16–17)
# ---------------------------------------------------------------------------------------------


def _lasso_problem(m: int = 12):
    g = torch.Generator().manual_seed(0)
    d, N = 12, 30
    D = torch.randn(d, m, generator=g, dtype=F64) / math.sqrt(d)
    X = torch.randn(2, N, d, generator=g, dtype=F64)
    return X, D, g


def test_ista_step_equals_the_paper_column_form():
    X, D, g = _lasso_problem()
    Z = torch.rand(X.shape[:-1] + (D.shape[1],), generator=g, dtype=F64)
    eta, lam = 0.1, 0.1
    Zp, Xp = Z.transpose(-2, -1), X.transpose(-2, -1)  # (m, N), (d, N)
    paper = torch.relu(Zp + eta * D.T @ (Xp - D @ Zp) - eta * lam)
    torch.testing.assert_close(
        cr.ista_step(Z, X, D, eta, lam), paper.transpose(-2, -1), rtol=1e-12, atol=1e-14
    )
    # the CRATE block: warm start at the signal, ReLU(Z + η D^T (Z − D Z) − ηλ)
    Zc = X
    crate = torch.relu(Zc + eta * (Zc - Zc @ D.T) @ D - eta * lam)
    torch.testing.assert_close(cr.ista_step(Zc, Zc, D, eta, lam), crate, rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(
        cr.soft_threshold_nonneg(torch.tensor([-1.0, 0.05, 0.3]), 0.1), torch.tensor([0.0, 0.0, 0.2])
    )


def test_ista_step_decreases_lasso_objective_for_small_eta():
    X, D, g = _lasso_problem()
    eta_max = cr.max_step_size(D).item()
    assert eta_max == pytest.approx(1.0 / torch.linalg.svdvals(D)[0].item() ** 2, rel=1e-12)
    lam = 0.1
    for trial in range(3):
        Z = torch.rand(X.shape[:-1] + (D.shape[1],), generator=g, dtype=F64) * (trial + 1)  # feasible Z ≥ 0
        f0 = cr.lasso_objective(Z, X, D, lam)
        for eta in (eta_max, 0.5 * eta_max, 0.1 * eta_max):
            f1 = cr.lasso_objective(cr.ista_step(Z, X, D, eta, lam), X, D, lam)
            assert (f1 < f0).all()
    # the objective itself: λ‖Z‖₁ + ½‖X − Z D^T‖_F² per batch element
    Z = torch.rand(X.shape[:-1] + (D.shape[1],), generator=g, dtype=F64)
    expected = torch.stack(
        [lam * Z[i].abs().sum() + 0.5 * ((X[i] - Z[i] @ D.T) ** 2).sum() for i in range(2)]
    )
    torch.testing.assert_close(cr.lasso_objective(Z, X, D, lam), expected, rtol=1e-12, atol=0)


@pytest.mark.parametrize("m,init,lam", [(12, "zeros", 0.1), (12, "x", 0.1), (24, "zeros", 0.5)])
def test_ista_solve_is_monotone_and_converges(m, init, lam):
    """Square D (CRATE) and a 2× overcomplete D (CRATE-α style; λ = 0.5 as in the CRATE-MAE encoder:
    with λ = 0.1 the overcomplete problem converges much more slowly, ~1e-7 relative change per
    step after 1000 steps)."""
    X, D, _ = _lasso_problem(m)
    eta = cr.max_step_size(D).item()
    Z, hist = cr.ista_solve(X, D, eta, lam, steps=500, init=init, return_history=True)
    assert hist.shape == (501, 2)
    assert (Z >= 0).all()
    steps = hist[1:] - hist[:-1]  # (500, 2)
    # from a feasible start every step decreases F; Z0 = X may be infeasible (negative entries),
    # where descent is guaranteed only from the first iterate on
    first = 0 if init == "zeros" else 1
    assert (steps[first:] <= 1e-12 * hist[first + 1 :].abs()).all()
    assert (hist[-1] < 0.9 * hist[first]).all()
    assert (steps[-1].abs() <= 1e-9 * hist[-1]).all()  # converged: measured ≤ 2.1e-10 relative
    # optimality (KKT) of min_{Z≥0} λ‖Z‖₁ + ½‖X − Z D^T‖²: g = (X − Z D^T) D equals λ where Z > 0
    # and is ≤ λ where Z = 0 (measured after 500 steps: worst residual ≈ 2e-4, most < 1e-11)
    g = (X - Z @ D.T) @ D
    assert (g[Z > 0] - lam).abs().max() < 1e-3
    assert (g[Z == 0] - lam).max() < 1e-3
    # the solution is sparse but not trivial
    assert 0.05 < cr.fraction_nonzero(Z).item() < 0.95


# ---------------------------------------------------------------------------------------------
# sparsity and the official layer-wise measurement
# ---------------------------------------------------------------------------------------------


def test_fraction_nonzero_and_l1_norm():
    Z = torch.tensor([[0.0, 1.0, -2.0, 0.0], [0.0, 0.0, 0.0, 1e-9]])
    assert cr.fraction_nonzero(Z).item() == pytest.approx(3 / 8)
    assert cr.fraction_nonzero(Z, tol=1e-6).item() == pytest.approx(2 / 8)
    torch.testing.assert_close(cr.fraction_nonzero(Z, dim=-1), torch.tensor([0.5, 0.25]))
    assert cr.l1_norm(Z).item() == pytest.approx(3.0 + 1e-9)
    torch.testing.assert_close(cr.l1_norm(Z, dim=-1), torch.tensor([3.0, 1e-9]))


def test_reconstruction_error_is_relative_to_the_signal():
    X, D, g = _lasso_problem(m=20)  # X (2, 30, 12), D (12, 20)
    Z = torch.rand(2, 30, 20, generator=g, dtype=F64)
    err = cr.reconstruction_error(X, Z, D)  # (2,)
    for b in range(2):
        expected = torch.linalg.norm(X[b].T - D @ Z[b].T) / torch.linalg.norm(X[b].T)  # paper layout
        torch.testing.assert_close(err[b], expected, rtol=1e-12, atol=0)
    torch.testing.assert_close(cr.reconstruction_error(X, torch.zeros_like(Z), D), torch.ones(2, dtype=F64))
    A = torch.rand(30, 20, generator=g, dtype=F64)
    assert cr.reconstruction_error(A @ D.T, A, D).item() < 1e-14  # an exact code
    torch.testing.assert_close(cr.reconstruction_error(3 * X, 3 * Z, D), err)  # scale-free
    with pytest.raises(ValueError, match="codes Z have width 12 but D has m=20"):
        cr.reconstruction_error(X, X, D)


def test_measure_coding_rate_matches_official_fixture():
    fx = torch.load(FIXTURE, weights_only=True)
    X = fx["X"]  # (3, 4, 17, 16): (b, h, n, p)
    mean, std = cr.measure_coding_rate(X, eps=fx["eps_sq"])
    # measured: |Δmean| ≈ 8e-6, |Δstd| ≈ 1.3e-5 (mean ≈ 124.79, std ≈ 1.20)
    assert abs(mean.item() - fx["mean"].item()) <= 1e-4
    assert abs(std.item() - fx["std"].item()) <= 1e-4
    # and it is the compression rate of eq. 8 with ε² = eps, on unit-normalised tokens, summed over heads
    Xn = X.double() / X.double().norm(dim=-1, keepdim=True)
    per_head = cr.coding_rate(Xn, eps=math.sqrt(fx["eps_sq"]))  # d = p inside eq. 7 for one head
    torch.testing.assert_close(mean.double(), per_head.sum(-1).mean(), rtol=1e-6, atol=0)


@pytest.mark.parametrize("n,p", [(17, 32), (5, 8), (24, 8)])
def test_measure_coding_rate_range_is_attained_at_both_ends(n, p):
    """Minimum: all tokens of a head along one direction; maximum: spread over m = min(n, p)
    orthogonal directions (n ≤ p: orthonormal tokens; n = c·p: c copies of an orthonormal basis)."""
    K = 3
    lo, hi = cr.measure_coding_rate_range(n, p, K)
    assert lo == pytest.approx(K / 2 * math.log(1 + p / 0.01))
    g = torch.Generator().manual_seed(n)
    same = torch.randn(1, K, 1, p, generator=g, dtype=F64) * torch.rand(1, K, n, 1, generator=g, dtype=F64)
    Q = torch.linalg.qr(torch.randn(1, K, p, p, generator=g, dtype=F64))[0]  # (1, K, p, p) orthonormal
    spread = Q[..., :n].transpose(-1, -2) if n <= p else Q.repeat(1, 1, n // p, 1)
    rand = torch.randn(16, K, n, p, generator=g, dtype=F64)
    for proj, expected in ((same, lo), (spread, hi)):
        mean, _ = cr.measure_coding_rate(proj.expand(2, -1, -1, -1))  # two equal images
        assert mean.item() == pytest.approx(expected, abs=1e-9)
    per_image = cr.coding_rate(rand / rand.norm(dim=-1, keepdim=True), math.sqrt(0.01)).sum(-1)  # (16,)
    assert ((per_image > lo) & (per_image < hi)).all()


def test_measure_sparsity_and_nonzero():
    z = torch.ones(2, 4, 8)
    z[0, :2] = 0.0  # half the entries of sample 0 are zero
    z[1, :1] = 0.0  # a quarter of sample 1
    mean, std = cr.measure_sparsity(z)
    per_sample = np.array([0.5, 0.25])
    assert mean.item() == pytest.approx(per_sample.mean())
    assert std.item() == pytest.approx(np.std(per_sample))  # population std (ddof = 0) = 0.125
    nz_mean, nz_std = cr.measure_nonzero(z)
    assert nz_mean.item() == pytest.approx(1 - per_sample.mean())
    assert nz_std.item() == pytest.approx(0.125)


# ---------------------------------------------------------------------------------------------
# bad input
# ---------------------------------------------------------------------------------------------


def test_bad_inputs_raise_helpful_errors():
    Z, _, U = _data()
    with pytest.raises(ValueError, match=r"\(\.\.\., N, d\).*Z\[None, :\]"):
        cr.coding_rate(torch.randn(5))
    with pytest.raises(ValueError, match=r"ε and must be a finite number > 0, got 0"):
        cr.coding_rate(Z, eps=0)
    with pytest.raises(ValueError, match="> 0"):
        cr.compression_rate(Z, U, eps=-0.5)
    with pytest.raises(ValueError, match=r"ambient dimension d=12 .* width d=10.*transpose"):
        cr.compression_rate(Z[:, :10], U)
    with pytest.raises(ValueError, match=r"\(K, d, p\).*U_k\[None\]"):
        cr.grad_compression_rate(Z, U[0])
    with pytest.raises(ValueError, match="form must be one of"):
        cr.coding_rate(Z, form="x")
    with pytest.raises(ValueError, match="'l1'.*'l0'"):
        cr.sparse_rate_reduction(Z, U, norm="l2")
    with pytest.raises(ValueError, match="floating-point.*float()"):
        cr.coding_rate(torch.ones(3, 4, dtype=torch.int64))
    with pytest.raises(ValueError, match=r"\(b, h, n, p\).*rearrange"):
        cr.measure_coding_rate(torch.randn(3, 17, 16))
    with pytest.raises(ValueError, match=r"orthogonal directions do not fit.*orthogonal=False"):
        cr.union_of_subspaces(5, 4, 8, 3)
    with pytest.raises(ValueError, match="membership must be"):
        cr.mssa(Z, U, membership="dot")
    X, D, _ = _lasso_problem()
    with pytest.raises(ValueError, match=r"D has 12 rows .* width d=10"):
        cr.ista_step(X[..., :10], X[..., :10], D)
    with pytest.raises(ValueError, match="square dictionary.*init='zeros'"):
        cr.ista_solve(X, torch.randn(12, 24), init="x")


# ---------------------------------------------------------------------------------------------
# the causal step (language): each token against its prefix
# ---------------------------------------------------------------------------------------------


def _causal_data(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    Z = torch.randn(2, 9, 12, generator=g, dtype=F64)  # (B, N, d)
    U = torch.linalg.qr(torch.randn(12, 12, generator=g, dtype=F64))[0].reshape(12, 3, 4).permute(1, 0, 2)
    return Z, U  # U: (K=3, d=12, p=4), orthonormal and complete


def test_prefix_gamma_is_eq9_gamma_of_each_prefix():
    torch.testing.assert_close(cr.prefix_gamma(3, 4, 0.5), torch.tensor([16.0, 8.0, 16 / 3]))
    with pytest.raises(ValueError, match="eps"):
        cr.prefix_gamma(3, 4, 0.0)


@pytest.mark.parametrize("membership", ["softmax", "gram"])
@pytest.mark.parametrize("tau", [1.0, 0.5])
def test_causal_mssa_step_is_mssa_step_on_each_prefix(membership, tau):
    Z, U = _causal_data()
    got = cr.causal_mssa_step(Z, U, 0.5, 0.1, membership=membership, tau=tau)
    want = torch.stack(
        [cr.mssa_step(Z[:, : t + 1], U, 0.5, 0.1, membership=membership, tau=tau)[:, t] for t in range(9)], 1
    )
    torch.testing.assert_close(got, want, rtol=0, atol=1e-12)
    # and causal MSSA on the whole sequence is plain MSSA at the last position
    torch.testing.assert_close(cr.causal_mssa(Z, U)[:, -1], cr.mssa(Z, U)[:, -1], rtol=0, atol=1e-12)


def test_causal_step_never_looks_ahead():
    Z, U = _causal_data()
    Z2 = Z.clone()
    Z2[:, 5:] = torch.randn_like(Z2[:, 5:])  # change the future of position 4
    a, b = cr.causal_mssa_step(Z, U), cr.causal_mssa_step(Z2, U)
    torch.testing.assert_close(a[:, :5], b[:, :5], rtol=0, atol=0)
    assert (a[:, 5:] - b[:, 5:]).abs().max() > 1e-3


def test_causal_gradient_matches_autograd_on_each_prefix():
    Z, U = _causal_data(1)
    got = cr.causal_grad_compression_rate(Z, U, 0.5)
    rows = []
    for t in range(Z.shape[1]):
        Zt = Z[:, : t + 1].clone().requires_grad_(True)
        cr.compression_rate(Zt, U, 0.5).sum().backward()
        rows.append(Zt.grad[:, t])
    torch.testing.assert_close(got, torch.stack(rows, 1), rtol=0, atol=1e-12)


def test_causal_gram_step_is_the_neumann_gradient_step_of_each_prefix():
    # With the Gram membership and Σ_k U_k U_k^T = I the derived step is exactly a gradient step on
    # the first-order (Neumann) approximation of R^c(Z_{≤t}), for every t.
    Z, U = _causal_data(2)
    neumann = torch.stack(
        [cr.grad_compression_rate_neumann(Z[:, : t + 1], U, 0.5)[:, t] for t in range(9)], 1
    )
    got = cr.causal_mssa_step(Z, U, 0.5, 0.1, membership="gram")
    torch.testing.assert_close(got, Z - 0.1 * neumann, rtol=0, atol=1e-12)


def test_causal_mssa_rejects_unknown_membership():
    Z, U = _causal_data()
    with pytest.raises(ValueError, match="membership must be"):
        cr.causal_mssa(Z, U, membership="linear")


# ---------------------------------------------------------------------------------------------
# MCR² with labels (arXiv 2006.08558) and ReduNet's operators E, C_j (arXiv 2105.10446)
# ---------------------------------------------------------------------------------------------


def _labelled(seed: int = 0, noise: float = 0.3, sizes: tuple[int, ...] = (7, 12, 9)):
    """Three classes of unequal sizes, shuffled, on non-orthogonal subspaces plus noise."""
    g = torch.Generator().manual_seed(seed)
    Z, labels, _ = cr.union_of_subspaces(12, 3, 6, 2, noise, g, orthogonal=False, dtype=F64)
    keep = torch.cat([torch.nonzero(labels == k)[: sizes[k], 0] for k in range(3)])
    perm = torch.randperm(len(keep), generator=g)
    return Z[keep][perm], labels[keep][perm]


def _official_compute_loss_vec(Z: torch.Tensor, y: torch.Tensor, eps: float):
    """A transcription of the official ReduNet ``loss.compute_loss_vec`` (loss.py:44-57).

    Its ``eps`` is the ε² of the paper: c = d/(m·eps).
    """
    m, d = Z.shape
    eye = torch.eye(d, dtype=Z.dtype)
    c = d / (m * eps)
    loss_expd = torch.logdet(c * Z.T @ Z + eye) / 2.0
    loss_comp = 0.0
    for j in y.unique():
        Z_j = Z[(y == int(j))]
        m_j = Z_j.shape[0]
        c_j = d / (m_j * eps)
        loss_comp = loss_comp + m_j / m * torch.logdet(eye + c_j * Z_j.T @ Z_j) / 2.0
    return loss_expd - loss_comp, loss_expd, loss_comp


def test_class_compression_rate_matches_the_paper_form_and_the_official_loss():
    Z, labels = _labelled()
    m, d = Z.shape
    for eps in (0.2, 0.5, 1.5):
        # the paper's form: Z_paper = Z^T (d×m), Π_j = diag(1[labels = j]) (m×m)
        expected = torch.zeros((), dtype=F64)
        for j in range(3):
            Pi_j = torch.diag((labels == j).to(F64))
            tr = torch.trace(Pi_j)
            M = torch.eye(d, dtype=F64) + d / (tr * eps**2) * Z.T @ Pi_j @ Z
            expected = expected + tr / (2 * m) * torch.logdet(M)
        Rc = cr.class_compression_rate(Z, labels, eps)
        torch.testing.assert_close(Rc, expected, rtol=1e-12, atol=0)
        # the official loss with its eps = ε²: (ΔR, R, R^c) all equal
        dR, R, Rc_off = _official_compute_loss_vec(Z, labels, eps**2)
        torch.testing.assert_close(Rc, Rc_off, rtol=1e-12, atol=0)
        torch.testing.assert_close(cr.coding_rate(Z, eps), R, rtol=1e-12, atol=0)
        torch.testing.assert_close(cr.mcr2(Z, labels, eps), dR, rtol=1e-12, atol=0)
        # R^c = Σ_j (m_j/m) R(Z_j): each class coded on its own
        per_class = sum(
            (labels == j).sum().item() / m * cr.coding_rate(Z[labels == j], eps) for j in range(3)
        )
        torch.testing.assert_close(Rc, per_class, rtol=1e-12, atol=0)


def test_mcr2_is_nonnegative_and_handles_memberships_empty_classes_and_batches():
    Z, labels = _labelled()
    eps = 0.5
    Pi = cr.label_memberships(labels, dtype=F64)  # (m, 3) one-hot
    assert Pi.shape == (28, 3) and torch.equal(Pi.sum(0), torch.tensor([7.0, 12.0, 9.0], dtype=F64))
    # one-hot memberships and labels are the same thing
    torch.testing.assert_close(cr.mcr2(Z, Pi, eps), cr.mcr2(Z, labels, eps), rtol=1e-12, atol=0)
    # ΔR ≥ 0 for one-hot Π (concavity of logdet), for every seed tried
    for seed in range(5):
        Zs, ls = _labelled(seed)
        assert cr.mcr2(Zs, ls, eps) > 0
    # an empty class contributes nothing
    torch.testing.assert_close(
        cr.class_compression_rate(Z, labels, eps, num_classes=5),
        cr.class_compression_rate(Z, labels, eps),
        rtol=1e-12,
        atol=0,
    )
    # one class: R^c = R and ΔR = 0
    zeros = torch.zeros(28, dtype=torch.int64)
    torch.testing.assert_close(cr.mcr2(Z, zeros, eps), torch.zeros((), dtype=F64), rtol=0, atol=1e-12)
    # soft memberships: the paper's form with Π_j = diag(π_·j)
    g = torch.Generator().manual_seed(1)
    soft = torch.softmax(torch.randn(28, 3, generator=g, dtype=F64), -1)
    expected = sum(
        soft[:, j].sum()
        / (2 * 28)
        * torch.logdet(
            torch.eye(6, dtype=F64) + 6 / (soft[:, j].sum() * eps**2) * Z.T @ torch.diag(soft[:, j]) @ Z
        )
        for j in range(3)
    )
    torch.testing.assert_close(cr.class_compression_rate(Z, soft, eps), expected, rtol=1e-12, atol=0)
    # batches: (B, m, d) with shared labels, and (B, m, d) with per-batch memberships
    Zb = torch.stack([Z, 2 * Z])
    out = cr.mcr2(Zb, labels, eps)
    assert out.shape == (2,)
    torch.testing.assert_close(out[1], cr.mcr2(2 * Z, labels, eps), rtol=1e-12, atol=0)
    out = cr.class_compression_rate(Zb, torch.stack([soft, Pi]), eps)
    torch.testing.assert_close(out[1], cr.class_compression_rate(2 * Z, labels, eps), rtol=1e-12, atol=0)


@pytest.mark.parametrize("eps", [0.1, 0.5, 2.0])
def test_mcr2_gradients_equal_autograd(eps):
    Z, labels = _labelled(seed=3)
    soft = torch.softmax(torch.randn(28, 3, generator=torch.Generator().manual_seed(4), dtype=F64), -1)
    Zr = Z.clone().requires_grad_(True)
    (g_R,) = torch.autograd.grad(cr.coding_rate(Zr, eps), Zr)
    assert _rel(cr.grad_coding_rate(Z, eps), g_R) < 1e-10
    for memberships in (labels, soft):
        (g_Rc,) = torch.autograd.grad(cr.class_compression_rate(Zr, memberships, eps), Zr)
        (g_dR,) = torch.autograd.grad(cr.mcr2(Zr, memberships, eps), Zr)
        assert _rel(cr.grad_class_compression_rate(Z, memberships, eps), g_Rc) < 1e-10
        assert _rel(cr.grad_mcr2(Z, memberships, eps), g_dR) < 1e-10
    # batched, with per-batch memberships
    Zb = torch.stack([Z, 0.5 * Z]).requires_grad_(True)
    Pb = torch.stack([soft, cr.label_memberships(labels, dtype=F64)])
    (g_b,) = torch.autograd.grad(cr.mcr2(Zb, Pb, eps).sum(), Zb)
    assert _rel(cr.grad_mcr2(Zb.detach(), Pb, eps), g_b) < 1e-10


def test_expansion_and_compression_operators_are_the_gradient_per_sample():
    Z, labels = _labelled(seed=2)
    m, d = Z.shape
    eps = 0.4
    # the official arithmetic (vector.py:48-67) with its eps = ε², samples as columns
    c = d / (m * eps**2)
    E_off = c * torch.inverse(torch.eye(d, dtype=F64) + c * Z.T @ Z)
    E = cr.expansion_operator(Z, eps)
    torch.testing.assert_close(E, E_off, rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(E, E.T, rtol=0, atol=1e-14)
    C, gamma = cr.compression_operators(Z, labels, eps)
    assert C.shape == (3, d, d) and gamma.shape == (3,)
    torch.testing.assert_close(gamma, torch.tensor([7, 12, 9], dtype=F64) / m, rtol=0, atol=1e-15)
    for j in range(3):
        Zj = Z[labels == j]
        cj = d / (len(Zj) * eps**2)
        torch.testing.assert_close(
            C[j], cj * torch.inverse(torch.eye(d, dtype=F64) + cj * Zj.T @ Zj), rtol=1e-12, atol=1e-14
        )
    # ∇ΔR at sample i of class j is E z_i − γ_j C_j z_i
    per_sample = torch.stack([E @ z - gamma[y] * C[y] @ z for z, y in zip(Z, labels, strict=True)])
    assert _rel(per_sample, cr.grad_mcr2(Z, labels, eps)) < 1e-12
    # an empty class: C_j = 0, γ_j = 0
    C5, gamma5 = cr.compression_operators(Z, labels, eps, num_classes=4)
    assert C5[3].abs().max() == 0 and gamma5[3] == 0


def test_mcr2_prefers_orthogonal_subspaces():
    """Fixed per-class data, class 1's subspace rotated: R^c is unchanged, R and ΔR grow with the
    angle and are largest at θ = π/2, where R splits into the two classes' own rates."""
    eps, n_per, d, p = 0.5, 30, 8, 2
    thetas = torch.linspace(0, math.pi / 2, 19, dtype=F64).tolist()
    dR, Rc = [], []
    for theta in thetas:
        Z, labels = cr.subspaces_at_angle(n_per, d, p, theta, torch.Generator().manual_seed(0), dtype=F64)
        dR.append(cr.mcr2(Z, labels, eps).item())
        Rc.append(cr.class_compression_rate(Z, labels, eps).item())
    assert max(Rc) - min(Rc) < 1e-10  # only a rotation of class 1
    assert all(b > a for a, b in zip(dR[:-1], dR[1:], strict=True)), dR  # strictly increasing in θ
    assert int(np.argmax(dR)) == len(thetas) - 1
    # at θ = π/2: det(I + c(A + B)) = det(I + cA) det(I + cB) for A B = 0 (orthogonal ranges)
    Z, labels = cr.subspaces_at_angle(n_per, d, p, math.pi / 2, torch.Generator().manual_seed(0), dtype=F64)
    m = 2 * n_per
    c = d / (m * eps**2)
    split = sum(
        0.5 * torch.logdet(torch.eye(d, dtype=F64) + c * Z[labels == j].T @ Z[labels == j]) for j in (0, 1)
    )
    torch.testing.assert_close(cr.coding_rate(Z, eps), split, rtol=1e-12, atol=0)
    # any other orientation of class 1 (random orthonormal bases, same coefficients) scores lower
    best = cr.mcr2(Z, labels, eps)
    g = torch.Generator().manual_seed(1)
    A1 = Z[labels == 1] @ torch.linalg.qr(Z[labels == 1].T)[0][:, :p]  # class 1's coefficients (n_per, p)
    for _ in range(50):
        U2 = torch.linalg.qr(torch.randn(d, p, generator=g, dtype=F64))[0]
        Z_rot = torch.cat([Z[labels == 0], A1 @ U2.T])
        assert cr.mcr2(Z_rot, labels, eps) < best
    with pytest.raises(ValueError, match=r"2p ≤ d"):
        cr.subspaces_at_angle(5, 3, 2, 0.1)


def test_mcr2_bad_inputs_raise_one_line_errors():
    Z, labels = _labelled()
    cases = [
        (lambda: cr.mcr2(Z, labels[:-1]), r"shape \(m,\) = \(28,\).*got shape \(27,\)"),
        (lambda: cr.mcr2(Z, labels.reshape(4, 7)), r"shape \(m,\) = \(28,\).*reshape\(-1\)"),
        (lambda: cr.mcr2(Z, labels - 1), r"must lie in 0\.\.1 .*from -1 to 1"),
        (lambda: cr.mcr2(Z, labels, num_classes=2), r"must lie in 0\.\.1 \(num_classes = 2\)"),
        (lambda: cr.mcr2(Z, labels, num_classes=0), r"num_classes must be an int ≥ 1"),
        (
            lambda: cr.mcr2(Z, torch.rand(27, 3, dtype=F64)),
            r"memberships Π of shape \(\.\.\., m, K\) with m = 28",
        ),
        (lambda: cr.mcr2(Z, -torch.rand(28, 3, dtype=F64)), r"finite and ≥ 0"),
        (
            lambda: cr.mcr2(Z, torch.rand(28, 3, dtype=F64), num_classes=4),
            r"K = 3 columns but num_classes = 4",
        ),
        (lambda: cr.mcr2(Z, labels.tolist()), r"torch.Tensor.*as_tensor"),
        (lambda: cr.mcr2(Z, labels == 0), r"integer class indices, got dtype torch.bool"),
        (lambda: cr.mcr2(Z[:0], labels[:0]), r"no samples"),
        (lambda: cr.mcr2(Z, labels, eps=0), r"ε and must be a finite number > 0"),
        (lambda: cr.grad_mcr2(Z[0], labels), r"\(\.\.\., N, d\)"),
        (lambda: cr.label_memberships(labels.double()), r"integer class indices.*labels.long\(\)"),
    ]
    for call, pattern in cases:
        with pytest.raises((ValueError, TypeError), match=pattern) as info:
            call()
        assert "\n" not in str(info.value)
