"""crate_edu.evaluation.metrics: predictions, confusion matrix, per-class accuracy, FLOP formula, throughput."""

from __future__ import annotations

import pytest
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.data import DataLoader, TensorDataset
from torch.utils.flop_counter import FlopCounterMode

import crate_edu
from crate_edu.evaluation.metrics import (
    Predictions,
    accuracy,
    confusion_matrix,
    forward_flops,
    inference_throughput,
    measure_throughput,
    per_class_accuracy,
    predict,
    train_throughput,
)
from crate_edu.models.blocks import ISTA


def _tiny(name: str = "crate_nano_cifar", **kw):
    torch.manual_seed(0)
    return crate_edu.create_model(name, depth=1, dim=32, heads=2, patch_size=8, num_classes=5, **kw)


def test_confusion_matrix_by_hand():
    targets = torch.tensor([0, 0, 1, 1, 1, 2])
    preds = torch.tensor([0, 1, 1, 1, 2, 0])
    cm = confusion_matrix(preds, targets, 4)
    expected = torch.zeros(4, 4, dtype=torch.int64)
    for t, p in zip(targets.tolist(), preds.tolist(), strict=True):
        expected[t, p] += 1
    assert torch.equal(cm, expected)
    assert cm.trace().item() / 6 == pytest.approx(accuracy(preds, targets))
    assert torch.equal(cm.sum(1), torch.bincount(targets, minlength=4))


def test_per_class_accuracy_weighted_mean_is_accuracy_and_nan_for_absent():
    g = torch.Generator().manual_seed(3)
    targets = torch.randint(0, 6, (500,), generator=g)  # class 6 never occurs
    preds = torch.where(torch.rand(500, generator=g) < 0.7, targets, torch.randint(0, 7, (500,), generator=g))
    pca = per_class_accuracy(preds, targets, 7)
    counts = torch.bincount(targets, minlength=7).double()
    assert torch.isnan(pca[6])
    assert ((pca[:6] * counts[:6]).sum() / counts.sum()).item() == pytest.approx(
        accuracy(preds, targets), abs=1e-12
    )
    for c in range(6):
        mask = targets == c
        assert pca[c].item() == pytest.approx((preds[mask] == c).double().mean().item(), abs=1e-12)


def test_label_errors():
    with pytest.raises(ValueError, match="outside 0..2"):
        confusion_matrix(torch.tensor([0, 3]), torch.tensor([0, 1]), 3)
    with pytest.raises(ValueError, match="same length"):
        confusion_matrix(torch.tensor([0, 1, 2]), torch.tensor([0, 1]), 3)
    with pytest.raises(ValueError, match="undefined"):
        accuracy(torch.tensor([], dtype=torch.int64), torch.tensor([], dtype=torch.int64))


def test_predict_matches_the_model_for_every_input_kind():
    model = _tiny().eval()
    g = torch.Generator().manual_seed(1)
    x = torch.randn(21, 3, 32, 32, generator=g)
    y = torch.randint(0, 5, (21,), generator=g)
    with torch.no_grad():
        logits = model(x)
    model.train()  # predict must evaluate in eval mode and restore the mode
    for data in ((x, y), TensorDataset(x, y), DataLoader(TensorDataset(x, y), batch_size=4)):
        p = predict(model, data, batch_size=8)
        assert isinstance(p, Predictions) and model.training
        torch.testing.assert_close(p.logits, logits, rtol=1e-5, atol=1e-6)
        assert torch.equal(p.targets, y) and torch.equal(p.preds, logits.argmax(-1))
        assert p.accuracy == pytest.approx((logits.argmax(-1) == y).double().mean().item())
        assert p.num_classes == 5


def test_predict_rejects_bad_input():
    model = _tiny()
    with pytest.raises(TypeError, match="Dataset, a DataLoader"):
        predict(model, [1, 2, 3])
    with pytest.raises(ValueError, match="differ in length"):
        predict(model, (torch.randn(3, 3, 32, 32), torch.zeros(2, dtype=torch.int64)))


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


@pytest.mark.parametrize(
    ("name", "kw"),
    [
        ("crate_nano_cifar", dict(depth=2, patch_size=8)),
        ("crate_nano_cifar", dict(depth=1, heads=2, dim_head=24, patch_size=4, pool="mean")),
        ("vit_nano_cifar", dict(depth=2, dim=64, patch_size=8)),
        ("vit_nano_cifar", dict(depth=1, heads=4, dim_head=12, patch_size=4, pool="mean", literal=True)),
        ("crate_tiny", dict(depth=1, num_classes=7)),
    ],
)
def test_forward_flops_counts_every_matrix_product(name, kw):
    """The formula equals the products the forward pass computes, attention's two per head
    included, counted twice: from the modules' shapes, and by torch's FlopCounterMode."""
    model = crate_edu.create_model(name, **kw).eval()
    model.prune_last_layer = False  # the formula counts every row of the last layer
    size = model.config.image_size
    img = torch.randn(1, 3, size, size)
    flops = forward_flops(model)
    from_shapes = _flops_from_shapes(model, img)
    counted = _flops_counted_by_torch(model, img)
    assert from_shapes == flops, "formula != products counted from the modules' shapes"
    assert counted == flops, "formula != torch's FlopCounterMode count"
    assert forward_flops(model.config) == flops


def test_forward_flops_rejects_other_families():
    with pytest.raises(TypeError, match="FlopCounterMode"):
        forward_flops(crate_edu.create_model("crate_alpha_nano_cifar", depth=1))


def test_train_throughput_leaves_the_model_untouched():
    model = _tiny()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    tp = train_throughput(model, batch_size=4, steps=2, warmup=1)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert tp.mode == "train" and tp.batch_size == 4 and tp.steps == 2 and tp.image_size == 32
    assert tp.images_per_second > 0
    assert tp.images_per_second == pytest.approx(tp.batch_size / tp.seconds_per_step)
    assert "images/s" in tp.describe() and "fp32" in tp.describe()


def test_inference_throughput_bf16_restores_mode():
    model = _tiny().train()
    tp = inference_throughput(model, batch_size=2, steps=1, warmup=0, precision="bf16")
    assert tp.mode == "inference" and tp.precision == "bf16" and model.training


def test_throughput_errors():
    model = _tiny()
    with pytest.raises(ValueError, match="unknown mode"):
        measure_throughput(model, mode="eval")
    with pytest.raises(ValueError, match="fp16 autocast needs a GPU"):
        measure_throughput(model, precision="fp16", device="cpu")
    with pytest.raises(ValueError, match="steps must be an integer >= 1"):
        measure_throughput(model, steps=0)
    with pytest.raises(ValueError, match="unknown precision"):
        measure_throughput(model, precision="fp8")
