"""The CRATE-α ablation switches do what they claim, and the defaults are still the official model."""

from __future__ import annotations

import json
from dataclasses import fields
from pathlib import Path

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

import crate_edu
from crate_edu.experiments.crate_alpha_ablation import (
    ABLATION,
    PUBLISHED_ALPHA,
    AblationRun,
    ablation_config,
    code_sparsity,
    crate_alpha_macs,
    published_scaling_table,
    run_ablation,
    summarize,
)
from crate_edu.models import ISTA, CRATEAlphaLayer, OvercompleteISTA, PreNorm
from crate_edu.models.crate_alpha import CRATEAlphaConfig
from tests.support.reference import fixture_overrides, load_fixture

F64 = torch.float64
SWITCHES = ("sparse_coding", "overcomplete_ratio", "decoupled", "residual")


def _perturb_norms(module: torch.nn.Module) -> None:
    """Move LayerNorm affine parameters off (1, 0), so the checks see them."""
    with torch.no_grad():
        for name, prm in module.named_parameters():
            if "norm" in name:
                prm.add_(0.1 * torch.randn_like(prm))


def test_defaults_with_explicit_switches_reproduce_the_official_fixture():
    fx = load_fixture("crate_alpha")
    name, overrides = fixture_overrides("crate_alpha", fx["config"])
    explicit = dict(overrides, decoupled=True, residual=True, sparse_coding="alpha")
    for kw in (overrides, explicit):
        model = crate_edu.create_model(name, **kw).eval()
        model.load_state_dict(fx["state_dict"])  # strict: every official key, nothing more
        with torch.no_grad():
            diff = (model(fx["input"]) - fx["logits"]).abs().max().item()
        assert diff < 1e-4, diff


def test_default_config_is_the_last_ablation_step_and_presets_are_unchanged():
    cfg = crate_edu.model_config("crate_alpha_b16")
    assert (cfg.overcomplete_ratio, cfg.decoupled, cfg.residual, cfg.sparse_coding) == (
        4,
        True,
        True,
        "alpha",
    )
    assert ABLATION["+ residual (CRATE-α)"] == {}
    shapes = json.loads(
        (Path(__file__).resolve().parents[2] / "fixtures" / "official_state_dict_shapes.json").read_text()
    )
    with torch.device("meta"):
        model = crate_edu.create_model("crate_alpha_b16")
    ours = {k: list(v.shape) for k, v in model.state_dict().items()}
    assert ours == shapes["crate_alpha/CRATE_base"]


def test_ablation_steps_change_one_switch_at_a_time():
    defaults = {f.name: f.default for f in fields(CRATEAlphaConfig) if f.name in SWITCHES}
    configs = [{**defaults, **ov} for ov in ABLATION.values()]
    assert list(ABLATION) == ["CRATE block", "+ overcomplete", "+ decoupled", "+ residual (CRATE-α)"]
    assert configs[0] == dict(sparse_coding="crate", overcomplete_ratio=1, decoupled=False, residual=False)
    changed = [{k for k in SWITCHES if a[k] != b[k]} for a, b in zip(configs, configs[1:], strict=False)]
    # going overcomplete forces CRATE-α's coding (a 4d-wide code cannot be warm-started at x ∈ R^d)
    assert changed == [{"sparse_coding", "overcomplete_ratio"}, {"decoupled"}, {"residual"}]


@pytest.mark.parametrize(
    "bad, match",
    [
        (dict(sparse_coding="lista"), "sparse_coding must be one of"),
        (dict(sparse_coding="crate"), "set overcomplete_ratio=1 and decoupled=False"),
        (dict(sparse_coding="crate", overcomplete_ratio=1), "decoupled=True"),
        (dict(overcomplete_ratio=0), "overcomplete_ratio must be a positive integer"),
        (dict(overcomplete_ratio=2.5), "overcomplete_ratio must be a positive integer"),
    ],
)
def test_bad_switches_raise_one_clear_error(bad, match):
    with pytest.raises(ValueError, match=match):
        crate_edu.create_model("crate_alpha_nano_cifar", **bad)


def test_residual_false_is_the_block_without_the_skip():
    torch.manual_seed(0)
    with_skip = CRATEAlphaLayer(32, 4, 8).double().eval()
    _perturb_norms(with_skip)
    no_skip = CRATEAlphaLayer(32, 4, 8, residual=False).double().eval()
    no_skip.load_state_dict(with_skip.state_dict())
    x = torch.randn(2, 5, 32, dtype=F64)
    with torch.no_grad():
        z_half = x + with_skip[0](x)
        block = with_skip[1](z_half)  # D1 A2(LN z_half)
        y_skip, y_plain = with_skip(x), no_skip(x)
        y_trace, trace = no_skip(x, return_trace=True)
    torch.testing.assert_close(y_skip, z_half + block, rtol=0, atol=1e-12)
    torch.testing.assert_close(y_plain, block, rtol=0, atol=1e-12)
    torch.testing.assert_close(y_skip - y_plain, z_half, rtol=0, atol=1e-12)
    torch.testing.assert_close(y_trace, y_plain, rtol=0, atol=1e-12)
    torch.testing.assert_close(trace.z_out, block, rtol=0, atol=1e-12)


def test_decoupled_false_decodes_with_the_coding_dictionary():
    torch.manual_seed(0)
    tied = OvercompleteISTA(16, 4, decoupled=False).double()
    assert tied.D1 is None and [n for n, _ in tied.named_parameters()] == ["D"]
    assert tied.decoder is tied.D
    x = torch.randn(3, 7, 16, dtype=F64)
    D, eta, lam = tied.D.detach(), 0.1, 0.1
    a1 = torch.relu(eta * x @ D - eta * lam)  # from A0 = 0      (3, 7, 64)
    a2 = torch.relu(a1 - eta * (a1 @ D.T - x) @ D - eta * lam)  # (3, 7, 64)
    with torch.no_grad():
        torch.testing.assert_close(tied(x), a2 @ D.T, rtol=0, atol=1e-12)  # out = D A2
        untied = OvercompleteISTA(16, 4).double()
        untied.D.copy_(tied.D)
        torch.testing.assert_close(untied(x), a2 @ untied.D1.T, rtol=0, atol=1e-12)
        untied.D1.copy_(tied.D)  # a decoupled block whose D1 happens to equal D is the tied block
        torch.testing.assert_close(untied(x), tied(x), rtol=0, atol=1e-12)
        tied.reference = True
        torch.testing.assert_close(tied(x), a2 @ D.T, rtol=0, atol=1e-12)


def test_decoupled_default_keeps_the_random_stream_of_the_official_init():
    torch.manual_seed(0)
    a = OvercompleteISTA(8)
    torch.manual_seed(0)
    D = torch.nn.init.kaiming_uniform_(torch.empty(8, 32))
    D1 = torch.nn.init.kaiming_uniform_(torch.empty(8, 32))
    assert torch.equal(a.D, D) and torch.equal(a.D1, D1)


def test_crate_coding_is_crates_one_step_ista_block():
    torch.manual_seed(0)
    layer = CRATEAlphaLayer(
        32, 4, 8, overcomplete_ratio=1, decoupled=False, residual=False, sparse_coding="crate"
    )
    layer = layer.double().eval()
    _perturb_norms(layer)
    assert isinstance(layer.ista, ISTA) and tuple(layer.ista.weight.shape) == (32, 32)
    assert layer[1].norm.eps == 1e-6
    ref = PreNorm(32, ISTA(32), eps=1e-6).double()
    ref.load_state_dict(layer[1].state_dict())
    x = torch.randn(2, 5, 32, dtype=F64)
    with torch.no_grad():
        z_half = x + layer[0](x)
        y, trace = layer(x, return_trace=True)
        y_res = CRATEAlphaLayer(32, 4, 8, 0.0, 1, decoupled=False, sparse_coding="crate").double()
        y_res.load_state_dict(layer.state_dict())
        y_res = y_res(x)
    Y = layer[1].norm(z_half)
    D = layer.ista.weight.detach()
    by_hand = torch.relu(Y + 0.1 * (Y - Y @ D.T) @ D - 0.01)  # ISTA(Y | D), eq. 17
    torch.testing.assert_close(y, by_hand, rtol=0, atol=1e-12)
    torch.testing.assert_close(y, ref(z_half), rtol=0, atol=1e-12)
    torch.testing.assert_close(trace.codes, y, rtol=0, atol=0)  # the code is the output
    torch.testing.assert_close(y_res, z_half + y, rtol=0, atol=1e-12)
    assert bool((y >= 0).all()) and (y == 0).double().mean().item() > 0.2


@pytest.mark.parametrize("variant", list(ABLATION))
def test_each_variant_builds_traces_and_counts_parameters(variant):
    torch.manual_seed(0)
    model = crate_edu.create_model(
        "crate_alpha_nano_cifar", depth=2, patch_size=8, **ABLATION[variant]
    ).eval()
    cfg = model.config
    d, r, L = cfg.dim, cfg.overcomplete_ratio, cfg.depth
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        logits, traces = model.forward_intermediates(x)
        torch.testing.assert_close(logits, model(x), rtol=0, atol=1e-5)
        torch.testing.assert_close(traces[-1].z_out, model.forward_features(x), rtol=0, atol=1e-5)
    width = d if cfg.sparse_coding == "crate" else r * d
    assert traces[0].codes.shape == (3, 17, width)
    n_dict = (1 if cfg.sparse_coding == "crate" else r) * d * d * (2 if cfg.decoupled else 1)
    base = crate_edu.create_model("crate_alpha_nano_cifar", depth=2, patch_size=8).num_params()
    assert model.num_params() == base - L * 2 * 4 * d * d + L * n_dict
    if not cfg.residual:  # CRATE's block: the stream is the (non-negative) codes; tied α: D A2
        assert bool((traces[0].z_out >= 0).all()) == (cfg.sparse_coding == "crate")


def test_published_scaling_table():
    rows = {r["model"]: r for r in published_scaling_table()}
    assert list(rows) == [f"CRATE-α-{k}" for k in PUBLISHED_ALPHA]
    b16, l14 = rows["CRATE-α-B/16"], rows["CRATE-α-L/14"]
    assert (b16["tokens"], b16["top1"], l14["tokens"], l14["top1"]) == (197, 81.2, 257, 83.9)
    assert 72.0 < b16["params_M"] < 72.7 and 253.0 < l14["params_M"] < 254.5
    # halving the patch quadruples the tokens: compute grows at least 4x, accuracy rises
    for a, b in (("B/16", "B/8"), ("B/32", "B/16"), ("L/32", "L/8")):
        ra, rb = rows[f"CRATE-α-{a}"], rows[f"CRATE-α-{b}"]
        assert rb["gmacs_224"] > 4 * ra["gmacs_224"] * 0.9 and rb["top1"] > ra["top1"]


def test_ablation_config_and_code_sparsity():
    cfg = ablation_config("+ decoupled", epochs=2, seed=3, limit_train=64)
    assert (cfg.model, cfg.dataset, cfg.epochs, cfg.seed, cfg.limit_train) == (
        "crate_alpha_nano_cifar",
        "digits",
        2,
        3,
        64,
    )
    assert cfg.model_overrides == {
        "depth": 4,
        "patch_size": 8,
        "overcomplete_ratio": 4,
        "decoupled": True,
        "residual": False,
    }
    with pytest.raises(ValueError, match="choose one of"):
        ablation_config("+ everything", epochs=1)
    own = ablation_config("tied + residual", epochs=1, switches={"decoupled": False})
    assert own.model_overrides == {"depth": 4, "patch_size": 8, "decoupled": False}
    with pytest.raises(ValueError, match="unknown ablation variant 'nope'"):
        run_ablation(["nope"], epochs=1)
    torch.manual_seed(0)
    model = crate_edu.create_model("crate_alpha_nano_cifar", depth=2, patch_size=8)
    x = torch.randn(4, 3, 32, 32)
    nonzero, active, width = code_sparsity(model, x)
    assert width == 512 and len(nonzero) == len(active) == 2
    for nz, act in zip(nonzero, active, strict=True):
        assert 0.0 < nz < 1.0 and act == pytest.approx(nz * width, rel=1e-6)
    with pytest.raises(ValueError, match="no sparse codes"):
        code_sparsity(crate_edu.create_model("vit_nano_cifar", depth=1), x)


def test_summarize_means_over_seeds():
    def run(variant, seed, acc, nz):
        return AblationRun(variant, seed, {}, 10, acc, acc, [nz, nz + 0.2], [1.0, 3.0], 4, [0.5, 0.5], 2.0)

    rows = summarize([run("a", 0, 0.8, 0.1), run("a", 1, 0.9, 0.3), run("b", 0, 0.5, 0.0)])
    assert [r["variant"] for r in rows] == ["a", "b"]
    a = rows[0]
    assert a["seeds"] == [0, 1] and a["test_acc_mean"] == pytest.approx(0.85)
    assert (a["test_acc_min"], a["test_acc_max"]) == (0.8, 0.9)
    assert a["nonzero_mean"] == pytest.approx(0.3) and a["active_mean"] == pytest.approx(2.0)
    assert summarize([r.to_dict() for r in [run("a", 0, 0.8, 0.1)]])[0]["test_acc_mean"] == 0.8


def test_crate_table_macs_equal_the_flop_counter_of_the_crate_model():
    from crate_edu.experiments.crate_alpha_ablation import published_crate_table

    model = crate_edu.create_model("crate_tiny", depth=1).eval()
    model.prune_last_layer = False  # the formula counts every row of the last layer
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(torch.randn(1, 3, 224, 224))
    cfg = CRATEAlphaConfig(dim=384, depth=1, heads=6, patch_size=16, **ABLATION["CRATE block"])
    assert crate_alpha_macs(cfg)["total"] * 2 == counter.get_total_flops()
    rows = {r["model"]: r for r in published_crate_table()}
    # the published parameter counts, as the README's model table lists them
    assert [round(r["params_M"], 2) for r in rows.values()] == [6.09, 13.12, 22.80, 77.64]
    assert [r["top1"] for r in rows.values()] == [66.7, 69.2, 70.8, 71.3]
