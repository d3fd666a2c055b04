"""crate_edu.models.gpt, the GPT baseline, against the official crate-lm ``gpt.py``.

The fixture ``official_crate_lm_tiny_fixture.pt`` holds the official ``gpt.GPT`` at a tiny
random-weight configuration with and without biases (``tests/fixtures/make_crate_lm_fixtures.py``):
our model must give its logits at every position and the hidden units its ``mlp.relu`` hooks read,
to 1e-4 in float32 (measured: 0 on the fast path, about 2e-6 on the reference path).
"""

from __future__ import annotations

import json
import math

import pytest
import torch

from crate_edu.models import GPT, GPTMLP, GPTConfig, create_model, model_config, model_spec
from tests.support.paths import FIXTURES
from tests.unit.models.lm_fixture import sizes

TOL = 1e-4


@pytest.fixture(scope="module")
def fixture() -> dict:
    return torch.load(FIXTURES / "official_crate_lm_tiny_fixture.pt", weights_only=True)


def official_model(case: dict, reference: bool = False) -> GPT:
    model = GPT(**sizes(case["config"]), bias=case["config"]["bias"], reference=reference)
    model.load_state_dict(case["state_dict"])  # strict, by name
    return model.eval()


def tiny(reference: bool = False, **kw) -> GPT:
    return GPT(**{**dict(vocab_size=23, block_size=12, dim=16, depth=2, heads=2, reference=reference), **kw})


@pytest.mark.parametrize("kind", ["gpt", "gpt_nobias"])
@pytest.mark.parametrize("reference", [False, True])
def test_logits_and_hidden_units_equal_the_official_code(fixture, kind, reference):
    case = fixture[kind]
    model = official_model(case, reference)
    with torch.no_grad():
        logits = model(case["idx"])
        short = model(case["idx_short"])
        _, traces = model.forward_trace(case["idx"])
    deltas = {
        "logits": (logits - case["logits"]).abs().max().item(),
        "shorter context": (short - case["logits_short"]).abs().max().item(),
        "hidden units": max(
            (t.codes - c).abs().max().item() for t, c in zip(traces, case["codes"], strict=True)
        ),
    }
    print(f"{kind}, reference={reference}: max |Δ| " + ", ".join(f"{k} {v:.1e}" for k, v in deltas.items()))
    assert all(v <= TOL for v in deltas.values()), deltas
    assert list(model.state_dict()) == list(case["state_dict"])
    d = case["config"]["n_embd"]
    assert all(t.codes.shape == (*case["idx"].shape, 4 * d) and (t.codes >= 0).all() for t in traces)


def test_full_size_keys_shapes_and_parameters():
    official = json.loads((FIXTURES / "official_crate_lm_state_dict_shapes.json").read_text())["gpt_lm/12l"]
    with torch.device("meta"):
        model = create_model("gpt_lm_12l")
    assert list({k: list(v.shape) for k, v in model.state_dict().items()}.items()) == list(official.items())
    assert model.num_params() == 124_373_760  # GPT-2 small's widths, no biases, vocabulary 50304
    assert model_spec("gpt_lm_12l").task == "language"
    assert model_config("gpt_lm_char").bias is False and model_config("gpt_lm_char").dim == 128


@pytest.mark.parametrize("bias", [True, False])
def test_fast_equals_reference_values_and_grads(bias):
    for dtype, atol in ((torch.float64, 1e-10), (torch.float32, 2e-5)):
        torch.manual_seed(0)
        fast_model = tiny(bias=bias).to(dtype)
        reference = tiny(True, bias=bias).to(dtype)
        reference.load_state_dict(fast_model.state_dict())
        idx = torch.randint(0, 23, (3, 12))
        y1, y2 = fast_model(idx), reference(idx)
        torch.testing.assert_close(y1, y2, atol=atol, rtol=atol)
        g = torch.randn_like(y1)
        (y1 * g).sum().backward()
        (y2 * g).sum().backward()
        for (name, p1), (_, p2) in zip(
            fast_model.named_parameters(), reference.named_parameters(), strict=True
        ):
            torch.testing.assert_close(p1.grad, p2.grad, atol=atol, rtol=atol, msg=f"gradient of {name}")


@pytest.mark.parametrize("reference", [False, True])
def test_output_at_t_ignores_later_tokens(reference):
    torch.manual_seed(0)
    model = tiny(reference).eval()
    idx = torch.randint(0, 23, (2, 12))
    with torch.no_grad():
        logits = model(idx)
        for t in (0, 6):
            changed = idx.clone()
            changed[:, t + 1 :] = (changed[:, t + 1 :] + 1) % 23
            other = model(changed)
            torch.testing.assert_close(other[:, : t + 1], logits[:, : t + 1], atol=1e-6, rtol=1e-6)
            assert (other[:, t + 1 :] - logits[:, t + 1 :]).abs().max() > 1e-3
        _, traces = model.forward_trace(idx)
    assert all(torch.all(t.attn.triu(1) == 0) for t in traces)


def test_generate_greedy_and_reproducible():
    torch.manual_seed(0)
    model = tiny().eval()
    prompt = torch.randint(0, 23, (2, 3))
    a = model.generate(prompt, 8, generator=torch.Generator().manual_seed(5))
    assert torch.equal(a, model.generate(prompt, 8, generator=torch.Generator().manual_seed(5)))
    greedy = model.generate(prompt, 8, top_k=1)
    with torch.no_grad():
        assert torch.equal(greedy[:, 3], model(prompt)[:, -1].argmax(-1))


def test_gelu_is_the_official_new_gelu():
    """``activation='gelu'``: GPT-2's tanh approximation, the official file's ``new_gelu``."""
    mlp = GPTMLP(8, activation="gelu")
    x = torch.randn(4, 8)
    pre = mlp.c_fc(x)
    new_gelu = (
        0.5 * pre * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (pre + 0.044715 * torch.pow(pre, 3.0))))
    )
    torch.testing.assert_close(mlp.hidden(x), new_gelu)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(activation="swish"), r"activation must be one of relu, gelu, got 'swish'"),
        (dict(mlp_ratio=0), r"mlp_ratio must be a positive integer"),
        (dict(bias=1), r"bias must be True or False"),
        (dict(heads=5), r"dim 16 is not divisible by heads 5"),
    ],
)
def test_bad_config_is_a_one_line_error(kwargs, match):
    with pytest.raises((ValueError, TypeError), match=match) as info:
        GPTConfig(**{**dict(vocab_size=23, block_size=12, dim=16, depth=2, heads=2), **kwargs})
    assert "\n" not in str(info.value)


def test_too_long_input_is_a_one_line_error():
    with pytest.raises(ValueError, match=r"block_size=12 tokens, got 20"):
        tiny()(torch.zeros(1, 20, dtype=torch.long))
