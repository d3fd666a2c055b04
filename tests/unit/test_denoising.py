"""Tests for crate_edu.denoising: the exact denoiser of a mixture of low-rank Gaussians, MSSA beside it."""

from __future__ import annotations

import math

import pytest
import torch

from crate_edu import coding_rate as cr
from crate_edu import denoising as dn

F64 = torch.float64


def _setup(seed=0, d=6, K=3, p=2, n=40, sigma=0.4, overlap=None):
    g = torch.Generator().manual_seed(seed)
    if overlap is None:
        U, _ = torch.linalg.qr(torch.randn(K, d, p, generator=g, dtype=F64))  # independent random subspaces
    else:
        U = dn.overlapping_subspaces(d, K, p, overlap, g, dtype=F64)
    X, Z, labels = dn.sample_mixture(n, U, sigma, g)
    return X, Z, labels, U


def _rel(a, b):
    return ((a - b).norm() / b.norm()).item()


# ---------------------------------------------------------------------------------------------
# the model
# ---------------------------------------------------------------------------------------------


def test_sample_mixture_puts_clean_tokens_on_their_subspace():
    X, Z, labels, U = _setup(sigma=0.3, n=200)
    assert X.shape == Z.shape == (200, 6) and labels.shape == (200,) and X.dtype == F64
    for k in range(3):
        Zk = Z[labels == k]
        torch.testing.assert_close(Zk @ U[k] @ U[k].T, Zk, rtol=0, atol=1e-12)
    noise = X - Z  # σ n with n ~ N(0, I): empirical std near σ
    assert abs(noise.std().item() - 0.3) < 0.03
    assert set(labels.tolist()) == {0, 1, 2}


def test_overlapping_subspaces_have_the_stated_overlap():
    U = dn.overlapping_subspaces(20, 3, 4, 0.3, torch.Generator().manual_seed(1), dtype=F64)
    eye = torch.eye(4, dtype=F64)
    for k in range(3):
        torch.testing.assert_close(U[k].T @ U[k], eye, rtol=0, atol=1e-12)  # orthonormal columns
        for m in range(3):
            if m != k:
                torch.testing.assert_close(U[k].T @ U[m], 0.3 * eye, rtol=0, atol=1e-12)
    with pytest.raises(ValueError, match="do not fit"):
        dn.overlapping_subspaces(12, 3, 4, 0.1)
    with pytest.raises(ValueError, match="overlap"):
        dn.overlapping_subspaces(20, 3, 4, 1.0)


def test_aot_tokens_carry_signal_on_their_own_subspace_and_noise_elsewhere():
    U = cr.random_complete_split(12, 3, 4, torch.Generator().manual_seed(2), dtype=F64)
    Z, labels = dn.sample_subspace_noise_tokens(500, U, 0.2, torch.Generator().manual_seed(3))
    assert Z.shape == (1500, 12) and torch.equal(labels, torch.arange(3).repeat_interleave(500))
    W = torch.einsum("nd,kdp->nkp", Z, U)  # (N, K, p)
    own = W[torch.arange(1500), labels]  # a_i ~ N(0, I_p)
    mask = torch.ones(1500, 3, dtype=torch.bool)
    mask[torch.arange(1500), labels] = False
    assert abs(own.std().item() - 1.0) < 0.05
    assert abs(W[mask].std().item() - 0.2) < 0.01  # e_{i,j} ~ N(0, δ² I_p)
    noiseless, _ = dn.sample_subspace_noise_tokens(5, U, 0.0, torch.Generator().manual_seed(3))
    assert W.shape[1] == 3 and (torch.einsum("nd,kdp->nkp", noiseless, U)[:5, 1:].abs().max() < 1e-12)


# ---------------------------------------------------------------------------------------------
# (a) the exact score against autograd; the closed forms of the likelihoods
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("orthonormal", [True, False])
def test_score_is_the_gradient_of_the_log_density(orthonormal):
    X, _, _, U = _setup(seed=4, sigma=0.5)
    if not orthonormal:  # Tweedie holds for any U: scale and shear the bases
        U = U * torch.tensor([1.7, 0.6], dtype=F64) + 0.2
    Xg = X.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(dn.log_density(Xg, U, 0.5).sum(), Xg)
    torch.testing.assert_close(dn.score(X, U, 0.5), grad, rtol=1e-10, atol=1e-12)


def test_component_log_likelihoods_equal_the_dense_gaussian():
    X, _, _, U = _setup(seed=5, sigma=0.7)
    U = U * 1.3  # not orthonormal: the Woodbury and determinant-lemma forms must still be exact
    dense = torch.stack(
        [
            torch.distributions.MultivariateNormal(
                torch.zeros(6, dtype=F64), U[k] @ U[k].T + 0.49 * torch.eye(6, dtype=F64)
            ).log_prob(X)
            for k in range(3)
        ],
        dim=-1,
    )  # (N, K)
    torch.testing.assert_close(dn.component_log_likelihoods(X, U, 0.7), dense, rtol=1e-12, atol=1e-10)
    pi = dn.posterior_membership(X, U, 0.7)
    torch.testing.assert_close(pi.sum(-1), torch.ones(40, dtype=F64), rtol=0, atol=1e-12)
    torch.testing.assert_close(
        dn.log_density(X, U, 0.7), torch.logsumexp(dense, -1) - math.log(3), rtol=1e-12, atol=1e-10
    )


# ---------------------------------------------------------------------------------------------
# (b) the posterior mean against Monte Carlo and against the one-Gaussian closed form
# ---------------------------------------------------------------------------------------------


def test_posterior_mean_matches_monte_carlo():
    """E[z | x] by self-normalised importance sampling from the prior: z ~ mixture, weight p(x | z)."""
    g = torch.Generator().manual_seed(6)
    U, _ = torch.linalg.qr(torch.randn(2, 3, 1, generator=g, dtype=F64))  # two lines in R^3
    sigma = 0.6
    x = torch.tensor([[0.9, -0.4, 0.3], [0.1, 0.8, -0.5]], dtype=F64)  # (2, 3)
    _, z, _ = dn.sample_mixture(400_000, U, 0.0, g)  # prior samples (M, 3)
    logw = -((x[:, None, :] - z[None]) ** 2).sum(-1) / (2 * sigma**2)  # log p(x | z) + const  (2, M)
    w = torch.softmax(logw, dim=-1)
    mc = w @ z  # (2, 3)
    exact = dn.posterior_mean(x, U, sigma)
    assert (mc - exact).abs().max().item() < 0.01, (mc, exact)
    # not a trivial agreement: the posterior mixes both lines, so it is far (≫ 0.01) from either
    # component's own posterior mean U_k U_k^T x/(1 + σ²)
    for k in range(2):
        one = x @ U[k] @ U[k].T / (1 + sigma**2)
        assert (one - exact).abs().max().item() > 0.05


def test_posterior_mean_of_one_gaussian_is_linear_regression():
    X, _, _, U = _setup(seed=7, K=1, p=3, sigma=0.5)
    Sigma = U[0] @ U[0].T + 0.25 * torch.eye(6, dtype=F64)
    expected = X @ torch.linalg.solve(Sigma, U[0] @ U[0].T)  # (U U^T Σ^{-1} x)^T, Σ symmetric
    torch.testing.assert_close(dn.posterior_mean(X, U, 0.5), expected, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(dn.score_step(X, U, 0.5, kappa=1.0), expected, rtol=1e-12, atol=1e-12)
    half = dn.score_step(X, U, 0.5, kappa=0.5)
    torch.testing.assert_close(half, 0.5 * X + 0.5 * expected, rtol=1e-12, atol=1e-12)


# ---------------------------------------------------------------------------------------------
# (c) the MSSA forms against the exact step
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("overlap", [0.0, 0.5])
def test_subspace_form_is_exact_for_orthonormal_bases(overlap):
    """Link 2: softmax across heads at τ_σ = 1/(2σ²(1+σ²)) is the posterior, overlap or not."""
    X, _, _, U = _setup(seed=8, d=12, K=3, p=3, sigma=0.45, overlap=overlap)
    torch.testing.assert_close(
        dn.subspace_membership(X, U, 0.45), dn.posterior_membership(X, U, 0.45), rtol=0, atol=1e-12
    )
    torch.testing.assert_close(
        dn.subspace_denoiser(X, U, 0.45), dn.posterior_mean(X, U, 0.45), rtol=0, atol=1e-12
    )
    torch.testing.assert_close(
        dn.mssa_score_step(X, U, 0.45, kappa=0.3, form="subspace"),
        dn.score_step(X, U, 0.45, kappa=0.3),
        rtol=0,
        atol=1e-12,
    )
    assert dn.membership_temperature(0.45) == pytest.approx(1 / (2 * 0.45**2 * (1 + 0.45**2)))


def test_subspace_form_breaks_without_orthonormal_columns():
    X, _, _, U = _setup(seed=9, sigma=0.3)
    scaled = U * torch.tensor([2.0, 0.5], dtype=F64)  # same subspaces, non-orthonormal columns
    err = _rel(dn.subspace_denoiser(X, scaled, 0.3), dn.posterior_mean(X, scaled, 0.3))
    assert err > 0.5  # measured 2.4: the closed-form temperature and shrinkage no longer apply


def test_token_form_is_crate_mssa_without_gamma():
    X, _, _, U = _setup(seed=10, d=12, K=3, p=4, n=30, sigma=0.2)
    gamma = 4 / (30 * 0.5**2)
    expected = cr.mssa(X, U, 0.5, tau=0.7) / gamma / (1 + 0.2**2)
    torch.testing.assert_close(dn.token_mssa_denoiser(X, U, 0.2, tau=0.7), expected, rtol=1e-12, atol=1e-12)


def test_token_form_approximates_the_score_step_where_the_assumptions_hold():
    """Link 3: orthogonal subspaces, σ = 0.01, p = 32 (p/2 = 16 ≫ log N_k ≈ 4.9), N = 512, τ = 1.

    Tolerance: relative error ≤ 0.06 (measured 0.043, set by the foreign heads' means ~ 1/√N);
    the same tokens at σ = 0.5 are off by ~ 1 (the approximation has broken)."""
    g = torch.Generator().manual_seed(11)
    U = dn.overlapping_subspaces(160, 4, 32, 0.0, g, dtype=F64)
    X, _, _ = dn.sample_mixture(512, U, 0.01, g)
    step = dn.mssa_score_step(X, U, 0.01, kappa=0.5, form="tokens")
    exact = dn.score_step(X, U, 0.01, kappa=0.5)
    assert _rel(step - 0.5 * X, exact - 0.5 * X) < 0.06  # the attention part of the step
    assert dn.denoiser_error(X, U, 0.01, form="tokens").item() < 0.06
    Xn, _, _ = dn.sample_mixture(512, U, 0.5, g)
    assert dn.denoiser_error(Xn, U, 0.5, form="tokens").item() > 0.5


# ---------------------------------------------------------------------------------------------
# (d) where the approximation breaks, measured
# ---------------------------------------------------------------------------------------------


def test_error_against_sigma_is_small_then_grows_past_a_threshold():
    curve = dn.approximation_curve("sigma", [0.01, 0.05, 0.3, 0.5], n=256, trials=1)
    e = curve["error"]
    assert curve["values"] == [0.01, 0.05, 0.3, 0.5] and len(curve["std"]) == 4
    assert e[0] < 0.08 and e[1] < 0.1  # small below σ ≈ 0.1 (measured 0.056, 0.064 at N = 256)
    assert e[2] > 3 * e[0] and e[3] > e[2] > 0.3  # grows past it (measured 0.49, 0.93)


def test_error_against_overlap_grows():
    e = dn.approximation_curve("overlap", [0.0, 0.2, 0.6], n=256, trials=1)["error"]
    assert e[0] < 0.1 < e[1] < e[2] and e[2] > 1.0  # measured ≈ 0.09, 0.29, 1.5


def test_error_against_tokens_falls_with_many_tokens():
    e = dn.approximation_curve("tokens", [8, 64, 512], trials=2)["error"]
    assert e[0] > 0.25 and e[2] < 0.1 and e[0] > e[1] > e[2]  # measured ≈ 0.33, 0.15, 0.08


def test_subspace_form_curve_is_flat_at_round_off():
    e = dn.approximation_curve("overlap", [0.0, 0.6], form="subspace", n=64, trials=1)["error"]
    assert max(e) < 1e-12


# ---------------------------------------------------------------------------------------------
# bad input: one line naming the problem
# ---------------------------------------------------------------------------------------------


def test_bad_input_is_named():
    X, _, _, U = _setup()
    with pytest.raises(ValueError, match="sigma"):
        dn.posterior_mean(X, U, 0.0)
    with pytest.raises(ValueError, match="shape \\(K, d, p\\)"):
        dn.score(X, U[0], 0.5)
    with pytest.raises(ValueError, match="ambient dimension"):
        dn.score(X[:, :5], U, 0.5)
    with pytest.raises(ValueError, match="tokens as rows"):
        dn.score(X[0], U, 0.5)
    with pytest.raises(ValueError, match="form must be"):
        dn.mssa_score_step(X, U, 0.5, form="heads")
    with pytest.raises(ValueError, match="vary must be"):
        dn.approximation_curve("depth", [1])
    with pytest.raises(ValueError, match="empty"):
        dn.approximation_curve("sigma", [])
