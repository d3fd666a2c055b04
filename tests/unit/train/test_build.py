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


def test_hand_off_resamples_positions_and_replaces_the_head(tmp_path: Path) -> None:
    """A pretrained model at 32 px, patch 8 (4x4 grid) fine-tuned at 48 px, patch 8 (6x6 grid)."""
    from crate_edu.weights.resize import resample_pos_embedding

    src = train(tiny_config(epochs=1, limit_train=64, model="crate_alpha_nano_cifar"), tmp_path / "src")
    weights = load_checkpoint(src.checkpoint)["model"]
    cfg = tiny_config(
        model="crate_alpha_nano_cifar", dataset="cluttered-digits", image_size=48,
        pretrained=str(src.checkpoint), resample_pretrained=True,
    )  # fmt: skip
    model = build_model(cfg)
    own = model.state_dict()
    assert model.config.image_size == 48 and own["pos_embedding"].shape == (1, 37, 32)
    torch.testing.assert_close(own["pos_embedding"], resample_pos_embedding(weights["pos_embedding"], (6, 6)))
    assert torch.equal(own["pos_embedding"][:, 0], weights["pos_embedding"][:, 0])  # [CLS] kept
    for k, v in weights.items():  # everything else carried over exactly (the head: same 10 classes)
        if k != "pos_embedding":
            assert torch.equal(own[k], v), k
    # another patch size: the patch embedding resized, the head replaced for other classes
    model = build_model(cfg.replace(model_overrides={**cfg.model_overrides, "patch_size": 16}))
    assert model.conv1.weight.shape == (32, 3, 16, 16) and model.pos_embedding.shape == (1, 10, 32)
    with pytest.raises(ConfigError, match="weights are for 32 px images.*--image-size 32") as err:
        build_model(cfg.replace(resample_pretrained=False))
    assert "\n" not in str(err.value)


def test_hand_off_replaces_a_19167_way_head(tmp_path: Path) -> None:
    """An official-layout in21k file (tiny widths, 19,167 classes, 32 px) into a 10-class 48 px model."""
    from crate_edu.models import create_model

    tiny = dict(depth=1, dim=32, heads=2)
    src = create_model("crate_alpha_b16", num_classes=19167, image_size=32, patch_size=8, **tiny)
    path = tmp_path / "crate_alpha_B16_IN21K"
    torch.save(src.state_dict(), path)
    cfg = tiny_config(
        model="crate_alpha_b16", image_size=48, pretrained=str(path), resample_pretrained=True,
        model_overrides={**tiny, "patch_size": 8},
    )  # fmt: skip
    model = build_model(cfg)
    own, weights = model.state_dict(), src.state_dict()
    assert own["mlp_head.1.weight"].shape == (10, 32) and model.config.num_classes == 10
    assert torch.equal(own["mlp_head.0.weight"], weights["mlp_head.0.weight"])  # the head's LayerNorm kept
    body = [k for k in weights if not k.startswith(("mlp_head.1.", "pos_embedding"))]
    assert body and all(torch.equal(own[k], weights[k]) for k in body)
