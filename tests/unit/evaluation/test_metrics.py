"""crate_edu.evaluation.metrics: predictions, accuracy, confusion matrix, per-class accuracy."""

from __future__ import annotations

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

import crate_edu
from crate_edu.evaluation.metrics import (
    Predictions,
    accuracy,
    confusion_matrix,
    per_class_accuracy,
    predict,
)


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
