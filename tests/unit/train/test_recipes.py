"""crate_edu.train.recipes: every recipe is a valid configuration, and the published ones are exact."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from crate_edu.train import RECIPES, ConfigError, check_config, get_recipe, list_recipes


@pytest.mark.parametrize("name", list(RECIPES))
def test_every_recipe_is_a_valid_configuration(name: str) -> None:
    recipe = RECIPES[name]
    cfg = check_config(recipe.config())
    assert cfg.recipe == name
    assert recipe.doc and len(recipe.doc) > 80  # says where its values come from
    # any field can be overridden
    assert recipe.config(epochs=3, lr=1e-4).epochs == 3
    assert recipe.config(lr=1e-4).lr == 1e-4


def test_official_recipe_values() -> None:
    """The published ImageNet and fine-tuning recipes (arXiv 2306.01129; official main.py/finetune.py)."""
    im = RECIPES["imagenet"]
    assert (im.optimizer, im.lr, im.weight_decay, im.batch_size) == ("lion", 2.4e-4, 0.5, 2048)
    assert (im.epochs, im.warmup_epochs, im.label_smoothing, im.image_size) == (150, 5, 0.1, 224)
    assert im.grad_clip is None  # main.py defines grad_clip_norm but never applies it
    ft = RECIPES["finetune"]
    assert (ft.optimizer, ft.lr, ft.weight_decay, ft.batch_size) == ("adamw", 5e-5, 0.01, 512)
    assert (ft.augment, ft.image_size, ft.needs_pretrained) == ("randaugment", 224, True)


def test_recipe_model_overrides_merge_and_reset() -> None:
    r = RECIPES["digits-quick"]
    assert r.config(model_overrides={"dim": 64}).model_overrides == {**r.model_overrides, "dim": 64}
    assert "depth" not in r.config(model_overrides={"depth": None}).model_overrides
    # another model starts from its own preset, not the recipe's shape changes
    assert r.config(model="vit_nano_cifar").model_overrides == {}


def test_recipes_by_name() -> None:
    assert list_recipes()[0] == "digits-quick" and get_recipe("imagenet") is RECIPES["imagenet"]
    with pytest.raises(ConfigError, match="unknown recipe 'digits'.*did you mean"):
        get_recipe("digits")


def test_crate_alpha_recipe_values() -> None:
    """The official CRATE-α in21k / in1k configs (docs/notes/crate_alpha_official_code.md §3.0-3.2)."""
    pre, ft = RECIPES["in21k-pretrain"], RECIPES["in1k-finetune"]
    for r in (pre, ft):
        assert (r.model, r.optimizer, r.betas, r.weight_decay, r.decay_mask) == (
            "crate_alpha_b16", "adamw", (0.9, 0.95), 0.1, "kernels",
        )  # fmt: skip
        assert (r.batch_size, r.epochs, r.warmup_epochs, r.min_lr, r.grad_clip, r.image_size) == (
            4096, 91, 10, 1e-6, 1.0, 224,
        )  # fmt: skip
        assert (r.mixup_alpha, r.cutmix_alpha, r.mix_switch_prob) == (0.8, 1.0, 0.5)
        assert "81.2" in r.doc and "83.9" in r.doc
    assert (pre.dataset, pre.lr, pre.label_smoothing, pre.augment) == (
        "imagenet21k",
        5e-5 * 16,
        0.0,
        "imagenet",
    )
    assert (ft.dataset, ft.lr, ft.augment, ft.randaugment_magnitude) == (
        "imagenet",
        1e-5 * 16,
        "imagenet-randaugment",
        9,
    )
    assert (ft.label_smoothing, ft.smoothing_style, ft.needs_pretrained, ft.resample_pretrained) == (
        0.1, "big_vision", True, True,
    )  # fmt: skip


# -- end to end on fake ImageNet-21K and ImageNet folders, tiny model, CPU ------------------------------


@pytest.fixture()
def _on_the_cpu(monkeypatch):
    monkeypatch.setenv("ACCELERATE_USE_CPU", "1")


TINY_ALPHA = {"depth": 1, "dim": 32, "heads": 2, "patch_size": 8}


def quick(recipe: str, data_dir: Path, **changes):
    """The recipe at a tiny size: two epochs of two steps of 4 images."""
    base = dict(
        data_dir=str(data_dir), model_overrides=TINY_ALPHA, image_size=32, batch_size=4, epochs=2,
        warmup_epochs=1, limit_train=8, limit_test=4, precision="no", threads=1, progress=False,
        num_workers=0,
    )  # fmt: skip
    return RECIPES[recipe].config(**{**base, **changes})


@pytest.fixture()
def fake_imagenets(tmp_path: Path, _on_the_cpu) -> Path:
    from tests.support.fake_datasets import write_image_folder

    write_image_folder(tmp_path / "winter21_whole", ["n00004475", "n00005787", "n01440764"], per_class=10)
    for split in ("train", "val"):
        write_image_folder(tmp_path / "imagenet" / split, ["n01440764", "n01443537"], per_class=4)
    return tmp_path


def test_in21k_pretraining_then_in1k_fine_tuning_and_resume(fake_imagenets: Path, tmp_path: Path) -> None:
    from crate_edu.train import load_checkpoint, train

    pre = train(quick("in21k-pretrain", fake_imagenets), tmp_path / "pre")
    ckpt = load_checkpoint(pre.checkpoint)
    assert ckpt["model"]["mlp_head.1.weight"].shape == (19167, 32) and len(pre.history) == 2
    assert ckpt["config"]["mixup_alpha"] == 0.8 and ckpt["config"]["decay_mask"] == "kernels"
    assert all(math.isfinite(h["train_loss"]) for h in pre.history)

    # the hand-off: 19,167 -> 1,000 classes, 32 -> 48 px (a 4x4 -> 6x6 grid of position embeddings)
    ft_cfg = quick("in1k-finetune", fake_imagenets, pretrained=str(pre.checkpoint), image_size=48)
    whole = train(ft_cfg, tmp_path / "ft")
    weights = load_checkpoint(whole.checkpoint)["model"]
    assert weights["mlp_head.1.weight"].shape == (1000, 32) and weights["pos_embedding"].shape == (1, 37, 32)

    # an interrupted fine-tuning, resumed, ends with the numbers of the uninterrupted one
    def stop(record: dict) -> None:
        if record["epoch"] == 1:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(ft_cfg, tmp_path / "ft2", on_epoch_end=stop)
    resumed = train(None, tmp_path / "ft2", resume=True)
    assert [h["epoch"] for h in resumed.history] == [1, 2]
    for a, b in zip(whole.history, resumed.history, strict=True):
        for key in ("train_loss", "test_loss", "test_acc", "lr"):
            assert a[key] == pytest.approx(b[key], rel=1e-6, abs=1e-7), key
    final = load_checkpoint(resumed.checkpoint)["model"]
    assert all(torch.equal(final[k], weights[k]) for k in weights)


def test_in21k_pretrain_recipe_on_the_command_line(fake_imagenets: Path, tmp_path: Path) -> None:
    from crate_edu.cli import main

    args = [
        "train",
        "--recipe",
        "in21k-pretrain",
        "--data-dir",
        str(fake_imagenets),
        "--out",
        str(tmp_path / "run"),
    ]
    args += ["--depth", "1", "--dim", "32", "--heads", "2", "--patch-size", "8", "--image-size", "32"]
    args += ["--batch-size", "4", "--epochs", "1", "--warmup-epochs", "0", "--limit-train", "8"]
    args += ["--limit-test", "4", "--precision", "no", "--threads", "1"]
    assert main(args) == 0
    from crate_edu.train import load_checkpoint

    saved = load_checkpoint(tmp_path / "run")["config"]
    assert (saved["recipe"], saved["betas"], saved["min_lr"], saved["cutmix_alpha"]) == (
        "in21k-pretrain", [0.9, 0.95], 1e-6, 1.0,
    )  # fmt: skip
