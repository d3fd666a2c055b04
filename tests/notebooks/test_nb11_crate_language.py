"""The numerical claims of notebook 11 (CRATE for language), as tests on small inputs."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import crate_edu
from crate_edu import coding_rate as cr
from crate_edu.evaluation import collect_activations, compare_interpretability, layerwise_measurements
from crate_edu.models import CausalMSSA, CRATELanguageModel, TiedOvercompleteISTA, set_reference
from crate_edu.text import CharTokenizer, build_text_dataset, load_corpus

F64 = torch.float64


@pytest.fixture
def tokens_and_subspaces():
    """§2's setting, smaller: orthonormal subspaces and tokens of norm about 1."""
    d, K, p, T = 8, 2, 4, 10
    gen = torch.Generator().manual_seed(0)
    U = cr.random_complete_split(d, K, p, generator=gen, dtype=F64)
    Z = torch.randn(T, d, generator=gen, dtype=F64) / math.sqrt(d)
    return Z, U


def test_causal_gradient_is_autograd_on_each_prefix(tokens_and_subspaces):
    Z, U = tokens_and_subspaces
    grads = []
    for t in range(len(Z)):
        z_t = Z[t].clone().requires_grad_(True)
        cr.compression_rate(torch.cat([Z[:t], z_t[None]]), U, 0.5).backward()
        grads.append(z_t.grad)
    torch.testing.assert_close(
        cr.causal_grad_compression_rate(Z, U, 0.5), torch.stack(grads), atol=1e-12, rtol=0
    )


def test_causal_step_is_mssa_step_on_each_prefix_and_the_gram_step_is_neumann(tokens_and_subspaces):
    Z, U = tokens_and_subspaces
    T = len(Z)
    prefix = torch.stack([cr.mssa_step(Z[: t + 1], U, 0.5, 0.1)[t] for t in range(T)])
    torch.testing.assert_close(cr.causal_mssa_step(Z, U, 0.5, 0.1), prefix, atol=1e-12, rtol=0)
    neumann = torch.stack(
        [Z[t] - 0.1 * cr.grad_compression_rate_neumann(Z[: t + 1], U, 0.5)[t] for t in range(T)]
    )
    gram = cr.causal_mssa_step(Z, U, 0.5, 0.1, membership="gram")
    torch.testing.assert_close(gram, neumann, atol=1e-12, rtol=0)


def test_first_position_is_scaled_by_one_plus_kappa_gamma_gamma_minus_one(tokens_and_subspaces):
    """§2 and exercise 1: at t = 0 the step grows z_0 when γ_0 > 1 (ε² < p), shrinks it when ε² > p,
    and climbs R^c there, while it descends at the end of the sequence."""
    Z, U = tokens_and_subspaces
    p, kappa = U.shape[-1], 0.1
    for eps, grows in ((0.5, True), (1.0, True), (3.0, False)):
        gamma_0 = p / eps**2
        step = cr.causal_mssa_step(Z, U, eps, kappa)
        torch.testing.assert_close(step[0], (1 + kappa * gamma_0 * (gamma_0 - 1)) * Z[0], atol=1e-12, rtol=0)
        assert (step[0].norm() > Z[0].norm()) == grows
    step = cr.causal_mssa_step(Z, U, 0.5, kappa)
    cos = F.cosine_similarity(step - Z, -cr.causal_grad_compression_rate(Z, U, 0.5), dim=-1)
    assert cos[0] < 0 < cos[-1]


def test_block_with_tied_output_map_is_the_derived_causal_mssa_over_gamma(tokens_and_subspaces):
    Z, U = tokens_and_subspaces
    K, d, p = U.shape
    block = CausalMSSA(d, K, reference=True)
    with torch.no_grad():
        block.c_attn.weight.copy_(U.transpose(1, 2).reshape(K * p, d))
        block.c_proj.weight.copy_(U.permute(1, 0, 2).reshape(d, K * p))
        block.c_proj.bias.zero_()
        out = block(Z.float()[None])[0].double()
    gamma = cr.prefix_gamma(len(Z), p, 0.5, dtype=F64)[:, None]
    torch.testing.assert_close(out, cr.causal_mssa(Z, U, 0.5, tau=p**-0.5) / gamma, atol=1e-6, rtol=0)


def test_exercise_3_no_gradient_flows_from_later_inputs(tokens_and_subspaces):
    Z, _ = tokens_and_subspaces
    torch.manual_seed(0)
    block = CausalMSSA(Z.shape[1], 2, reference=True)
    x = Z.float()[None].clone().requires_grad_(True)
    block(x)[0, 4].sum().backward()
    assert x.grad[0, 5:].abs().max() == 0 and x.grad[0, :5].abs().max() > 0


def test_causality_of_a_whole_model_on_both_paths_and_fast_equals_reference():
    torch.manual_seed(0)
    fast = CRATELanguageModel(vocab_size=20, block_size=16, dim=32, depth=2, heads=4).eval()
    ref = CRATELanguageModel(vocab_size=20, block_size=16, dim=32, depth=2, heads=4).eval()
    ref.load_state_dict(fast.state_dict())
    set_reference(ref)
    idx = torch.randint(0, 20, (2, 16))
    changed = idx.clone()
    changed[:, 9:] = (changed[:, 9:] + 1) % 20
    with torch.no_grad():
        for model in (fast, ref):
            before, after = model(idx), model(changed)
            torch.testing.assert_close(after[:, :9], before[:, :9], atol=1e-6, rtol=0)
            assert (after[:, 9:] - before[:, 9:]).abs().max() > 1e-3
        torch.testing.assert_close(fast(idx), ref(idx), atol=1e-5, rtol=0)


def test_overcomplete_block_is_two_ista_steps_and_the_objective_decreases():
    torch.manual_seed(0)
    block = TiedOvercompleteISTA(16, reference=True).double()
    v = F.layer_norm(torch.randn(3, 8, 16, dtype=F64), (16,))
    D = block.weight.detach().T
    z = torch.zeros(3, 8, 64, dtype=F64)
    objective = [cr.lasso_objective(z, v, D, 0.1).sum().item()]
    for _ in range(2):
        z = cr.ista_step(z, v, D, 0.1, 0.1)
        objective.append(cr.lasso_objective(z, v, D, 0.1).sum().item())
    with torch.no_grad():
        codes, out = block.forward_parts(v)
    torch.testing.assert_close(codes, z, atol=1e-12, rtol=0)
    torch.testing.assert_close(out, z @ D.T, atol=1e-12, rtol=0)
    assert objective[0] > objective[1] > objective[2]


def test_the_published_model_on_the_meta_device():
    with torch.device("meta"):
        big = crate_edu.create_model("crate_lm_12l")
    assert big.num_params() == 81_934_848
    assert big.config.code_width == 3072
    shapes = {n: tuple(p.shape) for n, p in big.named_parameters()}
    assert shapes["transformer.h.0.ista.weight"] == (3072, 768)
    assert shapes["transformer.wte.weight"] == (50304, 768)


def test_character_frequency_baseline_is_between_zero_and_uniform():
    """§1's baselines: the add-one-smoothed character frequencies of the training text cost fewer
    bits on the validation text than a uniform guess."""
    tok = CharTokenizer()
    text = load_corpus("python-docs")
    cut = int(0.9 * len(text))
    counts = np.bincount(tok.encode(text[:cut]), minlength=tok.vocab_size) + 1.0
    bits = float(-np.log2((counts / counts.sum())[np.array(tok.encode(text[cut:]))]).mean())
    assert 3.0 < bits < math.log2(tok.vocab_size)


# ---------------------------------------------------------------------------------------------
# the shipped models (§4 to §7)
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def shipped():
    crate_lm, crate_info = crate_edu.load_tutorial_model("python-docs-crate-lm")
    gpt, gpt_info = crate_edu.load_tutorial_model("python-docs-gpt")
    val = build_text_dataset("python-docs", "val")
    x = torch.stack([val[i][0] for i in range(4)])
    y = torch.stack([val[i][1] for i in range(4)])
    return {"CRATE-LM": (crate_lm, crate_info), "GPT": (gpt, gpt_info)}, x, y


def test_shipped_models_share_the_recipe_and_beat_character_frequencies(shipped):
    models, x, y = shipped
    same = ("dataset", "tokenizer", "epochs", "batch_size", "optimizer", "lr", "weight_decay", "seed")
    (_, a), (_, b) = models.values()
    assert all(a.metadata["train_config"][k] == b.metadata["train_config"][k] for k in same)
    for model, _ in models.values():
        with torch.no_grad():
            bits = F.cross_entropy(model(x).flatten(0, 1), y.flatten()).item() / math.log(2)
        assert bits < 4.0  # the character frequencies cost about 4.7 bits/char


def test_shipped_crate_codes_are_two_ista_steps(shipped):
    models, x, _ = shipped
    model = models["CRATE-LM"][0]
    with torch.no_grad():
        _, traces = model.forward_trace(x[:1])
        for layer, trace in zip(model.transformer.h, traces, strict=True):
            v = layer.prenorm_2(trace.z_half).double()
            D = layer.ista.weight.double().T
            z = cr.ista_step(cr.ista_step(torch.zeros_like(trace.codes, dtype=F64), v, D), v, D)
            torch.testing.assert_close(trace.codes.double(), z, atol=1e-4, rtol=0)


def test_generation_is_reproducible_with_a_seeded_generator(shipped):
    models, x, _ = shipped
    model = models["CRATE-LM"][0]
    runs = [
        model.generate(x[:1, :8], 12, temperature=0.8, top_k=10, generator=torch.Generator().manual_seed(0))
        for _ in range(2)
    ]
    assert torch.equal(runs[0], runs[1]) and runs[0].shape == (1, 20)


def test_measurements_and_comparison_run_on_both_models(shipped):
    models, x, _ = shipped
    tok = CharTokenizer()
    measured = {name: layerwise_measurements(m, x) for name, (m, _) in models.items()}
    for m in measured.values():
        assert m.depth == 4 and all(0 < f < 1 for f in m.nonzero_mean)
    acts = {name: collect_activations(m, x) for name, (m, _) in models.items()}
    comparison = compare_interpretability(acts["CRATE-LM"], acts["GPT"], tok, names=("CRATE-LM", "GPT"))
    for name in comparison.names:
        overall = comparison.overall(name)
        assert -0.1 < overall["score_mean"] <= 1.0
