"""Layer-wise compression and sparsity of the language models equal the per-layer computation by hand."""

import pytest
import torch

from crate_edu.coding_rate import measure_coding_rate, measure_nonzero
from crate_edu.evaluation.layerwise import layerwise_measurements
from crate_edu.models import create_model

KW = dict(dim=32, depth=3, heads=4, block_size=24)


def _idx(B: int = 3, T: int = 24) -> torch.Tensor:
    return torch.randint(0, 98, (B, T), generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("ista", ["overcomplete", "complete"])
def test_crate_lm_layerwise_follows_the_official_recipe(ista):
    torch.manual_seed(0)
    model = create_model("crate_lm_char", ista=ista, **KW)
    idx = _idx()
    m = layerwise_measurements(model, idx)
    assert m.depth == 3 and len(m.nonzero_mean) == 3 and len(m.compression_std) == 3
    with torch.no_grad():  # layer 2 by hand: U_k^T LN(Z^2) per head, and the codes of its ISTA block
        model.eval()
        z = model.embed(idx)
        for layer in model.transformer.h[:2]:
            z = layer(z)
        layer = model.transformer.h[2]
        w = layer.attn.c_attn(layer.prenorm_1(z))  # (B, T, d), no bias: the shared U
        proj = w.reshape(3, 24, 4, 8).transpose(1, 2)  # (B, h, T, p)
        _, traces = model.forward_trace(idx)
        model.train()
    assert m.compression_mean[2] == pytest.approx(measure_coding_rate(proj)[0].item(), rel=1e-5)
    assert m.compression_std[2] == pytest.approx(measure_coding_rate(proj)[1].item(), rel=1e-4)
    assert m.nonzero_mean[2] == pytest.approx(measure_nonzero(traces[2].codes)[0].item(), abs=1e-6)
    assert traces[2].codes.shape[-1] == (128 if ista == "overcomplete" else 32)
    assert all(0.0 < v < 1.0 for v in m.nonzero_mean)
    assert model.training  # mode restored


def test_gpt_layerwise_uses_the_keys_and_the_mlp_units():
    torch.manual_seed(0)
    model = create_model("gpt_lm_char", **KW)
    idx = _idx()
    m = layerwise_measurements(model, idx)
    with torch.no_grad():
        model.eval()
        layer = model.transformer.h[0]
        qkv = layer.attn.c_attn(layer.ln_1(model.embed(idx)))  # (B, T, 3d): q, k, v side by side
        keys = qkv[..., 32:64].reshape(3, 24, 4, 8).transpose(1, 2)  # (B, h, T, p)
        hidden = torch.relu(layer.mlp.c_fc(layer.ln_2(layer.forward_trace(model.embed(idx))[1].z_half)))
        model.train()
    assert m.compression_mean[0] == pytest.approx(measure_coding_rate(keys)[0].item(), rel=1e-5)
    assert m.nonzero_mean[0] == pytest.approx(measure_nonzero(hidden)[0].item(), abs=1e-6)
    assert m.depth == 3 and len(m.nonzero_mean) == 3


def test_a_language_model_needs_token_ids():
    model = create_model("crate_lm_char", **KW)
    with pytest.raises(TypeError, match="reads token ids: pass an integer tensor"):
        layerwise_measurements(model, torch.randn(2, 24))
