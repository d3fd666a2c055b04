"""crate_edu.models.tost against the official ToST code, its derivation, and TSSA inside CRATE-LM.

The fixture ``official_tost_tiny_fixture.pt`` was made by the official ``tost_vision/tost.py`` and
``tost_lang/model_TSSA.py`` (RobinWu218/ToST, with timm 0.4.12) by
``tests/fixtures/make_tost_fixtures.py``: given their state dicts, our TSSA, causal TSSA and ToST
classifier must give their outputs (and, for TSSA, their gradients) to 1e-5 in float32 (measured:
0, the same operations in the same order). The derivation checks run in float64: TSSA's update is
−N times the gradient of the variational compression term R^c_var at fixed Π, which bounds the
exact Π-weighted coding rate from above.
"""

from __future__ import annotations

import json

import pytest
import torch

import crate_edu
from crate_edu.models import (
    TSSA,
    CausalTSSA,
    CRATELanguageModel,
    ToST,
    causal_tssa_update,
    create_model,
    fast,
    model_spec,
    set_reference,
    tssa_update,
    variational_compression_rate,
    weighted_compression_rate,
)
from crate_edu.models.tost import causal_tssa_membership, tssa_membership
from tests.support.paths import FIXTURES

TOL = 1e-5  # the bound, float32


@pytest.fixture(scope="module")
def fixture() -> dict:
    return torch.load(FIXTURES / "official_tost_tiny_fixture.pt", weights_only=True)


def official_vision(case: dict, reference: bool = False) -> ToST:
    cfg = case["config"]
    model = ToST(
        image_size=cfg["img_size"],
        patch_size=cfg["patch_size"],
        num_classes=cfg["num_classes"],
        dim=cfg["embed_dim"],
        depth=cfg["depth"],
        heads=cfg["num_heads"],
        mlp_ratio=float(cfg["mlp_ratio"]),
        eta=cfg["eta"],
        reference=reference,
    )
    model.load_state_dict(case["state_dict"])  # strict, by name: the official keys
    return model.eval()


# ---------------------------------------------------------------- equality with the official code
def test_tssa_forward_and_gradients_equal_the_official_attention_tssa(fixture):
    case = fixture["tssa"]
    attn = TSSA(32, 4, qkv_bias=True).eval()
    attn.load_state_dict(case["state_dict"])
    x = case["x"].clone().requires_grad_(True)
    out = attn(x)
    (out * case["grad_out"]).sum().backward()
    deltas = {
        "out": (out - case["out"]).abs().max().item(),
        "grad x": (x.grad - case["grad_x"]).abs().max().item(),
    }
    deltas |= {
        f"grad {n}": (p.grad - case["grads"][n]).abs().max().item() for n, p in attn.named_parameters()
    }
    print("TSSA max |Δ|: " + ", ".join(f"{k} {v:.1e}" for k, v in deltas.items()))
    assert set(case["grads"]) == {n for n, _ in attn.named_parameters()}
    assert all(v <= TOL for v in deltas.values()), deltas


@pytest.mark.parametrize("kind", ["causal_tssa", "causal_tssa_nobias"])
def test_causal_tssa_equals_the_official_causal_self_attention_tssa(fixture, kind):
    case = fixture[kind]
    cfg = case["config"]
    attn = CausalTSSA(
        cfg["n_embd"], cfg["n_head"], cfg["block_size"], qkv_bias=cfg["bias"], out_bias=cfg["bias"]
    )
    attn.load_state_dict(case["state_dict"])
    attn.eval()
    with torch.no_grad():
        full = (attn(case["x"]) - case["out"]).abs().max().item()
        short = (attn(case["x_short"]) - case["out_short"]).abs().max().item()
    print(f"{kind}: max |Δ| {full:.1e}, shorter context {short:.1e}")
    assert full <= TOL and short <= TOL


@pytest.mark.parametrize("kind", ["tost_p8", "tost_p16"])
@pytest.mark.parametrize("reference", [False, True])
def test_tost_equals_the_official_vision_transformer(fixture, kind, reference):
    case = fixture[kind]
    model = official_vision(case, reference)
    assert list(model.state_dict()) == list(case["state_dict"])  # the official keys, in order
    assert fast.prunes_last_layer(model) is not reference
    with torch.no_grad():
        logits = model(case["images"])
        features = model.forward_features(case["images"])[:, 0]
        traced, traces = model.forward_intermediates(case["images"])
    deltas = {
        "logits": (logits - case["logits"]).abs().max().item(),
        "features": (features - case["features"]).abs().max().item(),
        "intermediates' logits": (traced - case["logits"]).abs().max().item(),
    }
    print(f"{kind}, reference={reference}: max |Δ| " + ", ".join(f"{k} {v:.1e}" for k, v in deltas.items()))
    assert all(v <= TOL for v in deltas.values()), deltas
    assert len(traces) == case["config"]["depth"]


def test_full_size_keys_and_shapes_equal_the_official_ones():
    official = json.loads((FIXTURES / "official_tost_state_dict_shapes.json").read_text())
    with torch.device("meta"):
        model = create_model("tost_tiny_12_p16")
    ours = {k: list(v.shape) for k, v in model.state_dict().items()}
    assert list(ours) == list(official["tost_cab_tiny_12_p16"])
    assert ours == official["tost_cab_tiny_12_p16"]


@pytest.mark.parametrize(
    "name,official,paper",
    [
        ("tost_tiny_12_p16", "tost_cab_tiny_12_p16", 5.8),
        ("tost_small_12_p16", "tost_cab_small_12_p16", 22.6),
        ("tost_medium_24_p16", "tost_cab_medium_24_p16", None),
    ],
)
def test_parameter_counts_equal_the_official_constructors(name, official, paper):
    """Equal to the official constructors; ToST-T and -S also round to the paper's 5.8M and 22.6M.
    The only official medium preset, depth 24, has 71.5M where the paper reports 68.1M for ToST-M
    (no official preset has 68.1M; the README's ``tost_cab_medium_12_p16`` does not exist)."""
    counts = json.loads((FIXTURES / "official_tost_state_dict_shapes.json").read_text())["num_params"]
    with torch.device("meta"):
        model = create_model(name)
    assert model.num_params() == counts[official]
    assert model_spec(name).official == f"tost_vision/tost.py:{official}"
    if paper is not None:
        assert round(model.num_params() / 1e6, 1) == paper
    else:
        assert round(model.num_params() / 1e6, 1) == 71.5


# ------------------------------------------------------------------------------- the derivation
def random_heads(K=3, N=11, p=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    W = torch.randn(2, K, N, p, generator=g, dtype=torch.float64)
    Pi = torch.softmax(torch.randn(2, K, N, generator=g, dtype=torch.float64), dim=1)  # over heads
    return W, Pi


def test_variational_rate_bounds_the_exact_rate_and_is_tight_for_diagonal_moments():
    W, Pi = random_heads()
    for alpha in (0.3, 1.0, 4.0):
        exact = weighted_compression_rate(W, Pi, alpha)
        var = variational_compression_rate(W, Pi, alpha)
        assert (var >= exact).all() and (var - exact).min() > 1e-6  # a strict bound off the diagonal case
    # each token in a single channel: every head's Π-weighted second moment is diagonal -> equality
    mask = torch.nn.functional.one_hot(torch.arange(11) % 4, 4).to(W)  # (N, p)
    Wd = W * mask
    torch.testing.assert_close(
        variational_compression_rate(Wd, Pi, 2.0), weighted_compression_rate(Wd, Pi, 2.0), atol=1e-12, rtol=0
    )


def test_tssa_update_is_minus_n_times_the_gradient_of_the_variational_rate():
    """∂R^c_var/∂w_kj = (1/N) Π_kj w_kj / (1 + dots_k) at fixed Π (α = 1), so TSSA's update
    −Π w / (1 + dots) is −N ∇_w R^c_var: a gradient step on the variational compression term."""
    W, Pi = random_heads()
    W.requires_grad_(True)
    (grad,) = torch.autograd.grad(variational_compression_rate(W, Pi).sum(), W)
    N = W.shape[-2]
    # only TSSA's 1e-8 on Σ_j Π_kj separates the two (relative ~1e-9 here)
    torch.testing.assert_close(tssa_update(W.detach(), Pi), -N * grad, atol=1e-8, rtol=1e-7)


def test_tssa_layer_with_tied_subspaces_is_a_gradient_step_on_the_tokens():
    """With qkv = [U_1 … U_K]^T and to_out = [U_1 … U_K] (no biases), TSSA(Z) = −N ∇_Z R^c_var(Z U, Π)
    with Π held at the layer's own value, and a small step along it lowers R^c_var."""
    torch.manual_seed(0)
    d, K, N = 12, 3, 9
    U = (
        torch.linalg.qr(torch.randn(d, d, dtype=torch.float64))[0].reshape(d, K, d // K).permute(1, 0, 2)
    )  # (K, d, p)
    attn = TSSA(d, K, qkv_bias=False).double().eval()
    with torch.no_grad():
        attn.qkv.weight.copy_(torch.cat(list(U.transpose(1, 2)), dim=0))  # rows: U_k^T      (d, d)
        attn.to_out[0].weight.copy_(torch.cat(list(U), dim=1))  # columns: U_k              (d, d)
        attn.to_out[0].bias.zero_()
        attn.temp.copy_(torch.tensor([[0.5], [2.0], [1.0]]))
    Z = torch.randn(2, N, d, dtype=torch.float64, requires_grad=True)
    parts = attn.forward_parts(Z)
    Pi = parts.membership.detach()
    torch.testing.assert_close(Pi.sum(dim=1), torch.ones(2, N, dtype=torch.float64))  # over heads

    def objective(Z):
        W = torch.einsum("bnd,kdp->bknp", Z, U)  # w_kj = U_k^T z_j                            (B, K, N, p)
        return variational_compression_rate(W, Pi)

    (grad,) = torch.autograd.grad(objective(Z).sum(), Z)
    torch.testing.assert_close(parts.out, -N * grad, atol=1e-8, rtol=1e-7)
    torch.testing.assert_close(parts.update, tssa_update(parts.proj, parts.membership))
    with torch.no_grad():
        before, after = objective(Z), objective(Z + 0.05 / N * parts.out)
    assert (after < before).all()


def test_causal_tssa_row_t_is_a_gradient_step_on_its_prefix():
    """Row t of the causal update is −(t + 1) ∇_{w_t} R^c_var(w_{≤t}, Π_{≤t}), and the layer's
    output before ``c_proj`` is that update with the causal membership."""
    W, Pi = random_heads(N=8)
    update = causal_tssa_update(W, Pi)
    for t in range(W.shape[-2]):
        prefix = W[..., : t + 1, :].clone().requires_grad_(True)
        (grad,) = torch.autograd.grad(variational_compression_rate(prefix, Pi[..., : t + 1]).sum(), prefix)
        torch.testing.assert_close(update[..., t, :], -(t + 1) * grad[..., t, :], atol=1e-8, rtol=1e-7)
    torch.manual_seed(1)
    attn = CausalTSSA(12, 3, block_size=8, out_bias=False).double()
    with torch.no_grad():
        attn.c_proj.weight.copy_(torch.eye(12))
        attn.denom_bias.normal_(0, 0.1)
    x = torch.randn(2, 8, 12, dtype=torch.float64)
    parts = attn.forward_parts(x)
    expected = causal_tssa_update(parts.proj, causal_tssa_membership(parts.proj, attn.temp, attn.denom_bias))
    torch.testing.assert_close(parts.out, expected.transpose(1, 2).reshape(2, 8, 12))
    torch.testing.assert_close(parts.attn.sum(dim=1), torch.ones(2, 8, dtype=torch.float64))


def test_tssa_membership_normalises_channels_over_tokens():
    w = torch.randn(2, 3, 7, 4, dtype=torch.float64)
    temp = torch.tensor([[1.0], [2.0], [0.5]], dtype=torch.float64)
    expected = torch.softmax((w**2 / (w**2).sum(dim=-2, keepdim=True)).sum(-1) * temp, dim=1)
    torch.testing.assert_close(tssa_membership(w, temp), expected)
    # scaling a token set leaves Π unchanged: the statistic is scale-free
    torch.testing.assert_close(tssa_membership(3 * w, temp), expected)


def test_causal_tssa_output_at_t_ignores_later_tokens():
    torch.manual_seed(0)
    attn = CausalTSSA(16, 4, block_size=10)
    x = torch.randn(2, 10, 16)
    y = x.clone()
    y[:, 6:] = torch.randn(2, 4, 16)
    with torch.no_grad():
        torch.testing.assert_close(attn(x)[:, :6], attn(y)[:, :6], atol=0, rtol=0)


# ------------------------------------------------------------------------------- TSSA in CRATE-LM
def test_crate_lm_with_tssa_is_causal_and_traces_the_membership():
    torch.manual_seed(0)
    model = CRATELanguageModel(
        vocab_size=23, block_size=12, dim=16, depth=2, heads=4, attention="tssa"
    ).eval()
    keys = set(model.state_dict())
    assert {
        "transformer.h.0.attn.temp",
        "transformer.h.0.attn.denom_bias",
        "transformer.h.0.attn.c_attn.weight",
    } <= keys
    assert model.state_dict()["transformer.h.0.attn.denom_bias"].shape == (4, 12, 1)
    assert isinstance(model.transformer.h[1].attn, CausalTSSA)
    idx = torch.randint(0, 23, (3, 12))
    later = idx.clone()
    later[:, 7:] = (later[:, 7:] + 1) % 23
    with torch.no_grad():
        logits = model(idx)
        torch.testing.assert_close(logits[:, :7], model(later)[:, :7], atol=0, rtol=0)
        traced, traces = model.forward_trace(idx)
    torch.testing.assert_close(traced, logits)
    assert traces[0].attn.shape == (3, 4, 12)  # Π: no T × T matrix
    torch.testing.assert_close(traces[0].attn.sum(dim=1), torch.ones(3, 12))
    assert set_reference(model) is model  # the switch reaches the ISTA blocks; TSSA has one path
    torch.testing.assert_close(model(idx), logits, atol=1e-5, rtol=1e-5)
    out = model.generate(idx[:1, :3], 4, generator=torch.Generator().manual_seed(0))
    assert out.shape == (1, 7)
    loss = torch.nn.functional.cross_entropy(model(idx).flatten(0, 1), idx.flatten())
    loss.backward()
    assert model.transformer.h[0].attn.temp.grad is not None


def test_crate_lm_bad_attention_is_a_one_line_error():
    with pytest.raises(ValueError, match="attention must be 'mssa'.*or 'tssa'.*got 'linear'"):
        create_model("crate_lm_char", attention="linear")
    assert create_model("crate_lm_char", attention="tssa", depth=1).config.attention == "tssa"


# ---------------------------------------------------------------------------- the ToST classifier
def test_nano_preset_fast_equals_reference_and_intermediates():
    torch.manual_seed(0)
    model = create_model("tost_nano_cifar", depth=2).eval()
    reference = set_reference(create_model("tost_nano_cifar", depth=2), True).eval()
    reference.load_state_dict(model.state_dict())
    x = torch.randn(3, 3, 32, 32)
    torch.testing.assert_close(model(x), reference(x), atol=1e-5, rtol=1e-5)
    with torch.no_grad():
        logits, traces = model.forward_intermediates(x)
    torch.testing.assert_close(logits, model(x), atol=1e-5, rtol=1e-5)
    assert len(traces) == 2 and traces[0].proj.shape == (3, 4, 64, 32)
    assert traces[0].membership.shape == (3, 4, 64)  # 8 × 8 tokens from the patch-4 stem
    torch.testing.assert_close(traces[0].membership.sum(dim=1), torch.ones(3, 64))
    assert traces[1].z_half.shape == traces[1].z_out.shape == (3, 64, 128)
    model.reset_classifier(3)
    assert model(x).shape == (3, 3) and model.config.num_classes == 3


def test_official_stems_and_initialisation():
    model = create_model("tost_tiny_12_p16")
    widths = [m.out_channels for m in model.patch_embed.modules() if isinstance(m, torch.nn.Conv2d)]
    assert widths == [24, 48, 96, 192]  # 3 → d/8 → d/4 → d/2 → d
    assert [m.out_channels for m in create_model("tost_tiny_12_p16", patch_size=8).patch_embed.modules()
            if isinstance(m, torch.nn.Conv2d)] == [48, 96, 192]  # fmt: skip
    assert torch.equal(model.blocks[0].attn.temp, torch.ones(4, 1))
    assert torch.equal(model.blocks[3].gamma1, torch.ones(192))
    assert torch.equal(create_model("tost_medium_24_p16", depth=1).blocks[0].gamma2, torch.full((512,), 1e-5))
    assert model.blocks[0].norm1.eps == model.norm.eps == 1e-6
    assert model.head.bias.abs().max() == 0 and model.blocks[0].attn.qkv.bias is not None


@pytest.mark.parametrize(
    "kwargs,error,match",
    [
        (dict(patch_size=32, image_size=64), ValueError, "square patches of 2, 4, 8 or 16"),
        (dict(dim_head=16), ValueError, "dim_head must be dim / heads = 48"),
        (dict(cls_attn_layers=0), ValueError, "never sees the patches; use pool='mean'"),
        (dict(dim=196, heads=4), ValueError, "dim 196 must be divisible by 8 for patch 16"),
        (dict(eta=-1.0), ValueError, "eta must be"),
    ],
)
def test_bad_config_is_a_one_line_error(kwargs, error, match):
    with pytest.raises(error, match=match):
        create_model("tost_tiny_12_p16", **kwargs)


def test_mean_pool_without_class_attention_and_bad_images():
    model = create_model("tost_nano_cifar", depth=1, cls_attn_layers=0, pool="mean")
    assert not fast.prunes_last_layer(model) and model(torch.randn(2, 3, 32, 32)).shape == (2, 10)
    with pytest.raises(ValueError, match="built for 32x32 images, got 64x64"):
        model(torch.randn(1, 3, 64, 64))
    assert "tost_nano_cifar" in crate_edu.list_models(task="classification")
