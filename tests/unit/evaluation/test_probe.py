"""crate_edu.evaluation.probe: frozen features and a deterministic linear probe."""

from __future__ import annotations

import pytest
import torch

from crate_edu.evaluation.probe import extract_features, linear_probe, pool_tokens
from crate_edu.models import create_model


def blobs(n, d=8, k=3, sep=4.0, seed=0):
    g = torch.Generator().manual_seed(seed)
    centres = sep * torch.randn(k, d, generator=g)
    y = torch.arange(n) % k
    return centres[y] + torch.randn(n, d, generator=g), y


def test_probe_separates_blobs_and_is_deterministic():
    X, y = blobs(450)  # the same centres; the last 150 points are held out
    Xtr, ytr, Xte, yte = X[:300], y[:300], X[300:], y[300:]
    a = linear_probe(Xtr, ytr, Xte, yte)
    b = linear_probe(Xtr, ytr, Xte, yte)
    assert a.test_accuracy >= 0.97 and a.train_accuracy >= 0.97
    assert torch.equal(a.weight, b.weight) and a.test_accuracy == b.test_accuracy
    assert torch.equal(a.predict(Xte), b.predict(Xte))


def test_probe_on_random_labels_is_near_chance():
    X, _ = blobs(400, d=4)
    y = torch.randint(0, 4, (400,), generator=torch.Generator().manual_seed(3))
    r = linear_probe(X[:300], y[:300], X[300:], y[300:])
    assert r.test_accuracy < 0.45  # chance is 0.25; a leak of test labels would show here


def test_probe_input_errors():
    X, y = blobs(30)
    with pytest.raises(ValueError, match="same N"):
        linear_probe(X, y[:10], X, y)
    with pytest.raises(ValueError, match="width"):
        linear_probe(X, y, X[:, :3], y)
    with pytest.raises(ValueError, match="weight_decay"):
        linear_probe(X, y, X, y, weight_decay=-1)


class ListDataset(torch.utils.data.Dataset):
    def __init__(self, x, y):
        self.x, self.y = x, y

    def __len__(self):
        return len(self.y)

    def __getitem__(self, i):
        return self.x[i], int(self.y[i])


@pytest.mark.parametrize("name", ["crate_nano_cifar", "crate_mae_nano_cifar"])
def test_extract_features_pools(name):
    torch.manual_seed(0)
    model = create_model(name, depth=1, **({"decoder_depth": 1} if "mae" in name else {})).eval()
    x = torch.randn(5, 3, 32, 32)
    ds = ListDataset(x, torch.tensor([0, 1, 2, 1, 0]))
    with torch.no_grad():
        tokens = model.forward_features(x)
    f_cls, y = extract_features(model, ds, pool="cls", batch_size=2)
    f_mean, _ = extract_features(model, ds, pool="mean", batch_size=4, limit=3)
    assert torch.equal(y, torch.tensor([0, 1, 2, 1, 0]))
    assert torch.allclose(f_cls, tokens[:, 0], atol=1e-5)
    assert torch.allclose(f_mean, tokens[:3, 1:].mean(1), atol=1e-5)
    f_head, _ = extract_features(model, ds, pool="head")
    assert torch.allclose(f_head, model.forward_head(tokens, pre_logits=True), atol=1e-5)
    with pytest.raises(ValueError, match="unknown pool"):
        extract_features(model, ds, pool="max")
    with pytest.raises(TypeError, match="labels"):
        extract_features(model, x)


def test_pool_tokens_errors():
    with pytest.raises(ValueError, match="B, N"):
        pool_tokens(torch.zeros(3, 4), "cls")


def test_layer_features_and_probe_layers():
    from crate_edu.evaluation.probe import extract_layer_features, probe_layers

    torch.manual_seed(0)
    crate = create_model("crate_nano_cifar", depth=2).eval()
    mae = create_model("crate_mae_nano_cifar", depth=2, decoder_depth=1).eval()
    x = torch.randn(6, 3, 32, 32)
    ds = ListDataset(x, torch.tensor([0, 1, 0, 1, 0, 1]))
    layers, y = extract_layer_features(crate, ds, pool="cls", batch_size=4)
    assert len(layers) == 2 and torch.equal(y, ds.y)
    with torch.no_grad():
        tokens = crate.forward_features(x)
        _, traces = mae.forward_intermediates(x, mask_ratio=0.0)
    assert torch.allclose(layers[-1], tokens[:, 0], atol=1e-5)  # the last layer's output is the features
    mae_layers, _ = extract_layer_features(mae, ds, pool="mean", batch_size=4)
    for ell in range(2):
        assert torch.allclose(mae_layers[ell], traces["encoder"][ell].z_out[:, 1:].mean(1), atol=1e-5)
    with torch.no_grad():  # the encoder ends with a LayerNorm: the last layer's output is its input
        assert torch.allclose(mae.norm(traces["encoder"][-1].z_out), mae.forward_features(x), atol=1e-5)
    accs = probe_layers(crate, ds, ds, pool="cls")
    assert len(accs) == 2 and all(0.0 <= a <= 1.0 for a in accs)
    with pytest.raises(ValueError, match="unknown pool"):
        extract_layer_features(crate, ds, pool="head")
