"""Tests behind the checks of notebooks/04_crate_layer_by_layer: every step the notebook checks, on
other sizes and seeds than the notebook's, so that a claim holding only for its example fails here.

Covered elsewhere: the layer's residual structure and fast == reference (tests/unit/models/),
the intermediates of layer 2 and the published parameter totals (tests/unit/models/test_models.py),
layer 2 of ``layerwise_measurements`` against the official ingredients
(tests/unit/evaluation/test_layerwise.py), the parameter groups and their formulas
(tests/unit/evaluation/test_parameters.py), the official coding-rate fixture and the range of the
measurement (tests/unit/test_coding_rate.py). This file adds, on the notebook's models: the layer
from raw tensor operations, the whole forward by hand and the full trace chain, the parameter
breakdown of every preset, the range of the official R^c measurement reached at both ends, every
layer of the layer-wise figure by hand, and the telescoping split of each layer's change of R^c
into its MSSA, ISTA and new-subspace terms.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from einops import rearrange

import crate_edu
from crate_edu import coding_rate as cr
from crate_edu.evaluation import layerwise_measurements, parameters_by_component, parameters_by_formula
from crate_edu.models import ISTA, MSSA, CRATELayer, PreNorm

F64 = torch.float64


# ---------------------------------------------------------------------------------------------
# helpers: the notebook's inline code, restated
# ---------------------------------------------------------------------------------------------


def _perturbed_layer(d: int, K: int, p: int, seed: int) -> CRATELayer:
    torch.manual_seed(seed)
    layer = CRATELayer(d, K, p).double().eval()
    with torch.no_grad():
        for name, prm in layer.named_parameters():
            if "norm" in name or name.endswith("bias"):
                prm.add_(0.1 * torch.randn_like(prm))
    return layer


def _layer_from_scratch(Z: torch.Tensor, layer: CRATELayer) -> tuple[torch.Tensor, torch.Tensor]:
    ln1, ln2 = layer[0].norm, layer[1].norm
    U_T = layer.mssa.qkv.weight
    W_out, b_out = layer.mssa.to_out[0].weight, layer.mssa.to_out[0].bias
    D, eta, lam = layer.ista.weight, layer.ista.eta, layer.ista.lambd
    X = F.layer_norm(Z, Z.shape[-1:], ln1.weight, ln1.bias, ln1.eps)
    W = rearrange(X @ U_T.T, "b n (k p) -> b k n p", k=layer.mssa.heads)
    A = torch.softmax(W @ W.transpose(-1, -2) / math.sqrt(layer.mssa.dim_head), dim=-1)
    Z_half = Z + rearrange(A @ W, "b k n p -> b n (k p)") @ W_out.T + b_out
    Y = F.layer_norm(Z_half, Z.shape[-1:], ln2.weight, ln2.bias, ln2.eps)
    return Z_half, torch.relu(Y + eta * (Y - Y @ D.T) @ D - eta * lam)


def _rc_per_image(proj: torch.Tensor, eps: float = 0.01) -> torch.Tensor:
    """The official R^c of every image (B,) by another route than the notebook's written-out logdet:
    eq. 7's coding rate of each head's unit tokens, with p in the place of d and ε² = eps, summed."""
    W = proj.double()
    return cr.coding_rate(W / W.norm(dim=-1, keepdim=True), math.sqrt(eps)).sum(-1)  # (B, K) -> (B,)


# ---------------------------------------------------------------------------------------------
# §1: one layer
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("d,K,p,seed", [(32, 4, 8, 0), (48, 3, 16, 1), (40, 2, 12, 2)])
def test_layer_from_blocks_and_from_raw_ops_equals_crate_layer(d, K, p, seed):
    layer = _perturbed_layer(d, K, p, seed)
    Z = torch.randn(3, 9, d, dtype=F64)
    compress = PreNorm(d, MSSA(d, heads=K, dim_head=p, out_bias=True)).double()
    sparsify = PreNorm(d, ISTA(d, eta=0.1, lambd=0.1)).double()
    compress.load_state_dict(layer[0].state_dict())
    sparsify.load_state_dict(layer[1].state_dict())
    with torch.no_grad():
        out, trace = layer(Z, return_trace=True)
        z_half_blocks = Z + compress(Z)
        torch.testing.assert_close(sparsify(z_half_blocks), out, atol=1e-12, rtol=0)
        z_half_raw, out_raw = _layer_from_scratch(Z, layer)
        torch.testing.assert_close(z_half_raw, trace.z_half, atol=1e-12, rtol=0)
        torch.testing.assert_close(out_raw, out, atol=1e-12, rtol=0)


def test_ista_block_is_ista_step_warm_started_at_its_input():
    layer = _perturbed_layer(24, 3, 8, 3)
    Y = torch.randn(2, 7, 24, dtype=F64)
    D = layer.ista.weight.detach()
    with torch.no_grad():
        torch.testing.assert_close(layer.ista(Y), cr.ista_step(Y, Y, D, 0.1, 0.1), atol=1e-12, rtol=0)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_no_residual_around_ista_makes_the_stream_sparse(seed):
    layer = _perturbed_layer(64, 4, 16, seed)
    Z = torch.randn(2, 17, 64, dtype=F64)
    with torch.no_grad():
        out, trace = layer(Z, return_trace=True)
        with_residual = trace.z_half + layer.ista(layer[1].norm(trace.z_half))
    assert (out >= 0).all()
    assert (out == 0).double().mean() > 0.3  # about half: LayerNorm centres, ReLU cuts
    assert (with_residual == 0).double().mean() == 0


# ---------------------------------------------------------------------------------------------
# §2: the model
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("depth,patch", [(3, 8), (2, 4)])
def test_forward_by_hand_and_every_link_of_the_trace_chain(depth, patch):
    torch.manual_seed(depth)
    model = crate_edu.create_model("crate_nano_cifar", depth=depth, patch_size=patch).double().eval()
    x = torch.randn(3, 3, 32, 32, dtype=F64)
    layers = model.transformer.layers
    with torch.no_grad():
        patches = rearrange(x, "b c (h p1) (w p2) -> b (h w) (p1 p2 c)", p1=patch, p2=patch)
        emb = model.to_patch_embedding
        tokens = emb[3](emb[2](emb[1](patches)))
        Z1 = torch.cat([model.cls_token.expand(3, -1, -1), tokens], 1) + model.pos_embedding
        torch.testing.assert_close(Z1, model.embed(x), atol=1e-12, rtol=0)
        Z = Z1
        for f in layers:
            Z = f(Z)
        torch.testing.assert_close(model.mlp_head(Z[:, 0]), model(x), atol=1e-12, rtol=0)
        logits, traces = model.forward_intermediates(x)
        torch.testing.assert_close(logits, model(x), atol=1e-12, rtol=0)
        torch.testing.assert_close(traces[-1].z_out, model.forward_features(x), atol=1e-12, rtol=0)
        z_in = Z1
        for f, t in zip(layers, traces, strict=True):
            X = f[0].norm(z_in)
            torch.testing.assert_close(t.proj, f.mssa.forward_parts(X).proj, atol=1e-12, rtol=0)
            torch.testing.assert_close(t.z_half, z_in + f.mssa(X), atol=1e-12, rtol=0)
            torch.testing.assert_close(t.z_out, f.ista(f[1].norm(t.z_half)), atol=1e-12, rtol=0)
            torch.testing.assert_close(t.z_out, f(z_in), atol=1e-12, rtol=0)
            z_in = t.z_out


# ---------------------------------------------------------------------------------------------
# §3: parameter counts
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    [
        "crate_tiny", "crate_small", "crate_base", "crate_large", "crate_nano_cifar",
        "vit_small", "vit_tiny", "vit_nano_cifar",
    ],
)  # fmt: skip
def test_parameter_breakdown_matches_formulas_and_adds_up(name):
    with torch.device("meta"):
        model = crate_edu.create_model(name)
    counts = parameters_by_component(model)
    assert counts == parameters_by_formula(model.config)
    assert sum(counts.values()) == model.num_params()


def test_crate_tiny_vs_vit_small_same_width():
    with torch.device("meta"):
        crate_t, vit_s = crate_edu.create_model("crate_tiny"), crate_edu.create_model("vit_small")
    assert crate_t.config.dim == vit_s.config.dim == 384
    assert crate_t.num_params() == 6_090_856 and vit_s.num_params() == 22_039_144
    c, v = parameters_by_component(crate_t), parameters_by_component(vit_s)
    d, L = 384, 12
    assert v["attention"] - c["attention"] == L * 2 * d * d  # two more d×d projections per layer
    assert v["MLP / ISTA"] == L * (8 * d * d + 5 * d) and c["MLP / ISTA"] == L * d * d
    for key in ("embedding", "LayerNorms in layers", "head"):
        assert c[key] == v[key]


# ---------------------------------------------------------------------------------------------
# §4: the layer-wise measurement
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("N,p,K", [(17, 32, 4), (16, 8, 3), (8, 8, 2)])
def test_official_rc_measurement_range_is_attained_at_both_ends(N, p, K):
    g = torch.Generator().manual_seed(N + p)
    lo, hi = cr.measure_coding_rate_range(N, p, K)
    same_dir = torch.randn(1, K, 1, p, generator=g, dtype=F64) * (
        0.1 + torch.rand(1, K, N, 1, generator=g, dtype=F64)
    )
    torch.testing.assert_close(_rc_per_image(same_dir), torch.tensor([lo], dtype=F64), atol=1e-9, rtol=0)
    if N <= p:  # N orthonormal tokens: the Gram is I_N
        spread = torch.linalg.qr(torch.randn(1, K, p, N, generator=g, dtype=F64))[0].transpose(-1, -2)
    else:  # N = c·p tokens, c copies of an orthonormal basis (a tight frame): p eigenvalues N/p
        spread = torch.linalg.qr(torch.randn(1, K, p, p, generator=g, dtype=F64))[0].repeat(1, 1, N // p, 1)
    torch.testing.assert_close(_rc_per_image(spread), torch.tensor([hi], dtype=F64), atol=1e-9, rtol=0)
    rand = torch.randn(16, K, N, p, generator=g, dtype=F64)
    r = _rc_per_image(rand)
    assert (r > lo).all() and (r < hi).all()
    mean, std = cr.measure_coding_rate(rand)
    torch.testing.assert_close(torch.stack([r.mean(), r.std()]), torch.stack([mean, std]), atol=1e-9, rtol=0)


def _small_model(seed: int, depth: int = 3):
    torch.manual_seed(seed)
    return crate_edu.create_model("crate_nano_cifar", depth=depth, patch_size=8).eval()


@pytest.mark.parametrize("seed", [0, 1])
def test_every_layer_of_the_layerwise_figure_by_hand(seed):
    model = _small_model(seed)
    x = torch.randn(12, 3, 32, 32, generator=torch.Generator().manual_seed(seed))
    lm = layerwise_measurements(model, x)
    with torch.no_grad():
        _, traces = model.forward_intermediates(x)
    lo, hi = cr.measure_coding_rate_range(17, 32, 4)
    for ell, t in enumerate(traces):
        rc = _rc_per_image(t.proj)
        nz = (t.z_out != 0).double().flatten(1).mean(1)
        assert lm.compression_mean[ell] == pytest.approx(rc.mean().item(), abs=2e-3)
        assert lm.compression_std[ell] == pytest.approx(rc.std().item(), abs=2e-3)
        assert lm.nonzero_mean[ell] == pytest.approx(nz.mean().item(), abs=1e-6)
        assert lm.nonzero_std[ell] == pytest.approx(nz.std(correction=0).item(), abs=1e-6)
        assert ((lo <= rc) & (rc <= hi)).all()


# ---------------------------------------------------------------------------------------------
# §6: the split of each layer's change of R^c
# ---------------------------------------------------------------------------------------------


def _own_subspace_rates(model, x):
    rows = []
    with torch.no_grad():
        _, traces = model.forward_intermediates(x)
        z_in = model.embed(x)
        for f, t in zip(model.transformer.layers, traces, strict=True):
            rows.append(
                {
                    k: _rc_per_image(f.mssa.forward_parts(f[0].norm(z)).proj)
                    for k, z in (("in", z_in), ("half", t.z_half), ("out", t.z_out))
                }
            )
            z_in = t.z_out
    return rows


@pytest.mark.parametrize("seed", [0, 3])
def test_mssa_ista_new_subspace_split_telescopes_to_the_figure(seed):
    model = _small_model(seed, depth=4)
    x = torch.randn(10, 3, 32, 32, generator=torch.Generator().manual_seed(seed))
    lm = layerwise_measurements(model, x)
    rows = _own_subspace_rates(model, x)
    ins = torch.stack([r["in"].mean() for r in rows])
    torch.testing.assert_close(ins, torch.tensor(lm.compression_mean, dtype=F64), atol=2e-3, rtol=0)
    for ell in range(len(rows) - 1):
        mssa = (rows[ell]["half"] - rows[ell]["in"]).mean()
        ista = (rows[ell]["out"] - rows[ell]["half"]).mean()
        new = (rows[ell + 1]["in"] - rows[ell]["out"]).mean()
        total = lm.compression_mean[ell + 1] - lm.compression_mean[ell]
        assert (mssa + ista + new).item() == pytest.approx(total, abs=4e-3)
