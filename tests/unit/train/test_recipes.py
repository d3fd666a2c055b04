"""crate_edu.train.recipes: every recipe is a valid configuration, and the published ones are exact."""

from __future__ import annotations

import pytest

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
