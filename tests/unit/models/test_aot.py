"""Tests for crate_edu.models.aot: the attention-only transformer and its SNR by layer."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from crate_edu import coding_rate as cr
from crate_edu import denoising as dn
from crate_edu.models.aot import AoT, AoTConfig, AoTLayer, snr_by_layer, token_snr

F64 = torch.float64


def _tokens(n_per=256, K=4, p=16, delta=0.2, seed=0):
    g = torch.Generator().manual_seed(seed)
    U = cr.random_complete_split(K * p, K, p, g, dtype=F64)
    Z, labels = dn.sample_subspace_noise_tokens(n_per, U, delta, g)
    return Z, labels, U


def _denoiser(K=4, p=16, depth=6, norm=True, eta=0.25, tau=0.25, U=None, reference=True):
    cfg = AoTConfig(dim=K * p, depth=depth, heads=K, dim_head=p, norm=norm, reference=reference)
    return AoT(cfg).double().set_subspaces(U, eta=eta, tau=tau)


def test_layer_is_attention_with_a_skip_and_nothing_else():
    cfg = AoTConfig(dim=32, depth=3, heads=4)
    model = AoT(cfg)
    assert len(model.layers) == 3 and isinstance(model.layers[0], AoTLayer)
    names = {n.split(".", 2)[-1] for n, _ in model.named_parameters()}
    assert names == {"norm.weight", "norm.bias", "attn.qkv.weight", "attn.to_out.0.weight"}  # no MLP, no bias
    x = torch.randn(2, 10, 32)
    layer = model.layers[0]
    torch.testing.assert_close(layer(x), x + layer.attn(layer.norm(x)))
    zs = model.forward_layers(x)
    assert len(zs) == 4 and all(z.shape == x.shape for z in zs)
    torch.testing.assert_close(zs[-1], model(x))
    model(x).sum().backward()  # trainable
    assert model.layers[0].attn.qkv.weight.grad is not None
    assert not any(
        isinstance(m, torch.nn.LayerNorm) for m in AoT(AoTConfig(dim=32, depth=2, norm=False)).modules()
    )


@pytest.mark.parametrize("reference", [True, False])
def test_set_subspaces_gives_the_unrolled_denoiser(reference):
    """Without LayerNorm, a layer is Z + η Σ_k U_k softmax(τ W_k W_k^T) W_k^T (coding_rate.mssa without γ)."""
    Z, _, U = _tokens(n_per=8, K=3, p=4)
    model = _denoiser(K=3, p=4, depth=2, norm=False, eta=0.3, tau=0.7, U=U, reference=reference)
    N = Z.shape[0]
    expected = Z + 0.3 * cr.mssa(Z, U, 1.0, tau=0.7) / (4 / N)  # γ = p/N at ε = 1
    torch.testing.assert_close(model.layers[0](Z[None])[0], expected, rtol=1e-10, atol=1e-10)


def test_token_snr_is_own_subspace_energy_over_the_rest():
    U = cr.random_complete_split(4, 2, 2, torch.Generator().manual_seed(1), dtype=F64)
    # token 0 of subspace 0: 3 units on U_0, 4 on U_1 -> SNR 3/4; subspace 1: 1 unit each -> 1
    Z = torch.stack([3 * U[0][:, 0] + 4 * U[1][:, 1], U[1][:, 0] + U[0][:, 1]])
    assert token_snr(Z, U, torch.tensor([0, 1])).item() == pytest.approx((0.75 + 1.0) / 2, rel=1e-12)
    Zd, labels, Ud = _tokens(n_per=2000, K=2, p=4, delta=0.25)
    assert token_snr(Zd, Ud, labels).item() == pytest.approx(1 / 0.25, rel=0.05)  # 1/δ for Def. 1 tokens
    with pytest.raises(ValueError, match="labels"):
        token_snr(Z, U, torch.tensor([0, 1, 1]))


def test_snr_grows_with_depth_roughly_linearly():
    """The paper's claim, measured on its token model (Def. 1: K = 4, p = 16, d = 64, δ = 0.2,
    1024 tokens) with the true subspaces, LayerNorm, η = 0.25, τ = 0.25 (τ = 1 on tokens of the
    input's scale: LN multiplies them by about √(d/‖z‖²) ≈ 1.9).

    Measured SNR by layer: 2.89, 3.67, 4.40, 5.08, 5.71, 6.29, 6.83: it rises by a roughly
    constant amount per layer (0.78, 0.73, 0.68, 0.63, 0.58, 0.53: linear growth that slowly
    bends), not by a constant factor (the ratios fall, 1.27 → 1.09)."""
    Z, labels, U = _tokens()
    snr = np.array(snr_by_layer(_denoiser(U=U), Z[None], U, labels))
    steps = np.diff(snr)
    assert len(snr) == 7 and np.all(steps > 0)  # grows at every layer
    assert snr[-1] > 2 * snr[0]
    assert steps.max() < 1.6 * steps.min()  # roughly constant increments
    fit = np.polyfit(np.arange(7), snr, 1)
    r2 = 1 - ((np.polyval(fit, np.arange(7)) - snr) ** 2).sum() / ((snr - snr.mean()) ** 2).sum()
    assert r2 > 0.99 and 0.5 < fit[0] < 0.9  # linear fit, slope ≈ 0.66 per layer
    ratios = snr[1:] / snr[:-1]
    assert np.all(np.diff(ratios) < 0)  # not geometric


def test_snr_grows_on_the_fast_path_too():
    Z, labels, U = _tokens(n_per=64)
    ref = snr_by_layer(_denoiser(U=U, depth=3), Z[None], U, labels)
    fast = snr_by_layer(_denoiser(U=U, depth=3, reference=False), Z[None], U, labels)
    np.testing.assert_allclose(fast, ref, rtol=1e-6)


def test_without_layernorm_the_growing_signal_breaks_the_denoiser():
    """The unrolled denoiser without LN, τ = 1, η = 0.5: the signal grows by ~(1 + η) a layer, the
    foreign heads' similarities with it sharpen their softmax, and they start copying other
    tokens' signal: SNR rises once and then falls below where it began (measured 2.80 → 3.56, then
    0.63 after six layers)."""
    Z, labels, U = _tokens(n_per=64)
    snr = snr_by_layer(_denoiser(U=U, depth=6, norm=False, eta=0.5, tau=1.0), Z[None], U, labels)
    assert snr[1] > snr[0] and snr[-1] < snr[0]


def test_bad_configuration_is_named():
    with pytest.raises(ValueError, match="divisible"):
        AoTConfig(dim=30, heads=4)
    with pytest.raises(ValueError, match="depth"):
        AoTConfig(depth=0)
    Z, labels, U = _tokens(n_per=4, K=2, p=4)
    with pytest.raises(ValueError, match="shape \\(heads, dim, dim_head\\)"):
        AoT(AoTConfig(dim=8, heads=4)).set_subspaces(U)
    with pytest.raises(ValueError, match="no output map"):
        AoT(AoTConfig(dim=8, heads=1, dim_head=8)).set_subspaces(torch.eye(8)[None])
