"""crate_edu.evaluation.flops: the one FLOP formula, against torch's FlopCounterMode and by hand."""

from __future__ import annotations

import pytest
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

import crate_edu
from crate_edu.evaluation.flops import forward_flops, forward_macs, layer_macs
from crate_edu.experiments.crate_alpha_ablation import ABLATION, crate_alpha_macs
from crate_edu.models import ISTA
from crate_edu.models.crate import CRATEConfig


def _flops_from_shapes(model, img: torch.Tensor) -> int:
    """2 FLOPs per multiply-add of every matrix product of a forward pass over every token,
    counted from the operands' shapes, without torch's FlopCounterMode: each ``nn.Linear``
    (``in x out`` per row), each ISTA step (``D x`` and ``D^T (.)``, ``d x d`` per token each)
    and each head's two attention products (scores ``w w^T`` or ``q k^T``, then ``A w`` or ``A v``;
    ``N x N x p`` each), the last from the shapes ``forward_intermediates`` returns."""
    macs = 0

    def linear(module, inputs, _output):
        nonlocal macs
        macs += inputs[0].numel() // module.in_features * module.in_features * module.out_features

    def ista(module, inputs, _output):  # D^T (x - D x): the fast path's two products per token
        nonlocal macs
        macs += 2 * inputs[0].numel() * module.weight.shape[0]

    handles = [m.register_forward_hook(linear) for m in model.modules() if isinstance(m, torch.nn.Linear)]
    handles += [m.register_forward_hook(ista) for m in model.modules() if isinstance(m, ISTA)]
    try:
        with torch.no_grad():
            _, layers = model.forward_intermediates(img)
    finally:
        for handle in handles:
            handle.remove()
    assert len(layers) == model.config.depth
    for trace in layers:
        batch, heads, tokens, p = trace.proj.shape
        assert trace.attn.shape == (batch, heads, tokens, tokens)
        macs += 2 * batch * heads * tokens * tokens * p
    return 2 * macs


def _flops_counted_by_torch(model, img: torch.Tensor) -> int:
    """FLOPs of ``model(img)`` as FlopCounterMode records them, with ``scaled_dot_product_attention``
    on its math backend: explicit matmuls, which every torch's FlopCounterMode records. (Its fused
    CPU kernel, the default since torch 2.2, is not in every version's FlopCounterMode table:
    torch 2.14 counts nothing for it.)"""
    with sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter, torch.no_grad():
        model(img)
    return counter.get_total_flops()


def _image(model) -> torch.Tensor:
    size = model.config.image_size
    h, w = (size, size) if isinstance(size, int) else size
    return torch.randn(1, 3, h, w)


@pytest.mark.parametrize(
    ("name", "kw"),
    [
        ("crate_nano_cifar", dict(depth=2, patch_size=8)),
        ("crate_nano_cifar", dict(depth=1, heads=2, dim_head=24, patch_size=4, pool="mean")),
        ("crate_nano_cifar", dict(depth=1, patch_size=(4, 8))),
        ("vit_nano_cifar", dict(depth=2, dim=64, patch_size=8)),
        ("vit_nano_cifar", dict(depth=1, heads=4, dim_head=12, patch_size=4, pool="mean", reference=True)),
        ("vit_nano_cifar", dict(depth=1, dim=64, patch_size=(8, 2))),
        ("crate_tiny", dict(depth=1, num_classes=7)),
    ],
)
def test_forward_flops_counts_every_matrix_product(name, kw):
    """The formula equals the products the forward pass computes, attention's two per head
    included, counted twice: from the modules' shapes, and by torch's FlopCounterMode."""
    model = crate_edu.create_model(name, **kw).eval()
    model.prune_last_layer = False  # the formula counts every row of the last layer
    img = _image(model)
    flops = forward_flops(model)
    from_shapes = _flops_from_shapes(model, img)
    counted = _flops_counted_by_torch(model, img)
    assert from_shapes == flops, "formula != products counted from the modules' shapes"
    assert counted == flops, "formula != torch's FlopCounterMode count"
    assert forward_flops(model.config) == flops


def test_a_patch_size_pair_counts_ph_times_pw_values_per_patch():
    """patch_size=(4, 8): 8 x 4 = 32 patches of 3·4·8 = 96 values (``patch_size**2`` was a TypeError)."""
    cfg = crate_edu.model_config("crate_nano_cifar", depth=1, patch_size=(4, 8))
    square = crate_edu.model_config("crate_nano_cifar", depth=1, patch_size=(4, 4))
    assert forward_macs(cfg)["embed"] == 32 * 96 * cfg.dim
    assert (
        forward_macs(square)["embed"]
        == 64 * 48 * cfg.dim
        == forward_macs(crate_edu.model_config("crate_nano_cifar", depth=1, patch_size=4))["embed"]
    )


@pytest.mark.parametrize("variant", [*ABLATION, "patch 4x8"])
def test_crate_alpha_macs_equals_the_flop_counter(variant):
    """CRATE-α (every step of the ablation): crate_alpha_macs is forward_macs, and twice its total
    is what FlopCounterMode counts on the official arithmetic (``reference=True``, attention on
    explicit matmuls: the counter sees all). The fast sparse-coding kernel folds the shift λ into
    its two coding products (D⁺ = [D; λ1ᵀ], one more row), so it counts exactly 2 · 2 · r·d more
    FLOPs per token and layer there. CRATE's own block (the first step) is counted as its fast
    path computes it, two products (the reference path runs three)."""
    overrides = dict(patch_size=(4, 8)) if variant == "patch 4x8" else dict(ABLATION[variant])
    model = crate_edu.create_model("crate_alpha_nano_cifar", depth=2, **overrides).eval()
    model.prune_last_layer = False  # the formula counts every row of the last layer
    macs = crate_alpha_macs(model.config)
    assert macs == forward_macs(model)
    assert list(macs) == ["embed", "attention", "sparse_coding", "head", "total"]
    assert macs["total"] == sum(v for k, v in macs.items() if k != "total")
    img = _image(model)
    fast = _flops_counted_by_torch(model, img)
    reference = _flops_counted_by_torch(crate_edu.set_reference(model), img)
    cfg = model.config
    if (
        cfg.sparse_coding == "crate"
    ):  # CRATE's block: the formula counts ISTA's two products, as the fast path
        assert 2 * macs["total"] == forward_flops(model) == fast
        return
    assert 2 * macs["total"] == forward_flops(model) == reference
    folded = 2 * 2 * cfg.overcomplete_ratio * cfg.dim * (cfg.num_patches + 1) * cfg.depth
    assert fast - reference == folded


def test_macs_by_hand():
    """A CRATE small enough to count on paper: 4 patches of 3·4·4 = 48 values, n = 5 tokens,
    d = 4, two heads of p = 2 (Kp = 4), one layer, 3 classes."""
    cfg = CRATEConfig(image_size=8, patch_size=4, dim=4, heads=2, depth=1, num_classes=3)
    assert layer_macs(cfg, 5) == {
        "attention": 5 * 4 * 4 + 2 * 5 * 5 * 4 + 5 * 4 * 4,  # U^T z; W W^T and A W; output map
        "sparse_coding": 2 * 5 * 4 * 4,  # D z and D^T (.)
    }
    assert forward_macs(cfg) == {
        "embed": 4 * 48 * 4,
        "attention": 360,
        "sparse_coding": 160,
        "head": 4 * 3,
        "total": 768 + 360 + 160 + 12,
    }
    assert forward_flops(cfg) == 2 * 1300


def test_forward_flops_rejects_other_families():
    with pytest.raises(TypeError, match="FlopCounterMode"):
        forward_flops(crate_edu.create_model("crate_mae_nano_cifar", depth=1))
