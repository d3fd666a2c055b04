"""Layer-wise measurement on a model equals the official per-layer computation."""

import pytest
import torch

import crate_edu
from crate_edu.coding_rate import measure_coding_rate, measure_nonzero
from crate_edu.evaluation.layerwise import layerwise_measurements


def test_layerwise_measurements_follow_the_official_recipe():
    torch.manual_seed(0)
    model = crate_edu.create_model("crate_nano_cifar", depth=3)
    x = torch.randn(4, 3, 32, 32)
    m = layerwise_measurements(model, x)
    assert m.depth == 3 and len(m.nonzero_mean) == 3
    # recompute layer 2 by hand from the official ingredients: qkv output of LN(Z^2), ISTA output
    with torch.no_grad():
        z = model.embed(x)
        layers = model.transformer.layers
        z = layers[0](z)
        proj = layers[1].mssa.forward_parts(layers[1][0].norm(z)).proj
        ista_out = layers[1](z)
    assert m.compression_mean[1] == pytest.approx(measure_coding_rate(proj)[0].item(), rel=1e-5)
    assert m.nonzero_mean[1] == pytest.approx(measure_nonzero(ista_out)[0].item(), abs=1e-6)
    assert all(0.0 <= v <= 1.0 for v in m.nonzero_mean)
    assert model.training  # mode restored


def test_layerwise_measurements_on_alpha_uses_codes_and_on_vit_has_no_sparsity():
    torch.manual_seed(0)
    x = torch.randn(2, 3, 32, 32)
    alpha = layerwise_measurements(crate_edu.create_model("crate_alpha_nano_cifar", depth=2), x)
    assert len(alpha.nonzero_mean) == 2 and all(v < 1.0 for v in alpha.nonzero_mean)
    vit = layerwise_measurements(crate_edu.create_model("vit_nano_cifar", depth=2), x)
    assert vit.depth == 2 and vit.nonzero_mean == []
    mae = layerwise_measurements(crate_edu.create_model("crate_mae_nano_cifar", depth=2, decoder_depth=1), x)
    assert mae.depth == 2 and len(mae.nonzero_mean) == 2
