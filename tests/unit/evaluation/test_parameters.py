"""crate_edu.evaluation.parameters: parameters by component, from the modules and from the formulas."""

from __future__ import annotations

import pytest
import torch

import crate_edu
from crate_edu.evaluation.parameters import COMPONENTS, parameters_by_component, parameters_by_formula


def _meta(name: str, **overrides):
    with torch.device("meta"):  # shapes only: no memory, no time
        return crate_edu.create_model(name, **overrides)


@pytest.mark.parametrize(
    "name,overrides",
    [
        ("crate_tiny", {}),
        ("crate_base", {}),
        ("vit_small", {}),
        ("vit_tiny", {}),
        ("crate_nano_cifar", {"depth": 3, "patch_size": 8}),
        ("crate_tiny", {"num_classes": 10, "image_size": 32, "patch_size": 4}),
        ("vit_small", {"heads": 4, "dim_head": 32, "image_size": 48, "patch_size": 8}),
    ],
)
def test_components_from_the_modules_equal_the_formulas(name, overrides):
    model = _meta(name, **overrides)
    counts = parameters_by_component(model)
    assert tuple(counts) == COMPONENTS
    assert counts == parameters_by_formula(model) == parameters_by_formula(model.config)
    assert sum(counts.values()) == model.num_params()


@pytest.mark.parametrize("patch", [(4, 8), (8, 4), (2, 16)])
@pytest.mark.parametrize("name", ["crate_nano_cifar", "vit_small"])
def test_tuple_patch_sizes_count_ph_times_pw_values_per_patch(name, patch):
    model = _meta(name, image_size=32, patch_size=patch, depth=2, num_classes=10)
    counts = parameters_by_formula(model)
    assert counts == parameters_by_component(model)
    P = 3 * patch[0] * patch[1]  # the patch Linear reads C·ph·pw values, its LayerNorm as many
    d = model.config.dim
    assert model.to_patch_embedding[2].weight.shape == (d, P)
    n_tokens = (32 // patch[0]) * (32 // patch[1]) + 1
    assert counts["embedding"] == 2 * P + P * d + d + 2 * d + n_tokens * d + d


def test_a_crate_layer_has_about_a_quarter_of_a_vit_layer():
    """Per layer: CRATE 3d² + 5d (U^T, to_out, D, two LayerNorms), ViT 12d² + 10d (h = 4d)."""
    crate, vit = _meta("crate_tiny"), _meta("vit_small")
    d, L = 384, 12
    c, v = parameters_by_component(crate), parameters_by_component(vit)
    crate_layer = (c["attention"] + c["MLP / ISTA"] + c["LayerNorms in layers"]) // L
    vit_layer = (v["attention"] + v["MLP / ISTA"] + v["LayerNorms in layers"]) // L
    assert crate_layer == 3 * d * d + 5 * d
    assert vit_layer == 12 * d * d + 10 * d
    assert c["embedding"] == v["embedding"] and c["head"] == v["head"]  # shared by both


def test_the_groups_follow_the_modules_not_the_names():
    """Growing the ISTA dictionary of one layer moves only "MLP / ISTA"; the formula no longer agrees."""
    model = _meta("crate_nano_cifar", depth=2)
    before = parameters_by_component(model)
    layer = model.transformer.layers[0]
    layer[1].fn.extra = torch.nn.Parameter(torch.empty(7, device="meta"))
    after = parameters_by_component(model)
    assert after["MLP / ISTA"] == before["MLP / ISTA"] + 7
    assert {k: v for k, v in after.items() if k != "MLP / ISTA"} == {
        k: v for k, v in before.items() if k != "MLP / ISTA"
    }
    assert after != parameters_by_formula(model)


def test_other_families_are_refused_by_the_formula():
    model = _meta("crate_alpha_nano_cifar")
    with pytest.raises(TypeError, match="CRATE and ViT configs, got CRATEAlphaConfig"):
        parameters_by_formula(model)
    counts = parameters_by_component(model)  # the modules can still be counted
    assert sum(counts.values()) == model.num_params()
