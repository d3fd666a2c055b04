"""crate_edu.models.crate_lm against the official CRATE-LM code, its fast path, causality, generation.

The fixture ``official_crate_lm_tiny_fixture.pt`` was made by the official ``crate_overcomplete.py``
(CRATE-LM) and ``crate.py`` (CRATE's complete ISTA block) with ``tests/fixtures/make_crate_lm_fixtures.py``:
our model, given their config and state dict, must give their logits at every position and the
codes their ``ista.relu`` hooks read, to 1e-4 in float32 (measured: about 1e-6 on either path, 0
for crate.py on the reference path). The full-size 12-layer key and shape list comes from the
official class on the meta device (``official_crate_lm_state_dict_shapes.json``).
"""

from __future__ import annotations

import json

import pytest
import torch

import crate_edu
from crate_edu.models import (
    CausalMSSA,
    CRATELanguageModel,
    CRATELMConfig,
    TiedOvercompleteISTA,
    create_model,
    fast,
    list_models,
    model_spec,
    set_attention_kernel,
    set_reference,
)
from tests.support.paths import FIXTURES
from tests.unit.models.lm_fixture import official_state_dict, sizes
from tests.unit.models.twins import assert_same_forward_and_grads, twins

TOL = 1e-4


@pytest.fixture(scope="module")
def fixture() -> dict:
    return torch.load(FIXTURES / "official_crate_lm_tiny_fixture.pt", weights_only=True)


def official_model(case: dict, kind: str, reference: bool = False) -> CRATELanguageModel:
    complete = kind == "crate"
    model = CRATELanguageModel(
        **sizes(case["config"]),
        ista="complete" if complete else "overcomplete",
        final_norm=not complete,
        reference=reference,
    )
    model.load_state_dict(official_state_dict(case))  # strict, by name, no renaming
    return model.eval()


def tiny(reference: bool = False, **kw) -> CRATELanguageModel:
    cfg = dict(vocab_size=23, block_size=12, dim=16, depth=2, heads=2, reference=reference)
    return CRATELanguageModel(**{**cfg, **kw})


# ---------------------------------------------------------------- equality with the official code
@pytest.mark.parametrize("kind", ["crate_overcomplete", "crate"])
@pytest.mark.parametrize("reference", [False, True])
def test_logits_and_codes_equal_the_official_code(fixture, kind, reference):
    case = fixture[kind]
    model = official_model(case, kind, reference)
    with torch.no_grad():
        logits = model(case["idx"])
        short = model(case["idx_short"])
        traced, traces = model.forward_trace(case["idx"])
    deltas = {
        "logits": (logits - case["logits"]).abs().max().item(),
        "shorter context": (short - case["logits_short"]).abs().max().item(),
        "trace logits": (traced - case["logits"]).abs().max().item(),
        "codes": max((t.codes - c).abs().max().item() for t, c in zip(traces, case["codes"], strict=True)),
    }
    print(f"{kind}, reference={reference}: max |Δ| " + ", ".join(f"{k} {v:.1e}" for k, v in deltas.items()))
    assert all(v <= TOL for v in deltas.values()), deltas
    assert logits.shape == case["logits"].shape == (*case["idx"].shape, case["config"]["vocab_size"])
    loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1), case["targets"].flatten(), ignore_index=-1)
    assert abs(loss.item() - case["loss"].item()) <= TOL  # the official loss, from our logits


def test_codes_are_the_second_steps_sparse_code(fixture):
    case = fixture["crate_overcomplete"]
    model = official_model(case, "crate_overcomplete")
    with torch.no_grad():
        _, traces = model.forward_trace(case["idx"])
    d = case["config"]["n_embd"]
    for trace in traces:
        assert trace.codes.shape == (*case["idx"].shape, 4 * d) and (trace.codes >= 0).all()
        assert 0 < (trace.codes > 0).float().mean() < 1  # sparse but not empty
    for trace, layer in zip(traces, model.transformer.h, strict=True):  # the stream is the decoded code
        torch.testing.assert_close(trace.z_out, trace.codes @ layer.ista.weight, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("kind", ["crate_overcomplete", "crate"])
def test_state_dict_keys_and_order_are_the_official_ones(fixture, kind):
    case = fixture[kind]
    model = official_model(case, kind)
    assert list(model.state_dict()) == list(official_state_dict(case))
    assert model.transformer.wte.weight is model.lm_head.weight  # tied, as officially


def test_full_size_keys_and_shapes_equal_the_official_ones():
    official = json.loads((FIXTURES / "official_crate_lm_state_dict_shapes.json").read_text())["crate_lm/12l"]
    with torch.device("meta"):
        model = create_model("crate_lm_12l")
    ours = {k: list(v.shape) for k, v in model.state_dict().items()}
    assert list(ours.items()) == list(official.items())
    assert len(ours) == 101
    assert model.num_params() == 81_934_848  # unique: the tied embedding once (the notes' §7.3)


def test_presets():
    assert set(list_models(task="language")) == {"crate_lm_12l", "gpt_lm_12l", "crate_lm_char", "gpt_lm_char"}
    assert not set(list_models(task="language")) & set(list_models(task="classification"))
    assert "crate_small" in list_models(task="classification")
    assert model_spec("crate_lm_12l").task == "language" and model_spec("crate_lm_12l").official
    cfg = crate_edu.model_config("crate_lm_12l")
    assert (cfg.vocab_size, cfg.block_size, cfg.dim, cfg.depth, cfg.heads) == (50304, 1024, 768, 12, 12)
    assert (cfg.ista, cfg.overcomplete_ratio, cfg.eta, cfg.lambd, cfg.final_norm) == (
        "overcomplete",
        4,
        0.1,
        0.1,
        True,
    )
    char = crate_edu.model_config("crate_lm_char")
    assert (char.vocab_size, char.block_size, char.dim, char.depth, char.heads) == (98, 128, 128, 4, 4)
    assert create_model("crate_lm_char", vocab_size=256).lm_head.weight.shape == (256, 128)
    with pytest.raises(ValueError, match="task must be one of"):
        list_models(task="lm")


# --------------------------------------------------------------------------- fast == reference
@pytest.mark.parametrize("ista", ["overcomplete", "complete"])
@pytest.mark.parametrize("kernel", ["auto", "shared_qkv"])
@pytest.mark.parametrize("dtype,atol", [(torch.float64, 1e-10), (torch.float32, 2e-5)])
def test_model_fast_equals_reference_values_and_grads(ista, kernel, dtype, atol):
    fast_model, reference = twins(lambda ref: tiny(ref, ista=ista).to(dtype))
    set_attention_kernel(fast_model, kernel)
    idx = torch.randint(0, 23, (3, 12), generator=torch.Generator().manual_seed(1))
    y1, y2 = fast_model(idx), reference(idx)
    torch.testing.assert_close(y1, y2, atol=atol, rtol=atol)
    g = torch.randn_like(y1)
    (y1 * g).sum().backward()
    (y2 * g).sum().backward()
    for (name, p1), (_, p2) in zip(fast_model.named_parameters(), reference.named_parameters(), strict=True):
        torch.testing.assert_close(p1.grad, p2.grad, atol=atol, rtol=atol, msg=f"gradient of {name}")


@pytest.mark.parametrize("kernel", ["shared_qkv", "sdpa"])
def test_causal_mssa_fast_equals_reference(kernel):
    fast_block, reference = twins(lambda ref: CausalMSSA(16, 4, reference=ref, kernel=kernel).double())
    assert_same_forward_and_grads(
        fast_block, reference, torch.randn(3, 9, 16, dtype=torch.float64), atol=1e-10
    )
    fast_block, reference = twins(lambda ref: CausalMSSA(16, 4, reference=ref, kernel=kernel))
    assert_same_forward_and_grads(fast_block, reference, torch.randn(3, 9, 16))


def test_tied_overcomplete_ista_fast_equals_reference():
    fast_block, reference = twins(lambda ref: TiedOvercompleteISTA(16, reference=ref).double())
    x = torch.randn(3, 7, 16, dtype=torch.float64)
    assert_same_forward_and_grads(fast_block, reference, x, atol=1e-10)
    codes_fast, codes_ref = fast_block.forward_parts(x).codes, reference.forward_parts(x).codes
    torch.testing.assert_close(codes_fast, codes_ref, atol=1e-12, rtol=1e-12)
    fast_block, reference = twins(lambda ref: TiedOvercompleteISTA(16, reference=ref))
    assert_same_forward_and_grads(fast_block, reference, torch.randn(3, 7, 16))


@pytest.mark.parametrize("tokens", [6, 300])  # short: flattened blocks; long: per-batch head blocks
def test_causal_shared_qkv_kernel_equals_sdpa(tokens):
    w = torch.randn(2, 3, tokens, 4, dtype=torch.float64)
    assert fast._blocks(2, 3, tokens, 8)[0] is (tokens == 6)
    w1, w2 = w.clone().requires_grad_(True), w.clone().requires_grad_(True)
    y1 = fast.shared_qkv_attention(w1, 0.5, causal=True)
    y2 = torch.nn.functional.scaled_dot_product_attention(w2, w2, w2, scale=0.5, is_causal=True)
    torch.testing.assert_close(y1, y2, atol=1e-12, rtol=1e-10)
    g = torch.randn_like(y1)
    (y1 * g).sum().backward()
    (y2 * g).sum().backward()
    torch.testing.assert_close(w1.grad, w2.grad, atol=1e-12, rtol=1e-10)
    with torch.no_grad():  # evaluation keeps no probabilities; the same numbers
        torch.testing.assert_close(fast.shared_qkv_attention(w, 0.5, causal=True), y2.detach())
    assert torch.autograd.gradcheck(
        lambda v: fast.shared_qkv_attention(v, 0.5, causal=True),
        (w[:1, :1, :5].clone().requires_grad_(True),),
    )


def test_auto_takes_sdpa_for_causal_attention():
    w = torch.randn(1, 2, 5, 4)
    assert fast._resolve_kernel("auto", w, 0.0, causal=True) == "sdpa"
    assert fast._resolve_kernel("auto", w, 0.0) == "shared_qkv"  # the vision models keep theirs


def test_bf16_autocast_takes_sdpa_and_agrees():
    torch.manual_seed(0)
    model = tiny().eval()
    idx = torch.randint(0, 23, (2, 12))
    with torch.no_grad():
        exact = model(idx)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = model(idx)
    assert (low.float() - exact).abs().max() < 0.1


# ------------------------------------------------------------------------------------ causality
@pytest.mark.parametrize("ista", ["overcomplete", "complete"])
@pytest.mark.parametrize("path", ["reference", "shared_qkv", "sdpa"])
def test_output_at_t_ignores_later_tokens(ista, path):
    torch.manual_seed(0)
    model = tiny(path == "reference", ista=ista).eval()
    if path != "reference":
        set_attention_kernel(model, path)
    gen = torch.Generator().manual_seed(3)
    idx = torch.randint(0, 23, (2, 12), generator=gen)
    with torch.no_grad():
        logits = model(idx)
        for t in (0, 5, 10):
            changed = idx.clone()
            changed[:, t + 1 :] = torch.randint(0, 23, changed[:, t + 1 :].shape, generator=gen)
            other = model(changed)
            torch.testing.assert_close(other[:, : t + 1], logits[:, : t + 1], atol=1e-6, rtol=1e-6)
            assert (other[:, t + 1 :] - logits[:, t + 1 :]).abs().max() > 1e-3  # later rows do change
        _, traces = model.forward_trace(idx)
    for trace in traces:
        assert torch.all(trace.attn.triu(1) == 0)
        torch.testing.assert_close(trace.attn.sum(-1), torch.ones(2, 2, 12))


def test_gradient_of_position_t_reaches_no_later_embedding():
    torch.manual_seed(0)
    model = tiny()
    emb = model.transformer.wte(torch.randint(0, 23, (1, 12))).detach().requires_grad_(True)
    x = emb + model.transformer.wpe.weight[:12]
    for layer in model.transformer.h:
        x = layer(x)
    x[0, 4].sum().backward()
    assert emb.grad[0, 5:].abs().max() == 0 and emb.grad[0, :5].abs().max() > 0


# ----------------------------------------------------------------------------------- generation
def test_generate_is_reproducible_and_greedy_with_top_k_1():
    torch.manual_seed(0)
    model = tiny().eval()
    prompt = torch.randint(0, 23, (2, 4))
    a = model.generate(prompt, 20, generator=torch.Generator().manual_seed(7))
    b = model.generate(prompt, 20, generator=torch.Generator().manual_seed(7))
    assert (
        a.shape == (2, 24) and a.dtype == torch.long and torch.equal(a, b) and torch.equal(a[:, :4], prompt)
    )
    assert not a.requires_grad
    greedy = prompt
    with torch.no_grad():
        for _ in range(20):  # argmax by hand, cropping to the last block_size tokens
            greedy = torch.cat([greedy, model(greedy[:, -12:])[:, -1].argmax(-1, keepdim=True)], dim=1)
    assert torch.equal(
        model.generate(prompt, 20, top_k=1, generator=torch.Generator().manual_seed(1)), greedy
    )
    cold = model.generate(prompt, 20, temperature=1e-4, generator=torch.Generator().manual_seed(2))
    assert torch.equal(cold, greedy)  # a temperature near 0 is greedy too
    assert torch.equal(model.generate(prompt, 0), prompt)


def test_generate_samples_follow_temperature_and_top_k():
    torch.manual_seed(0)
    model = tiny().eval()
    prompt = torch.zeros(400, 1, dtype=torch.long)
    gen = torch.Generator().manual_seed(0)
    hot = model.generate(prompt, 1, temperature=100.0, generator=gen)[:, 1]
    top3 = model.generate(prompt, 1, top_k=3, generator=gen)[:, 1]
    with torch.no_grad():
        best3 = set(model(prompt[:1])[0, -1].topk(3).indices.tolist())
    assert set(top3.tolist()) <= best3
    assert len(set(hot.tolist())) > 15  # near-uniform over the 23 ids


# ------------------------------------------------------------------------------------ bad input
@pytest.mark.parametrize(
    "idx,error,match",
    [
        (torch.zeros(2, 5), TypeError, r"integer token ids.*float32.*idx.long\(\)"),
        (torch.zeros(5, dtype=torch.long), ValueError, r"shape \(B, T\).*unsqueeze\(0\)"),
        (torch.zeros(2, 13, dtype=torch.long), ValueError, r"block_size=12 tokens, got 13.*idx\[:, -12:\]"),
        (torch.full((2, 3), 23), ValueError, r"vocabulary of 23 ids \(0 .. 22\), got ids from 23 to 23"),
        (torch.full((2, 3), -1), ValueError, r"got ids from -1"),
        (torch.zeros(2, 0, dtype=torch.long), ValueError, r"at least one token"),
        ([[1, 2]], TypeError, r"torch.Tensor of token ids.*torch.tensor"),
    ],
)
def test_bad_tokens_are_one_line_errors(idx, error, match):
    model = tiny()
    with pytest.raises(error, match=match) as info:
        model(idx)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(heads=3), r"dim 16 is not divisible by heads 3; choose heads in \[1, 2, 4, 8, 16\]"),
        (dict(ista="sparse"), r"ista must be 'overcomplete'"),
        (dict(vocab_size=0), r"vocab_size must be a positive integer"),
        (dict(block_size=2.5), r"block_size must be an integer"),
        (dict(eta=0.0), r"eta"),
        (dict(dropout=1.0), r"dropout must be in \[0, 1\)"),
        (dict(final_norm="yes"), r"final_norm must be True or False"),
        (dict(overcomplete_ratio=0), r"overcomplete_ratio must be a positive integer"),
    ],
)
def test_bad_config_is_a_one_line_error(kwargs, match):
    with pytest.raises((ValueError, TypeError), match=match) as info:
        CRATELMConfig(**{**dict(vocab_size=23, block_size=12, dim=16, depth=2, heads=2), **kwargs})
    assert "\n" not in str(info.value)
    with pytest.raises((ValueError, TypeError), match=match):
        create_model("crate_lm_char", **{"dim": 16, **kwargs})


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(max_new_tokens=-1), r"max_new_tokens must be an integer of at least 0"),
        (dict(temperature=0.0), r"temperature must be positive"),
        (dict(temperature=float("nan")), r"temperature must be a finite number"),
        (dict(top_k=0), r"top_k must be a positive integer"),
        (dict(generator=7), r"generator must be a torch.Generator"),
    ],
)
def test_bad_generate_arguments_are_one_line_errors(kwargs, match):
    model = tiny()
    with pytest.raises((ValueError, TypeError), match=match) as info:
        model.generate(torch.zeros(1, 2, dtype=torch.long), **{"max_new_tokens": 2, **kwargs})
    assert "\n" not in str(info.value)


def test_long_prompts_are_cropped_and_set_reference_switches_every_block():
    model = tiny().eval()
    out = model.generate(torch.zeros(1, 30, dtype=torch.long), 2, top_k=1)
    assert out.shape == (1, 32)
    set_reference(model)
    assert all(m.reference for m in model.modules() if hasattr(m, "reference"))
    assert sum(hasattr(m, "reference") for m in model.modules()) == 4  # attention and ISTA per layer
