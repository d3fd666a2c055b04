"""The steps notebook 03 (ISTA and sparse coding) shows that tests/unit/test_coding_rate.py and
tests/unit/models/ do not already cover: the proximal map against brute force, the ½ convention,
the step-size results, one step vs convergence, the LASSO path, the non-negative cone, complete vs
overcomplete dictionaries, and the residual's effect through depth."""

import math
from itertools import pairwise

import pytest
import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits

import crate_edu.coding_rate as cr
from crate_edu.models import ISTA, OvercompleteISTA, PreNorm

F64 = torch.float64


def _ground_truth(N=300, d=32, k=3, seed=0):
    """The notebook's problem: X = A* D*^T + 0.01 G, D* with unit-norm atoms, A* ≥ 0 k-sparse."""
    g = torch.Generator().manual_seed(seed)
    D = torch.randn(d, d, generator=g, dtype=F64)
    D = D / D.norm(dim=0, keepdim=True)
    A = torch.zeros(N, d, dtype=F64)
    support = torch.rand(N, d, generator=g).argsort(-1)[:, :k]
    A.scatter_(1, support, 0.5 + torch.rand(N, k, generator=g, dtype=F64))
    X = A @ D.T + 0.01 * torch.randn(N, d, generator=g, dtype=F64)
    return X, D, A


def _digit_patches(n_img=120):
    digits = torch.tensor(load_digits().images, dtype=F64)
    patches = digits[:n_img].unfold(1, 4, 2).unfold(2, 4, 2).reshape(-1, 16)
    patches = patches[patches.std(dim=1) > 1.0]
    return (patches - patches.mean(1, keepdim=True)) / patches.std(1, keepdim=True, unbiased=False)


@pytest.mark.parametrize("t", [0.05, 0.3, 1.0])
def test_nonneg_prox_is_the_brute_force_minimiser(t):
    v = torch.linspace(-2.0, 2.0, 81, dtype=F64)
    z = torch.linspace(0.0, 3.0, 30_001, dtype=F64)  # spacing 1e-4
    objective = t * z[None, :] + 0.5 * (z[None, :] - v[:, None]) ** 2
    brute = z[objective.argmin(dim=1)]
    assert (cr.soft_threshold_nonneg(v, t) - brute).abs().max().item() <= 1e-4
    # and it is not the two-sided soft threshold, which differs for v < −t
    two_sided = torch.sign(v) * F.relu(v.abs() - t)
    assert (two_sided - brute)[v < -t - 1e-3].abs().min().item() > 1e-4


def test_half_convention_rescales_lambda_and_the_step():
    X, D, _ = _ground_truth(N=50)
    g = torch.Generator().manual_seed(1)
    Z = torch.rand(50, D.shape[1], generator=g, dtype=F64)
    eta, lam = 0.1, 0.1
    # gradient of the ½ fit term in closed form vs autograd
    Zg = Z.clone().requires_grad_(True)
    (0.5 * (X - Zg @ D.T).pow(2).sum()).backward()
    torch.testing.assert_close(-(X - Z @ D.T) @ D, Zg.grad, rtol=0, atol=1e-10)
    # the paper's objective (no ½): a step of η/2 with penalty 2λ is the ISTA update with (η, λ)
    grad_paper = -2 * (X - Z @ D.T) @ D
    paper_step = F.relu(Z - (eta / 2) * grad_paper - (eta / 2) * (2 * lam))
    torch.testing.assert_close(paper_step, cr.ista_step(Z, X, D, eta, lam), rtol=0, atol=1e-12)
    wrong = F.relu(Z - (eta / 2) * grad_paper - (eta / 2) * lam)
    assert (wrong - cr.ista_step(Z, X, D, eta, lam)).abs().max().item() > 1e-3


def test_sufficient_decrease_and_the_one_over_t_rate():
    X, D, _ = _ground_truth()
    L = 1.0 / cr.max_step_size(D).item()
    lam = 0.1
    Z_star, hist = cr.ista_solve(X, D, 1.0 / L, lam, steps=1500, return_history=True)
    F_star = hist[-1].item()
    for c in (1.0, 1.9):  # F(Z⁺) ≤ F(Z) − (1/η − L/2)‖Z⁺ − Z‖² for η < 2/L
        Z = torch.zeros_like(Z_star)
        for _ in range(100):
            Zn = cr.ista_step(Z, X, D, c / L, lam)
            drop = cr.lasso_objective(Z, X, D, lam) - cr.lasso_objective(Zn, X, D, lam)
            assert drop >= (L / c - L / 2) * (Zn - Z).pow(2).sum() - 1e-9
            Z = Zn
    t = torch.arange(1, 201, dtype=F64)
    bound = Z_star.pow(2).sum() / (2 * t / L)  # ‖Z0 − Z*‖² / (2ηt), Z0 = 0, η = 1/L
    assert ((hist[1:201] - F_star) <= bound).all()


def test_too_large_a_step_diverges():
    X, D, _ = _ground_truth()
    L = 1.0 / cr.max_step_size(D).item()
    lam = 0.1
    F_star = cr.ista_solve(X, D, 1.0 / L, lam, steps=1500, return_history=True)[1][-1].item()
    for c in (0.5, 1.0, 2.0, 2.5):  # converges (on this problem even beyond 2/L), monotonically
        hist = cr.ista_solve(X, D, c / L, lam, steps=120, return_history=True)[1]
        assert hist[-1].item() - F_star < 1e-3
        assert (hist[1:] <= hist[:-1] + 1e-9).all()
    hist = cr.ista_solve(X, D, 3.0 / L, lam, steps=120, return_history=True)[1]
    assert hist[-1].item() > 1e6 * hist[0].item()


def test_crate_block_is_one_warm_started_ista_step():
    torch.manual_seed(0)
    block = ISTA(32, eta=0.1, lambd=0.1).double()
    x = torch.randn(2, 40, 32, dtype=F64)
    D = block.weight.detach()
    with torch.no_grad():
        out = block(x)
    torch.testing.assert_close(out, cr.ista_step(x, x, D, 0.1, 0.1), rtol=0, atol=1e-12)
    reference = ISTA(32, eta=0.1, lambd=0.1, reference=True).double()
    reference.load_state_dict(block.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(out, reference(x), rtol=0, atol=1e-12)


@pytest.mark.parametrize("width", [384, 768])
def test_official_eta_is_a_safe_step_at_initialisation(width):
    """Kaiming-uniform d×d: entries of variance 2/d, ‖D‖₂ ≈ 2√2, 1/‖D‖₂² ≈ 0.125 > η = 0.1."""
    torch.manual_seed(0)
    eta_max = cr.max_step_size(ISTA(width).weight.detach().double()).item()
    assert 0.1 < eta_max < 0.15
    eta_max_oc = cr.max_step_size(OvercompleteISTA(width // 8).D.detach().double()).item()
    assert 0.1 < eta_max_oc


def test_one_crate_step_is_far_from_the_lasso_solution():
    X, D, A = _ground_truth()
    L = 1.0 / cr.max_step_size(D).item()
    Z_star = cr.ista_solve(X, D, 1.0 / L, 0.1, steps=1500)
    one = cr.ista_step(X, X, D, 0.1, 0.1)
    nnz_one, nnz_star = cr.fraction_nonzero(one).item(), cr.fraction_nonzero(Z_star).item()
    assert nnz_one > 3 * nnz_star  # measured 0.497 vs 0.095
    assert cr.reconstruction_error(X, one, D) > 5 * cr.reconstruction_error(
        X, Z_star, D
    )  # measured 0.989 vs 0.102
    assert ((Z_star - A).norm() / A.norm()).item() < 0.15  # measured 0.105
    # optimality of Z*: D^T(X − DZ*) = λ on the support, ≤ λ off it
    g = (X - Z_star @ D.T) @ D
    assert torch.where(Z_star > 0, (g - 0.1).abs(), F.relu(g - 0.1)).max().item() < 1e-6


def test_lasso_path_l1_falls_and_fit_error_grows_with_lambda():
    X, D, _ = _ground_truth(N=150)
    eta = cr.max_step_size(D).item()
    l1, fit = [], []
    for lam in torch.logspace(-2.5, 0, 8).tolist():
        Z = cr.ista_solve(X, D, eta, lam, steps=600)
        l1.append(cr.l1_norm(Z).item())
        fit.append((X - Z @ D.T).norm().item())
    assert all(b <= a + 1e-6 for a, b in pairwise(l1))
    assert all(b >= a - 1e-6 for a, b in pairwise(fit))
    assert l1[-1] < 0.5 * l1[0] and fit[-1] > 5 * fit[0]


def test_complete_nonneg_cone_holds_two_to_the_minus_d_of_directions():
    g = torch.Generator().manual_seed(1)
    d, trials = 4, 20_000
    D = torch.randn(trials, d, d, generator=g, dtype=F64)
    x = torch.randn(trials, d, 1, generator=g, dtype=F64)
    frac = (torch.linalg.solve(D, x) >= 0).all(dim=1).to(F64).mean().item()
    se = math.sqrt(2**-d * (1 - 2**-d) / trials)
    assert abs(frac - 2**-d) < 4 * se


def test_overcomplete_random_dictionary_fits_digit_patches_better():
    X = _digit_patches()
    g = torch.Generator().manual_seed(2)
    d = X.shape[1]
    complete = torch.randn(d, d, generator=g, dtype=F64)
    over = torch.randn(d, 4 * d, generator=g, dtype=F64)
    complete, over = complete / complete.norm(dim=0), over / over.norm(dim=0)
    for lam in (0.01, 0.1, 1.0):
        errs = []
        for D in (complete, over):
            Z = cr.ista_solve(X, D, cr.max_step_size(D).item(), lam, steps=300)
            errs.append(cr.reconstruction_error(X, Z, D))
        assert errs[1] < errs[0], (lam, errs)
    assert errs[0] > 0.5  # the complete cone cannot fit most patches (measured ≈ 0.74 at λ ≤ 0.1)


def test_overcomplete_block_is_two_ista_steps_from_zero_then_D1():
    torch.manual_seed(0)
    block = OvercompleteISTA(16, overcomplete_ratio=4, eta=0.1, lambd=0.1).double()
    x = torch.randn(1, 30, 16, dtype=F64)
    D, D1 = block.D.detach(), block.D1.detach()
    a1 = cr.ista_step(torch.zeros(1, 30, 64, dtype=F64), x, D, 0.1, 0.1)
    torch.testing.assert_close(a1, F.relu(0.1 * x @ D - 0.01), rtol=0, atol=1e-12)
    a2 = cr.ista_step(a1, x, D, 0.1, 0.1)
    with torch.no_grad():
        torch.testing.assert_close(block.forward_parts(x).codes, a2, rtol=0, atol=1e-12)
        torch.testing.assert_close(block(x), a2 @ D1.T, rtol=0, atol=1e-12)


def test_residual_stack_keeps_the_input_readable_and_crate_stack_loses_it():
    digits = torch.tensor(load_digits().images, dtype=F64).reshape(-1, 64)
    X = (digits - digits.mean(1, keepdim=True)) / digits.std(1, keepdim=True, unbiased=False)
    X = X[torch.randperm(X.shape[0], generator=torch.Generator().manual_seed(3))]
    n_fit = 1200

    def r2(Z):
        Z1 = torch.cat([Z, torch.ones(Z.shape[0], 1, dtype=F64)], dim=1)
        W = torch.linalg.lstsq(Z1[:n_fit], X[:n_fit], driver="gelsd").solution  # rank-deficient: SVD
        res = X[n_fit:] - Z1[n_fit:] @ W
        return 1.0 - (res.pow(2).sum() / (X[n_fit:] - X[:n_fit].mean(0)).pow(2).sum()).item()

    torch.manual_seed(0)
    crate = [PreNorm(64, ISTA(64)).double() for _ in range(8)]
    alpha = [PreNorm(64, OvercompleteISTA(64), eps=1e-6).double() for _ in range(8)]
    zc, za, r2c = X, X, []
    with torch.no_grad():
        for bc, ba in zip(crate, alpha, strict=True):
            zc, za = bc(zc), za + ba(za)
            r2c.append(r2(zc))
    assert r2(za) > 0.95  # measured 0.992
    assert r2c[-1] < 0.7  # measured 0.611
    assert all(b < a for a, b in pairwise(r2c))  # CRATE loses information at every layer
