"""crate_edu.models.crate: MSSA, ISTA and the CRATE layer compute their equations, on both paths."""

import pytest
import torch
import torch.nn.functional as F

from crate_edu.models import ISTA, MSSA, CRATELayer
from tests.unit.models.twins import ATOL, assert_same_forward_and_grads, twins


# ------------------------------------------------------------------------------------------- MSSA
@pytest.mark.parametrize("kernel", ["auto", "sdpa", "shared_qkv"])
@pytest.mark.parametrize("heads,dim_head", [(4, 16), (6, 8), (1, 32)])
def test_mssa_fast_equals_reference(heads, dim_head, kernel):
    fast, reference = twins(lambda ref: MSSA(32, heads, dim_head, reference=ref, kernel=kernel))
    assert_same_forward_and_grads(fast, reference, torch.randn(3, 17, 32))


def test_mssa_identity_output_when_one_full_head():
    # As officially: with one head of the full width there is nothing to map back.
    assert isinstance(MSSA(32, heads=1, dim_head=32).to_out, torch.nn.Identity)


def test_mssa_parts_are_what_the_output_uses():
    torch.manual_seed(0)
    block = MSSA(32, heads=4, dim_head=8).eval()
    x = torch.randn(2, 10, 32)
    w, attn, out = block.forward_parts(x)
    assert w.shape == (2, 4, 10, 8) and attn.shape == (2, 4, 10, 10)
    torch.testing.assert_close(attn.sum(-1), torch.ones(2, 4, 10))
    torch.testing.assert_close(w, block.qkv(x).view(2, 10, 4, 8).transpose(1, 2))  # U_k^T z per head
    manual = block.to_out((attn @ w).transpose(1, 2).reshape(2, 10, 32))
    torch.testing.assert_close(out, manual)
    torch.testing.assert_close(out, block(x), atol=ATOL, rtol=1e-5)
    # q = k = v: the scores are symmetric, so before the softmax the map is w w^T / sqrt(p)
    scores = w @ w.transpose(-1, -2) / 8**0.5
    torch.testing.assert_close(attn, scores.softmax(-1))


# ------------------------------------------------------------------------------------------- ISTA
@pytest.mark.parametrize("tokens", [9, 120], ids=["two-matmul path", "folded path"])
def test_ista_fast_equals_reference(tokens):
    fast, reference = twins(lambda ref: ISTA(48, eta=0.1, lambd=0.1, reference=ref))
    assert_same_forward_and_grads(fast, reference, torch.randn(2, tokens, 48))


@pytest.mark.parametrize("reference", [False, True], ids=["fast", "reference"])
def test_ista_is_one_proximal_step_of_the_formula(reference):
    torch.manual_seed(1)
    block = ISTA(16, eta=0.3, lambd=0.2, reference=reference)
    x = torch.randn(4, 16)
    D = block.weight
    # column-vector form of eq. 17: ReLU(z + η D^T (z − D z) − η λ) with z = x
    expected = F.relu(x.T + 0.3 * D.T @ (x.T - D @ x.T) - 0.3 * 0.2).T
    torch.testing.assert_close(block(x), expected)


def _lasso(z, x, D, lam):
    """λ‖z‖₁ + ½‖x − D z‖², summed over tokens (tokens as rows)."""
    return lam * z.abs().sum() + 0.5 * ((x - z @ D.T) ** 2).sum()


@pytest.mark.parametrize("lam", [0.05, 0.1, 0.5])
def test_ista_step_decreases_lasso_objective_for_small_eta(lam):
    torch.manual_seed(2)
    d = 24
    block = ISTA(d, lambd=lam)
    D = block.weight.detach()
    lipschitz = torch.linalg.matrix_norm(D, ord=2) ** 2  # ‖D‖₂²
    block.eta = float(0.9 / lipschitz)  # η < 1/L guarantees descent
    x = torch.rand(64, d)  # non-negative, so the warm start z = x is feasible
    with torch.no_grad():
        z1 = block(x)
        before, after = _lasso(x, x, D, lam), _lasso(z1, x, D, lam)
    assert (z1 >= 0).all()
    assert after < before, (before.item(), after.item())


# ------------------------------------------------------------------------------------- the layer
def test_crate_layer_structure():
    """Z^{ℓ+½} = Z + MSSA(LN Z); Z^{ℓ+1} = ISTA(LN Z^{ℓ+½}) with no residual around ISTA."""
    torch.manual_seed(4)
    layer = CRATELayer(32, 4, 8).eval()
    x = torch.randn(2, 7, 32)
    with torch.no_grad():
        _, trace = layer(x, return_trace=True)
        z_half = x + layer.mssa(layer[0].norm(x))
        torch.testing.assert_close(trace.z_half, z_half, atol=ATOL, rtol=1e-5)
        torch.testing.assert_close(trace.z_out, layer.ista(layer[1].norm(z_half)), atol=ATOL, rtol=1e-5)
        torch.testing.assert_close(trace.proj, layer.mssa.forward_parts(layer[0].norm(x)).proj)
        torch.testing.assert_close(trace.codes, trace.z_out)
    assert (trace.z_out >= 0).all()  # the ReLU output replaces the stream
    assert not layer.residual
