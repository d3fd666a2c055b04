"""Models and registry: official equality, parameter counts, overrides, intermediates, errors."""

import pytest
import torch

import crate_edu
from crate_edu.models import (
    CRATEAlphaLayer,
    CRATEDecoderLayer,
    CRATELayer,
    fast,
    patchify,
    set_reference,
    sincos_pos_embed_2d,
    unpatchify,
)
from tests.support.reference import fixture_model
from tests.unit.models.twins import ATOL, assert_same_forward_and_grads, twins

REQUIRED = [
    "crate_tiny", "crate_small", "crate_base", "crate_large",
    "crate_alpha_b16", "crate_alpha_l14",
    "crate_mae_tiny", "crate_mae_small", "crate_mae_base", "crate_mae_large",
    "vit_tiny", "vit_small",
]  # fmt: skip


# ------------------------------------------------------------------------ faithful to the official
@pytest.mark.parametrize("kind", ["crate", "crate_alpha"])
@pytest.mark.parametrize("reference", [False, True])
def test_classifier_matches_official_outputs(kind, reference):
    model, fx = fixture_model(kind, reference=reference)
    with torch.no_grad():
        logits = model(fx["input"])
    diff = (logits - fx["logits"]).abs().max().item()
    # The reference path does the official arithmetic in the official order: bit-for-bit here.
    assert diff <= (1e-6 if reference else 1e-4), diff


@pytest.mark.parametrize("reference", [False, True])
def test_mae_matches_official_outputs(reference):
    model, fx = fixture_model("crate_mae", reference=reference)
    with torch.no_grad():
        loss, pred, mask = model(fx["input"], mask_ratio=0.75, noise=fx["masking_noise"])
    assert torch.equal(mask, fx["mask"])
    assert (pred - fx["pred"]).abs().max().item() <= 1e-4
    assert abs(loss.item() - fx["loss"].item()) <= 1e-4


def test_mae_positions_are_the_official_sincos_table():
    _, fx = fixture_model("crate_mae")
    table = sincos_pos_embed_2d(64, 4, cls_token=True)
    torch.testing.assert_close(fx["state_dict"]["pos_embed"][0], table, atol=1e-6, rtol=0)
    torch.testing.assert_close(fx["state_dict"]["decoder_pos_embed"][0], table, atol=1e-6, rtol=0)


@pytest.mark.parametrize(
    "name,millions",
    [("crate_tiny", 6.09), ("crate_small", 13.12), ("crate_base", 22.80), ("crate_large", 77.64)],
)
def test_parameter_counts_equal_official(name, millions):
    with torch.device("meta"):
        model = crate_edu.create_model(name)
    assert round(model.num_params() / 1e6, 2) == millions


# ---------------------------------------------------------------------------------- the registry
#: The classifiers and the MAE models (the CRATE-α-CLIPA image–text models and the language models
#: have their own tests, in test_crate_alpha_clipa.py, test_crate_lm.py and test_gpt.py).
IMAGE_MODELS = crate_edu.list_models(task="classification") + crate_edu.list_models(
    task="masked-autoencoding"
)


def test_registry_has_required_and_small_image_presets():
    names = crate_edu.list_models()
    assert set(REQUIRED) <= set(names)
    for family in ("crate", "crate_alpha", "vit"):
        small = [n for n in crate_edu.list_models(f"{family}_*_cifar")]
        assert small, family
        assert all(crate_edu.model_config(n).image_size == 32 for n in small)
    assert crate_edu.list_models("crate_mae_*")[0].startswith("crate_mae_")


@pytest.mark.parametrize("name", IMAGE_MODELS)
def test_common_overrides_work_for_every_model(name):
    overrides = dict(image_size=32, patch_size=8, depth=1, pool="mean", num_classes=7)
    if name.startswith("crate_mae"):
        overrides["decoder_depth"] = 1
    model = crate_edu.create_model(name, **overrides).eval()
    cfg = model.config
    assert (cfg.image_size, cfg.patch_size, cfg.depth, cfg.pool, cfg.num_classes) == (32, 8, 1, "mean", 7)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        if name.startswith("crate_mae"):
            loss, pred, mask = model(x)
            assert pred.shape == (2, 16, 8 * 8 * 3) and mask.shape == (2, 16) and loss.ndim == 0
            assert model.classify(x).shape == (2, 7)
        else:
            assert model(x).shape == (2, 7)


def test_unknown_name_and_option_say_what_is_valid():
    with pytest.raises(ValueError, match="unknown model 'crate_tinny'.*did you mean crate_tiny"):
        crate_edu.create_model("crate_tinny")
    with pytest.raises(TypeError, match="no option.*'width'.*valid options:.*dim"):
        crate_edu.create_model("crate_tiny", width=10)


def test_reset_classifier_replaces_the_head():
    model = crate_edu.create_model("crate_nano_cifar", depth=1)
    model.reset_classifier(3)
    assert model.config.num_classes == 3
    assert model(torch.randn(1, 3, 32, 32)).shape == (1, 3)


# ------------------------------------------------------------------------------- intermediates
@pytest.mark.parametrize(
    "make",
    [
        lambda ref: CRATELayer(32, 4, 8, reference=ref),
        lambda ref: CRATEAlphaLayer(32, 4, 8, reference=ref),
        lambda ref: CRATEDecoderLayer(32, 4, 8, reference=ref),
    ],
    ids=["crate", "crate_alpha", "crate_mae_decoder"],
)
def test_layers_fast_equal_reference_and_trace_matches(make):
    fast_layer, reference = twins(make)
    x = torch.randn(2, 11, 32)
    assert_same_forward_and_grads(fast_layer, reference, x)
    with torch.no_grad():
        out, trace = fast_layer(x, return_trace=True)
    torch.testing.assert_close(out, fast_layer(x), atol=ATOL, rtol=1e-5)
    assert trace.proj.shape == (2, 4, 11, 8) and trace.attn.shape == (2, 4, 11, 11)
    assert trace.z_half.shape == trace.z_out.shape == (2, 11, 32)
    torch.testing.assert_close(trace.z_out, out)


@pytest.mark.parametrize("name", ["crate_nano_cifar", "crate_alpha_nano_cifar", "vit_nano_cifar"])
def test_intermediates_without_hooks(name):
    torch.manual_seed(0)
    model = crate_edu.create_model(name, depth=3).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        logits, traces = model.forward_intermediates(x)
        torch.testing.assert_close(logits, model(x), atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(traces[-1].z_out, model.forward_features(x), atol=1e-5, rtol=1e-5)
    assert len(traces) == 3
    heads, p = model.config.heads, model.config.head_dim
    for t in traces:
        assert t.proj.shape == (2, heads, 65, p) and t.attn.shape == (2, heads, 65, 65)
        torch.testing.assert_close(t.attn.sum(-1), torch.ones(2, heads, 65))
        assert t.z_half.shape == t.z_out.shape == (2, 65, model.config.dim)
    if name.startswith("crate_nano"):
        # proj is U_k^T LN(Z^ℓ): recompute it from the layer input of layer 2 (= output of layer 1)
        layer = model.transformer.layers[1]
        with torch.no_grad():
            expected = layer.mssa.forward_parts(layer[0].norm(traces[0].z_out)).proj
        torch.testing.assert_close(traces[1].proj, expected)


def test_mae_intermediates_and_masking_semantics():
    torch.manual_seed(0)
    model = crate_edu.create_model("crate_mae_nano_cifar", depth=2, decoder_depth=2).eval()
    x = torch.randn(3, 3, 32, 32)
    L = 64
    noise = torch.rand(3, L)
    with torch.no_grad():
        loss, pred, mask = model(x, mask_ratio=0.75, noise=noise)
        (loss2, pred2, mask2), traces = model.forward_intermediates(x, mask_ratio=0.75, noise=noise)
    torch.testing.assert_close(loss, loss2)
    torch.testing.assert_close(pred, pred2, atol=1e-5, rtol=1e-5)
    assert torch.equal(mask, mask2)
    assert len(traces["encoder"]) == 2 and len(traces["decoder"]) == 2
    assert mask.sum(1).tolist() == [48.0, 48.0, 48.0]  # 75 % of 64 removed
    # the removed patches are those with the largest noise (0 = keep, 1 = remove)
    largest = noise.argsort(1)[:, 16:]
    assert torch.equal(mask.gather(1, largest), torch.ones(3, 48))
    # no noise given: torch.rand(B, L) is drawn
    torch.manual_seed(7)
    with torch.no_grad():
        _, _, mask_a = model(x)
    torch.manual_seed(7)
    assert torch.equal(mask_a, model(x, noise=torch.rand(3, L))[2])
    # loss = MSE over masked patches only
    with torch.no_grad():
        per_patch = ((pred - patchify(x, 4)) ** 2).mean(-1)
    torch.testing.assert_close(loss, (per_patch * mask).sum() / mask.sum())


def test_patchify_roundtrip():
    x = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(unpatchify(patchify(x, 8), 8), x)
    # first patch, first pixel row: channels interleaved last, as the MAE reference lays them out
    torch.testing.assert_close(patchify(x, 8)[0, 0, :3], x[0, :, 0, 0])


@pytest.mark.parametrize("name", ["crate_nano_cifar", "crate_alpha_nano_cifar", "vit_nano_cifar"])
def test_models_fast_equal_reference_with_gradients(name):
    torch.manual_seed(0)
    fast_model = crate_edu.create_model(name, depth=2)
    reference = set_reference(crate_edu.create_model(name, depth=2), True)
    reference.load_state_dict(fast_model.state_dict())
    x = torch.randn(4, 3, 32, 32)
    y1, y2 = fast_model(x), reference(x)
    torch.testing.assert_close(y1, y2, atol=1e-5, rtol=1e-5)
    y1.square().sum().backward()
    y2.square().sum().backward()
    for (n, p1), p2 in zip(fast_model.named_parameters(), reference.parameters(), strict=True):
        torch.testing.assert_close(p1.grad, p2.grad, atol=1e-4, rtol=1e-4, msg=n)


@pytest.mark.parametrize("name", IMAGE_MODELS)
def test_every_preset_size_class_fast_equals_reference_with_gradients(name):
    """Each preset's width, heads and head size (depth 2, images of 2 × 2 patches to stay quick;
    for models with ISTA, enough images that its fast path folds, >= 2d tokens): the fast path
    (last layer pruned for classifiers) equals the reference one. Outputs in float32; outputs and
    every gradient in float64, where no ReLU input sits within rounding of zero (in float32 either
    path can flip one such ReLU and move a gradient entry by one token's share)."""
    torch.manual_seed(0)
    mae = "mae" in name
    cfg = crate_edu.create_model(name, depth=1, **({"decoder_depth": 1} if mae else {})).config
    size = 2 * cfg.patch_size
    kw = dict(depth=2, image_size=size, **({"decoder_depth": 2} if mae else {}))
    fast_model = crate_edu.create_model(name, **kw)
    reference = set_reference(crate_edu.create_model(name, **kw), True)
    reference.load_state_dict(fast_model.state_dict())
    if not mae:
        assert fast.prunes_last_layer(fast_model) and not fast.prunes_last_layer(reference)
    folds = name.startswith("crate_") and not name.startswith("crate_alpha")  # blocks with ISTA
    batch = 2 * cfg.dim // 5 + 1 if folds else 3  # 5 tokens an image ([CLS] and 4 patches)
    x, noise = torch.randn(batch, 3, size, size), torch.rand(batch, 4)

    def run(model, dtype):
        model.to(dtype)
        if not mae:
            y = model(x.to(dtype))
            return y, y.square().mean()
        loss, pred, _ = model(x.to(dtype), 0.5, noise.to(dtype))
        return pred, loss + pred.square().mean()  # the prediction at every patch, not only masked ones

    with torch.no_grad():
        torch.testing.assert_close(
            run(fast_model, torch.float32)[0], run(reference, torch.float32)[0], atol=1e-5, rtol=1e-5
        )
    (y1, loss1), (y2, loss2) = run(fast_model, torch.float64), run(reference, torch.float64)
    torch.testing.assert_close(y1, y2, atol=1e-10, rtol=1e-10)
    loss1.backward()
    loss2.backward()
    for (n, p1), p2 in zip(fast_model.named_parameters(), reference.parameters(), strict=True):
        torch.testing.assert_close(p1.grad, p2.grad, atol=1e-12, rtol=1e-8, msg=n)


# ---------------------------------------------------------------------------------- bad inputs
def test_image_size_not_divisible_by_patch_size():
    with pytest.raises(
        ValueError, match=r"image size 30 is not divisible by patch size 8.*patch_size in \[2, 3, 5"
    ):
        crate_edu.create_model("crate_tiny", image_size=30, patch_size=8)


def test_heads_must_divide_dim():
    with pytest.raises(ValueError, match="dim 100 is not divisible by heads 3"):
        crate_edu.create_model("crate_nano_cifar", dim=100, heads=3)


def test_bad_pool():
    with pytest.raises(ValueError, match="pool must be 'cls'"):
        crate_edu.create_model("vit_nano_cifar", pool="max")


@pytest.mark.parametrize(
    "name", ["crate_nano_cifar", "crate_alpha_nano_cifar", "vit_nano_cifar", "crate_mae_nano_cifar"]
)
def test_bad_images_get_clear_errors(name):
    model = crate_edu.create_model(name, depth=1, **({"decoder_depth": 1} if "mae" in name else {}))
    with pytest.raises(ValueError, match="expects 3 channels, got 1.*x.expand"):
        model(torch.randn(2, 1, 32, 32))
    with pytest.raises(TypeError, match="floating-point images, got dtype torch.uint8.*x.float"):
        model(torch.zeros(2, 3, 32, 32, dtype=torch.uint8))
    with pytest.raises(ValueError, match=r"shape \(B, C, H, W\).*unsqueeze\(0\)"):
        model(torch.randn(3, 32, 32))
    with pytest.raises(ValueError, match="built for 32x32 images, got 64x64.*image_size=64"):
        model(torch.randn(1, 3, 64, 64))
    with pytest.raises(TypeError, match="torch.Tensor"):
        model([[0.0]])


def test_mae_bad_noise_and_ratio():
    model = crate_edu.create_model("crate_mae_nano_cifar", depth=1, decoder_depth=1)
    x = torch.randn(2, 3, 32, 32)
    with pytest.raises(ValueError, match=r"noise must have shape \(B, L\) = \(2, 64\)"):
        model(x, noise=torch.rand(2, 10))
    with pytest.raises(ValueError, match=r"mask_ratio must be in \[0, 1\)"):
        model(x, mask_ratio=1.0)
    with pytest.raises(RuntimeError, match="no classification head.*num_classes"):
        model.classify(x)


@pytest.mark.parametrize(
    "name", ["crate_nano_cifar", "crate_alpha_nano_cifar", "vit_nano_cifar", "crate_mae_nano_cifar"]
)
def test_models_trace_into_one_graph_for_torch_compile(name):
    """torch.compile sees each model as one graph: no graph breaks (dynamo's own accounting)."""
    import torch._dynamo as dynamo

    dynamo.reset()
    model = crate_edu.create_model(name, depth=2, **({"decoder_depth": 1} if "mae" in name else {}))
    explanation = dynamo.explain(model)(torch.randn(4, 3, 32, 32))
    assert explanation.graph_break_count == 0, [str(r.reason) for r in explanation.break_reasons]
    assert explanation.graph_count == 1
