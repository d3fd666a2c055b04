"""crate_edu.train.build: datasets, pretrained weights and the limited subsets of a run."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from crate_edu.train import (
    RECIPES,
    ConfigError,
    build_datasets,
    build_model,
    check_config,
    load_checkpoint,
    train,
)
from crate_edu.train.build import limit_dataset
from tests.unit.train.test_loop import tiny_config


@pytest.fixture(autouse=True)
def _on_the_cpu(monkeypatch):
    monkeypatch.setenv("ACCELERATE_USE_CPU", "1")


def test_limit_dataset_is_a_fixed_subset_for_every_seed() -> None:
    data = list(range(100))
    torch.manual_seed(1)
    a = limit_dataset(data, 10)
    torch.manual_seed(2)
    b = limit_dataset(data, 10)
    assert list(a) == list(b) and len(a) == 10 and list(a) == sorted(a)
    assert limit_dataset(data, None) is data and limit_dataset(data, 1000) is data


def test_pretrained_from_a_trainer_checkpoint_replaces_the_head(tmp_path: Path) -> None:
    src = train(tiny_config(epochs=1, limit_train=64), tmp_path / "src")
    cfg = tiny_config(dataset="cluttered-digits", pretrained=str(src.checkpoint))
    model = build_model(cfg)
    weights = load_checkpoint(src.checkpoint)["model"]
    own = model.state_dict()
    head = [k for k in weights if k.startswith("mlp_head.1.")]
    assert head and all(k in own for k in weights)
    body = [k for k in weights if not k.startswith("mlp_head.1.")]
    assert all(torch.equal(own[k], weights[k]) for k in body)
    with pytest.raises(ConfigError, match="holds a 'crate_nano_cifar' model"):
        build_model(cfg.replace(model="vit_nano_cifar", model_overrides={}))
    with pytest.raises(ConfigError, match="no such file"):
        build_model(cfg.replace(pretrained=str(tmp_path / "missing.pt")))


def test_imagenet_normalisation_reaches_the_datasets():
    """``normalize='imagenet'`` (the official finetune.py statistics) changes only the input scaling."""
    from crate_edu.data import dataset_info

    own, _ = build_datasets(tiny_config(limit_train=8))
    imnet, _ = build_datasets(tiny_config(limit_train=8, normalize="imagenet"))
    info = dataset_info("digits")
    mean, std = torch.tensor(info.mean)[:, None, None], torch.tensor(info.std)[:, None, None]
    in_mean = torch.tensor((0.485, 0.456, 0.406))[:, None, None]
    in_std = torch.tensor((0.229, 0.224, 0.225))[:, None, None]
    x_own, y_own = own[3]
    x_imnet, y_imnet = imnet[3]
    assert y_own == y_imnet
    torch.testing.assert_close(x_imnet, (x_own * std + mean - in_mean) / in_std, atol=1e-5, rtol=1e-5)
    with pytest.raises(ConfigError, match="unknown normalisation 'cifar'; choose one of: dataset, imagenet"):
        check_config(tiny_config(normalize="cifar"))
    assert RECIPES["finetune"].config().normalize == "imagenet"  # as the official finetune.py
