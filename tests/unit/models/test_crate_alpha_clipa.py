"""crate_edu.models.crate_alpha_clipa against the official CLIPA code, and its loading by name.

The fixture ``official_crate_alpha_clipa_tiny_fixture.pt`` was made by the official
``clipa_model.CLIP`` (``tests/fixtures/make_crate_alpha_clipa_fixtures.py``): our model, given its
config and state dict, must give its image features, text features and logits to 1e-4 in float32
(measured: 0 on the fast path, < 1e-6 for the features and ~2e-5 for the ×100 logits on the
reference path). The full-size L/14 and H/14 key and shape lists come from the official classes
on the meta device (``official_state_dict_shapes.json``). Nothing is downloaded.
"""

from __future__ import annotations

import json
import math

import pytest
import torch

import crate_edu
from crate_edu.models import (
    MSSA,
    CRATEAlphaCLIPA,
    CRATEAlphaCLIPAConfig,
    OvercompleteISTA,
    model_spec,
    set_reference,
)
from crate_edu.models.crate_alpha_clipa import CLIPAOvercompleteISTA, MultiheadAttention
from crate_edu.weights import CheckpointError
from crate_edu.weights import official as W
from crate_edu.weights import structure as S
from tests.support.paths import FIXTURES
from tests.unit.models.twins import assert_same_forward_and_grads, twins

TOL = 1e-4


@pytest.fixture(scope="module")
def fixture() -> dict:
    return torch.load(FIXTURES / "official_crate_alpha_clipa_tiny_fixture.pt", weights_only=True)


def overrides(config: dict) -> dict:
    """``create_model`` overrides for the official ``CLIP(...)`` arguments of a fixture."""
    return dict(
        image_size=config["image_resolution"],
        patch_size=config["vision_patch_size"],
        vision_width=config["vision_width"],
        vision_depth=config["vision_layers"],
        vision_heads=config["vision_heads"],
        context_length=config["context_length"],
        vocab_size=config["vocab_size"],
        text_width=config["transformer_width"],
        text_depth=config["transformer_layers"],
        text_heads=config["transformer_heads"],
        embed_dim=config["embed_dim"],
    )


def official_model(fixture: dict, reference: bool = False) -> CRATEAlphaCLIPA:
    model = crate_edu.create_model(
        "crate_alpha_clipa_l14", **overrides(fixture["config"]), reference=reference
    )
    model.load_state_dict(fixture["state_dict"])  # by name, strict, no renaming
    return model.eval()


# ---------------------------------------------------------------- equality with the official code
@pytest.mark.parametrize("reference", [False, True])
def test_outputs_equal_the_official_code(fixture, reference):
    model = official_model(fixture, reference)
    with torch.no_grad():
        image = model.encode_image(fixture["images"])
        text = model.encode_text(fixture["tokens"])
        per_image, per_text = model(fixture["images"], fixture["tokens"])
    deltas = {
        "image features": (image - fixture["image_features"]).abs().max().item(),
        "text features": (text - fixture["text_features"]).abs().max().item(),
        "logits": (per_image - fixture["logits"]).abs().max().item(),
    }
    print(f"reference={reference}: max |Δ| " + ", ".join(f"{k} {v:.1e}" for k, v in deltas.items()))
    assert all(v <= TOL for v in deltas.values()), deltas
    assert torch.equal(per_text, per_image.T)
    assert per_image.shape == (len(fixture["images"]), len(fixture["tokens"]))


def test_state_dict_keys_and_order_are_the_official_ones(fixture):
    model = official_model(fixture)
    assert list(model.state_dict()) == list(fixture["state_dict"])
    assert "visual.transformer.resblocks.0.mlp.c_fc" in model.state_dict()  # D, under CLIP's MLP name
    block = model.visual.transformer.resblocks[0].mlp
    torch.testing.assert_close(block.D, fixture["state_dict"]["visual.transformer.resblocks.0.mlp.c_fc"])
    torch.testing.assert_close(block.D1, fixture["state_dict"]["visual.transformer.resblocks.0.mlp.c_proj"])


def test_the_published_slices_are_not_assumed_equal(fixture):
    """The fixture's q, k and v slices differ; equal slices would hide a model that used one."""
    w = fixture["state_dict"]["visual.transformer.resblocks.0.attn.in_proj_weight"]
    q, k, v = w.chunk(3)
    assert not torch.allclose(q, k) and not torch.allclose(k, v)


@pytest.mark.parametrize("key,name", [("crate_alpha_clipa/L14", "crate_alpha_clipa_l14"),
                                      ("crate_alpha_clipa/H14", "crate_alpha_clipa_h14")])  # fmt: skip
def test_full_size_keys_and_shapes_equal_the_official_ones(key, name):
    official = json.loads((FIXTURES / "official_state_dict_shapes.json").read_text())[key]
    ours = {k: list(v) for k, v in S.expected_shapes(name).items()}  # built on the meta device
    assert ours == official
    assert list(ours) == list(official)
    with torch.device("meta"):
        params = crate_edu.create_model(name).num_params()
    assert params == {"crate_alpha_clipa_l14": 640_165_889, "crate_alpha_clipa_h14": 967_866_369}[name]


def test_presets_are_the_published_configurations():
    l14, h14 = (crate_edu.model_config(f"crate_alpha_clipa_{s}") for s in ("l14", "h14"))
    assert (l14.vision_width, l14.vision_depth, l14.vision_heads) == (1024, 24, 16)
    assert (h14.vision_width, h14.vision_depth, h14.vision_heads) == (1280, 32, 16)
    assert h14.vision_width // h14.vision_heads == 80
    for cfg in (l14, h14):  # both use the "H" text tower
        assert (cfg.image_size, cfg.patch_size, cfg.embed_dim) == (224, 14, 1024)
        assert (cfg.text_width, cfg.text_depth, cfg.text_heads) == (1024, 24, 16)
        assert (cfg.context_length, cfg.vocab_size, cfg.fixed_logit_scale) == (32, 32000, 100.0)
        assert (cfg.overcomplete_ratio, cfg.eta, cfg.lambd) == (4, 0.1, 0.1)
    published = {n for n in crate_edu.list_models("crate_alpha_clipa_*") if model_spec(n).official}
    assert published == {"crate_alpha_clipa_l14", "crate_alpha_clipa_h14"}


# ----------------------------------------------------------------------------------- the blocks
def test_attention_fast_equals_reference():
    for bias in (False, True):
        fast, reference = twins(lambda ref, bias=bias: MultiheadAttention(16, 2, bias=bias, reference=ref))
        assert_same_forward_and_grads(fast, reference, torch.randn(3, 5, 16))


def test_attention_parts_for_analysis():
    torch.manual_seed(0)
    attn = MultiheadAttention(16, 2, bias=True)
    x = torch.randn(3, 5, 16)
    parts = attn.forward_parts(x)
    assert parts.attn.shape == (3, 2, 5, 5) and parts.proj.shape == (3, 2, 5, 8)
    torch.testing.assert_close(parts.attn.sum(-1), torch.ones(3, 2, 5))
    torch.testing.assert_close(parts.out, attn(x), atol=1e-6, rtol=1e-5)


def test_attention_with_equal_slices_and_no_bias_is_mssa():
    """The departure, measured: with W_q = W_k = W_v = U^T the official attention is MSSA."""
    torch.manual_seed(0)
    mha, mssa = MultiheadAttention(16, 4, bias=False), MSSA(16, 4, 4, out_bias=False)
    with torch.no_grad():
        mha.in_proj_weight.copy_(mssa.qkv.weight.repeat(3, 1))
        mha.out_proj.weight.copy_(mssa.to_out[0].weight)
    x = torch.randn(2, 7, 16)
    torch.testing.assert_close(mha(x), mssa(x), atol=1e-6, rtol=1e-5)
    with torch.no_grad():  # three different slices, as stored: no longer MSSA
        mha.in_proj_weight[:16].mul_(2.0)
    assert (mha(x) - mssa(x)).abs().max() > 1e-3


def test_sparse_coding_block_is_crate_alphas():
    torch.manual_seed(0)
    ours, theirs = CLIPAOvercompleteISTA(8), OvercompleteISTA(8)
    theirs.load_state_dict({"D": ours.D, "D1": ours.D1})
    x = torch.randn(2, 3, 8)
    torch.testing.assert_close(ours(x), theirs(x), atol=0, rtol=0)
    assert list(ours.state_dict()) == ["c_fc", "c_proj"]
    ours.load_state_dict({"c_fc": theirs.D * 2, "c_proj": theirs.D1})
    torch.testing.assert_close(ours.D, theirs.D * 2)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_model_fast_equals_reference_with_gradients(fixture, dtype):
    # The logits carry the fixed scale 100, so these gradients reach about 10^3: float32 rounding
    # (about 1e-7 of a sum's size) then differs between two orders of the same sums by ~1e-4, and
    # the tolerance is taken relative to each gradient's largest entry. In float64 the two paths
    # agree to 1e-12 of it: the same arithmetic, not merely close.
    fast, reference = (official_model(fixture, reference=r).to(dtype) for r in (False, True))
    for model in (fast, reference):
        per_image, _ = model(fixture["images"].to(dtype), fixture["tokens"])
        per_image.square().mean().backward()
    tolerance = {torch.float32: 2e-6, torch.float64: 1e-12}[dtype]
    checked = 0
    for (name, p1), p2 in zip(fast.named_parameters(), reference.parameters(), strict=True):
        if p1.grad is not None:
            scale = p2.grad.abs().max().item()
            torch.testing.assert_close(p1.grad, p2.grad, atol=tolerance * scale, rtol=0, msg=name)
            checked += 1
    assert checked == len(list(reference.parameters())) - 1  # every gradient but the fixed logit scale
    assert set_reference(fast) is fast and fast.visual.transformer.resblocks[0].mlp.reference


# ---------------------------------------------------------------------------------- a fresh model
def test_fresh_model_is_initialised_and_sensibly_scaled():
    torch.manual_seed(0)
    width = 32
    model = CRATEAlphaCLIPA(
        image_size=28, patch_size=14, vision_width=48, vision_depth=2, vision_heads=3,
        context_length=8, vocab_size=50, text_width=width, text_depth=2, text_heads=2, embed_dim=16,
    )  # fmt: skip
    for name, p in model.named_parameters():
        assert torch.isfinite(p).all(), name
        assert p.abs().max() < 10, name
    assert abs(model.positional_embedding.std().item() - 0.01) < 0.003  # officially torch.empty
    assert abs(model.text_projection.std().item() - width**-0.5) < 0.05  # officially torch.empty
    assert abs(model.visual.proj.std().item() - 48**-0.5) < 0.05  # officially N(0, 1)
    assert model.logit_scale.item() == pytest.approx(math.log(1 / 0.07))
    images, tokens = torch.randn(3, 3, 28, 28), torch.randint(0, 50, (4, 8))
    per_image, _ = model(images, tokens)
    assert torch.isfinite(per_image).all() and per_image.abs().max() <= 100 + 1e-3
    text = model.encode_text(tokens)
    assert 0.1 < text.norm(dim=-1).mean() < 10  # unit-scale features, not blown up or vanishing


def test_learned_logit_scale_when_not_fixed(fixture):
    model = official_model(fixture)
    fixed, _ = model(fixture["images"], fixture["tokens"])
    model.config = CRATEAlphaCLIPAConfig(**{**vars(model.config), "fixed_logit_scale": None})
    learned, _ = model(fixture["images"], fixture["tokens"])
    torch.testing.assert_close(learned, fixed * model.logit_scale.exp() / 100)


# ---------------------------------------------------------------------------------- bad configs
@pytest.mark.parametrize(
    "changes,kind,expected",
    [
        (dict(image_size=225), ValueError, "image_size 225 is not divisible by patch_size 14"),
        (dict(vision_heads=7), ValueError, "vision_width 1024 is not divisible by vision_heads 7"),
        (dict(text_heads=5), ValueError, "text_width 1024 is not divisible by text_heads 5"),
        (dict(vision_depth=0), ValueError, "vision_depth must be a positive integer"),
        (dict(vocab_size=1.5), TypeError, "vocab_size must be an integer"),
        (dict(eta=0.0), ValueError, "eta"),
        (dict(fixed_logit_scale=0.0), ValueError, "fixed_logit_scale must be positive"),
        (dict(fixed_logit_scale=float("inf")), ValueError, "fixed_logit_scale must be a finite"),
        (dict(reference=1), TypeError, "reference must be True or False"),
    ],
)
def test_bad_configs_are_one_line(changes, kind, expected):
    with pytest.raises(kind) as info:
        crate_edu.model_config("crate_alpha_clipa_l14", **changes)
    message = str(info.value)
    assert "\n" not in message and expected in message, message


def test_bad_inputs_are_one_line(fixture):
    model = official_model(fixture)
    tokens, images = fixture["tokens"], fixture["images"]
    cases = [
        (lambda: model.encode_text(tokens.float()), TypeError, "integer token ids"),
        (lambda: model.encode_text(tokens[:, :5]), ValueError, "shape (B, 8)"),
        (lambda: model.encode_text(tokens + 1000), ValueError, "token ids must be in [0, 64)"),
        (lambda: model.encode_text(tokens.tolist()), TypeError, "torch.Tensor"),
        (lambda: model.encode_image(images[:, :, :16]), ValueError, "was built for 24x24 images"),
        (lambda: model.encode_image(images.double()), TypeError, "float32"),
    ]
    for call, kind, expected in cases:
        with pytest.raises(kind) as info:
            call()
        message = str(info.value)
        assert "\n" not in message and expected in message, message


# -------------------------------------------------------------------------------------- loading
def test_load_official_by_name(tmp_path, fixture):
    path = tmp_path / "crate_alpha_CLIPA_tiny.pth"
    torch.save(fixture["state_dict"], path)
    model = crate_edu.load_official("crate_alpha_clipa_l14", path, **overrides(fixture["config"]))
    assert isinstance(model, CRATEAlphaCLIPA) and not model.training
    with torch.no_grad():
        delta = (model.encode_image(fixture["images"]) - fixture["image_features"]).abs().max()
    assert delta <= TOL
    assert W.get_official("crate_alpha_clipa_h14").model == "crate_alpha_clipa_h14"


def test_families_are_told_apart(fixture):
    assert S.detect_family(fixture["state_dict"]) == "crate_alpha_clipa"
    assert S.detect_family(S.expected_shapes("crate_alpha_l14")) == "crate_alpha"
    assert S.detect_family(S.expected_shapes("crate_alpha_clipa_h14")) == "crate_alpha_clipa"


def test_wrong_files_are_one_line_errors(tmp_path, fixture):
    cfg = overrides(fixture["config"])
    classifier = torch.load(FIXTURES / "official_crate_alpha_tiny_fixture.pt", weights_only=True)
    torch.save(classifier["state_dict"], tmp_path / "classifier.pth")
    torch.save(fixture["state_dict"], tmp_path / "clipa.pth")
    no_ln_bias = {k: v for k, v in fixture["state_dict"].items() if not ("ln_" in k and k.endswith(".bias"))}
    torch.save(no_ln_bias, tmp_path / "no_ln_bias.pth")  # as the official class saves on torch >= 2.1
    cases = [
        ("crate_alpha_clipa_l14", "classifier.pth", cfg, "this looks like a CRATE-α checkpoint"),
        ("crate_alpha_b16", "clipa.pth", {}, "this looks like a CRATE-α-CLIPA checkpoint"),
        ("crate_alpha_clipa_l14", "no_ln_bias.pth", cfg, "missing keys (10 of"),
        ("crate_alpha_clipa_l14", "clipa.pth", {}, "shape mismatches"),
    ]
    for name, file, kw, expected in cases:
        with pytest.raises(CheckpointError) as info:
            crate_edu.load_official(name, tmp_path / file, **kw)
        message = str(info.value)
        assert "\n" not in message and expected in message, message


def test_verify_checkpoint_checks_the_structure(tmp_path, fixture):
    path = tmp_path / "clipa.pth"
    torch.save(fixture["state_dict"], path)
    report = W.verify_checkpoint("crate_alpha_clipa_l14", path)  # the tiny file is not the published one
    assert not report["ok"] and report["missing"] and report["mismatched"] and not report["unexpected"]
    assert report["family"] == "crate_alpha_clipa" and report["num_expected"] == 492
