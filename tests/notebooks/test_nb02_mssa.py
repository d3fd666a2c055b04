"""The steps notebook 02 (MSSA from gradients) shows that tests/unit/test_coding_rate.py and
tests/unit/models/ do not already cover, on the notebook's own data.

Data: 4 orthogonal 8-dim subspaces of R^32, 25 tokens each, 10 % noise, tokens rescaled to unit
norm; ε = 0.5 (γ = p/(Nε²) = 0.32), κγ = 0.16. Measured values are quoted in the docstrings.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from einops import rearrange

from crate_edu import coding_rate as cr
from crate_edu.models import MSSA, Attention

F64 = torch.float64
K, D, P, N_PER = 4, 32, 8, 25
EPS = 0.5


@pytest.fixture(scope="module")
def data():
    Z, labels, U = cr.union_of_subspaces(N_PER, K, D, P, 0.1, torch.Generator().manual_seed(0), dtype=F64)
    Z = Z / Z.norm(dim=-1, keepdim=True)
    return Z, labels, U


def _gamma(N: int, eps: float = EPS) -> float:
    return P / (N * eps**2)


# ---------------------------------------------------------------------------------------------
# Neumann series (§4)
# ---------------------------------------------------------------------------------------------


def test_neumann_remainder_identity(data):
    Z, _, U = data
    N = Z.shape[0]
    g = _gamma(N)
    W = Z @ U[0]
    A = W @ W.T
    eye = torch.eye(N, dtype=F64)
    inv = torch.linalg.inv(eye + g * A)
    torch.testing.assert_close(inv, eye - g * A + g**2 * A @ A @ inv, rtol=0, atol=1e-12)


def test_neumann_error_on_unit_norm_tokens(data):
    """Measured: ε = 0.5: t = 2.47, error 183 %; ε = 1: 13.8 %; ε = 2: 0.95 %; ε = 4: 0.06 %."""
    Z, _, U = data
    N = Z.shape[0]
    errs = {}
    for e in np.geomspace(0.2, 10.0, 15).tolist() + [0.5, 1.0, 2.0]:
        g = _gamma(N, e)
        t = (g * torch.linalg.matrix_norm(Z.unsqueeze(0) @ U, ord=2).pow(2)).max().item()
        exact = cr.grad_compression_rate(Z, U, e)
        err = ((cr.grad_compression_rate_neumann(Z, U, e) - exact).norm() / exact.norm()).item()
        assert err <= t**2
        errs[e] = err
    assert errs[0.5] > 1.0
    assert errs[1.0] > 0.1
    assert errs[2.0] < 0.02


# ---------------------------------------------------------------------------------------------
# from the Neumann step to MSSA (§5)
# ---------------------------------------------------------------------------------------------


def test_incomplete_subspaces_add_shrinkage_outside_them(data):
    """With Σ U_k U_k^T = P ≠ I the gram-membership MSSA step is the Neumann step − κγ (I − P) Z."""
    Z, _, U = data
    U3 = U[:3]
    kappa = 0.5
    g = _gamma(Z.shape[0])
    P3 = torch.einsum("kdp,kep->de", U3, U3)
    diff = cr.mssa_step(Z, U3, EPS, kappa, membership="gram") - (
        Z - kappa * cr.grad_compression_rate_neumann(Z, U3, EPS)
    )
    torch.testing.assert_close(diff, -kappa * g * Z @ (torch.eye(D, dtype=F64) - P3), rtol=0, atol=1e-12)
    assert diff.abs().max() > 1e-3  # the difference is real, not round-off


# ---------------------------------------------------------------------------------------------
# the softmax membership (§6)
# ---------------------------------------------------------------------------------------------


def test_membership_block_structure_depends_on_scale(data):
    """Measured: unit norm, τ = 1: entropy 4.599 (log N = 4.605), own-class mass 0.27; norm √d,
    τ = 1/√p: entropy 3.512, own-class mass 0.999, self-weight 0.92–0.97."""
    Z, labels, U = data
    N = Z.shape[0]
    A_unit = cr.softmax_membership(Z, U, 1.0)
    A_ln = cr.softmax_membership(math.sqrt(D) * Z, U, P**-0.5)
    torch.testing.assert_close(A_ln.sum(-1), torch.ones(K, N, dtype=F64), rtol=0, atol=1e-12)
    assert cr.membership_entropy(A_unit) > math.log(N) - 0.01
    for k in range(K):
        rows = labels == k
        assert A_ln[k][rows][:, rows].sum(-1).mean() > 0.99
        assert A_ln[k].diagonal()[rows].mean() > 0.9
        assert A_unit[k][rows][:, rows].sum(-1).mean() < 0.3


# ---------------------------------------------------------------------------------------------
# MSSA is self-attention (§7)
# ---------------------------------------------------------------------------------------------


def _tied_modules(U, gamma):
    U_stack_T = U.transpose(1, 2).reshape(K * P, D)
    U_cat = U.permute(1, 0, 2).reshape(D, K * P)
    block = MSSA(D, heads=K, dim_head=P).double().eval()
    vit = Attention(D, heads=K, dim_head=P).double().eval()
    with torch.no_grad():
        block.qkv.weight.copy_(U_stack_T)
        block.to_out[0].weight.copy_(gamma * U_cat)
        block.to_out[0].bias.zero_()
        vit.to_qkv.weight.copy_(torch.cat([U_stack_T] * 3))
        vit.to_out[0].weight.copy_(gamma * U_cat)
        vit.to_out[0].bias.zero_()
    block.scale = 1.0
    vit.scale = 1.0
    return block, vit


def test_tied_mssa_block_and_vit_head_compute_eq_12(data):
    Z, _, U = data
    g = _gamma(Z.shape[0])
    block, vit = _tied_modules(U, g)
    x = Z.unsqueeze(0)
    expected = cr.mssa(Z, U, EPS)
    with torch.no_grad():
        w = block.forward_parts(x).proj
        sdpa = F.scaled_dot_product_attention(w, w, w, scale=1.0)
        torch.testing.assert_close(sdpa[0], torch.stack([cr.ssa(Z, U_k) for U_k in U]), rtol=0, atol=1e-12)
        torch.testing.assert_close(block(x)[0], expected, rtol=0, atol=1e-12)
        block.reference = True
        torch.testing.assert_close(block(x)[0], expected, rtol=0, atol=1e-12)
        torch.testing.assert_close(vit(x)[0], expected, rtol=0, atol=1e-12)
        # the temperature matters: the official scale 1/sqrt(p) gives a different output
        block.scale = P**-0.5
        assert (block(x)[0] - expected).abs().max() > 1e-4


@pytest.mark.parametrize("dim,heads,dim_head", [(32, 4, 8), (768, 12, 64)])
def test_parameter_counts_one_projection_vs_three(dim, heads, dim_head):
    m, v = MSSA(dim, heads, dim_head), Attention(dim, heads, dim_head)
    inner = heads * dim_head
    assert m.qkv.weight.numel() == inner * dim
    assert v.to_qkv.weight.numel() == 3 * inner * dim
    n_m = sum(t.numel() for t in m.parameters())
    n_v = sum(t.numel() for t in v.parameters())
    assert n_m == 2 * inner * dim + dim
    assert n_v - n_m == 2 * inner * dim


# ---------------------------------------------------------------------------------------------
# the official code's choices, measured (§8)
# ---------------------------------------------------------------------------------------------


def test_output_map_direction_against_descent(data):
    """Measured: cos(tied MSSA term, −∇R^c) = −0.447; untrained to_out: +0.007 ± 0.018."""
    Z, _, U = data
    g = _gamma(Z.shape[0])
    descent = -cr.grad_compression_rate(Z, U, EPS)
    assert cr.cosine(cr.mssa(Z, U, EPS), descent) < -0.3
    assert cr.cosine(-Z, descent) > 0.9
    ssa_cat = torch.cat([cr.ssa(Z, U_k) for U_k in U], dim=-1)
    torch.testing.assert_close(
        ssa_cat @ (g * U.permute(1, 0, 2).reshape(D, K * P)).T, cr.mssa(Z, U, EPS), rtol=0, atol=1e-12
    )
    gen = torch.Generator().manual_seed(2)
    bound = 1 / math.sqrt(K * P)
    for _ in range(20):
        W_out = (2 * torch.rand(D, K * P, generator=gen, dtype=F64) - 1) * bound
        b_out = (2 * torch.rand(D, generator=gen, dtype=F64) - 1) * bound
        assert abs(cr.cosine(ssa_cat @ W_out.T + b_out, descent)) < 0.1


def test_temperature_flattens_and_attention_pushes_rc_up(data):
    """Measured attention share (nats): unit norm τ = 1: +0.040, τ = 1/√p: +0.017;
    norm √d: +1.788, +1.735."""
    Z, _, U = data
    kappa = 0.5
    g = _gamma(Z.shape[0])
    for ZZ in (Z, math.sqrt(D) * Z):
        R_shrunk = cr.compression_rate((1 - kappa * g) * ZZ, U, EPS)
        share = {}
        for tau in (1.0, P**-0.5):
            share[tau] = (
                cr.compression_rate(cr.mssa_step(ZZ, U, EPS, kappa, tau=tau), U, EPS) - R_shrunk
            ).item()
            assert share[tau] > 0
        assert share[P**-0.5] < share[1.0]
        entropy = {tau: cr.membership_entropy(cr.softmax_membership(ZZ, U, tau)) for tau in (1.0, P**-0.5)}
        assert entropy[P**-0.5] > entropy[1.0]


def test_residual_coefficient_one_raises_rc(data):
    """Measured ΔR^c (κγ = 0.16): derived −2.328, coefficient 1 +0.040 nats."""
    Z, _, U = data
    g = _gamma(Z.shape[0])
    R0 = cr.compression_rate(Z, U, EPS)
    for kg in (0.05, 0.16, 0.5, 1.0):
        kappa = kg / g
        assert cr.compression_rate(cr.mssa_step(Z, U, EPS, kappa), U, EPS) < R0
        assert cr.compression_rate(cr.mssa_step(Z, U, EPS, kappa, residual=1.0), U, EPS) > R0


# ---------------------------------------------------------------------------------------------
# a derived MSSA step compresses, mostly by shrinking (§9)
# ---------------------------------------------------------------------------------------------


def test_mssa_step_compresses_for_every_kappa_gamma_up_to_one(data):
    Z, _, U = data
    g = _gamma(Z.shape[0])
    R0 = cr.compression_rate(Z, U, EPS)
    for kg in np.linspace(0.05, 1.0, 8):
        assert cr.compression_rate(cr.mssa_step(Z, U, EPS, kg / g), U, EPS) < R0


def test_iterated_steps_shrinkage_carries_the_descent(data):
    """8 steps, κγ = 0.16. Measured R^c (start 10.527): exact 2.873, MSSA 0.975, shrinkage 0.946,
    coefficient 1 10.878; unit-normalised: exact 9.847, MSSA 10.519, shrinkage 10.527."""
    Z, _, U = data
    kappa = 0.5
    g = _gamma(Z.shape[0])

    def unit(X):
        return X / X.norm(dim=-1, keepdim=True)

    updates = {
        "exact": lambda X: cr.gram_step(X, U, EPS, kappa),
        "mssa": lambda X: cr.mssa_step(X, U, EPS, kappa),
        "shrink": lambda X: (1 - kappa * g) * X,
        "res1": lambda X: cr.mssa_step(X, U, EPS, kappa, residual=1.0),
    }
    R0 = cr.compression_rate(Z, U, EPS).item()
    traj, traj_unit = {}, {}
    for name, f in updates.items():
        X, r, ru = Z.clone(), [R0], [R0]
        for _ in range(8):
            X = f(X)
            r.append(cr.compression_rate(X, U, EPS).item())
            ru.append(cr.compression_rate(unit(X), U, EPS).item())
        traj[name], traj_unit[name] = np.array(r), np.array(ru)
    assert np.all(np.diff(traj["mssa"]) < 0)
    assert np.all(traj["shrink"][1:] < traj["mssa"][1:])
    assert np.all(np.diff(traj["res1"]) > 0)
    assert abs(traj_unit["shrink"][-1] - R0) < 1e-10  # pure scaling is invisible after normalising
    assert traj_unit["exact"][-1] < R0 - 0.5
    assert abs(traj_unit["mssa"][-1] - R0) < 0.05
    # one step: shrinkage alone lowers R^c more than the full derived step
    R_shrink = cr.compression_rate(updates["shrink"](Z), U, EPS).item()
    R_mssa = cr.compression_rate(updates["mssa"](Z), U, EPS).item()
    assert R_shrink < R_mssa < R0


def test_rearranged_sdpa_output_is_the_concatenated_ssa(data):
    """The notebook reuses the attention output as [SSA_1, …, SSA_K] in rows."""
    Z, _, U = data
    block, _ = _tied_modules(U, _gamma(Z.shape[0]))
    with torch.no_grad():
        w = block.forward_parts(Z.unsqueeze(0)).proj
        out = rearrange(F.scaled_dot_product_attention(w, w, w, scale=1.0), "1 h n p -> n (h p)")
    torch.testing.assert_close(out, torch.cat([cr.ssa(Z, U_k) for U_k in U], dim=-1), rtol=0, atol=1e-12)


def test_shared_qkv_backward_formula_and_its_five_products():
    """Section 7b: with q = k = v = W, dW = P^T G + s (dS + dS^T) W, dS = P ∘ (G W^T − rowsum(G∘O));
    equal to autograd through the explicit formula (< 1e-12 in float64), and the package's kernel
    spends exactly five N × N × p products on forward + backward (FLOP counter), where the same
    attention with three separate inputs, probabilities kept as well, spends six."""
    from torch.utils.flop_counter import FlopCounterMode

    from crate_edu.models import shared_qkv_attention

    g_rng = torch.Generator().manual_seed(1)
    B, n, s = 2, 20, P**-0.5
    w = torch.randn(B, K, n, P, dtype=F64, generator=g_rng).requires_grad_(True)
    g = torch.randn(B, K, n, P, dtype=F64, generator=g_rng)
    probs = torch.softmax(s * w @ w.transpose(-1, -2), dim=-1)
    out = probs @ w
    (out * g).sum().backward()
    with torch.no_grad():
        dP = g @ w.transpose(-1, -2)
        torch.testing.assert_close((dP * probs).sum(-1), (g * out).sum(-1), atol=1e-12, rtol=0)
        dS = probs * (dP - (g * out).sum(-1, keepdim=True))
        dW = probs.transpose(-1, -2) @ g + s * (dS + dS.transpose(-1, -2)) @ w
    torch.testing.assert_close(dW, w.grad, atol=1e-12, rtol=0)
    # dropping either half of dS + dS^T (w as the queries, or as the keys) gives a wrong gradient
    assert (probs.transpose(-1, -2) @ g + s * dS @ w - w.grad).abs().max() > 1e-3

    w2 = w.detach().clone().requires_grad_(True)
    with FlopCounterMode(display=False) as counter:
        out2 = shared_qkv_attention(w2, s)
        (out2 * g).sum().backward()
    torch.testing.assert_close(out2, out.detach(), atol=1e-12, rtol=0)
    torch.testing.assert_close(w2.grad, w.grad, atol=1e-12, rtol=0)
    assert counter.get_total_flops() == 5 * 2 * B * K * n * n * P

    q, k, v = (w.detach().clone().requires_grad_(True) for _ in range(3))
    with FlopCounterMode(display=False) as counter3:
        out3 = torch.softmax(s * q @ k.transpose(-1, -2), dim=-1) @ v
        (out3 * g).sum().backward()
    torch.testing.assert_close(q.grad + k.grad + v.grad, w.grad, atol=1e-12, rtol=0)  # the same sum
    assert counter3.get_total_flops() == 6 * 2 * B * K * n * n * P
