"""CRATE-α-CLIPA read from inside: the image tower's per-layer traces (attention maps, sparse
codes) and the departures of the official port measured on a small model.

The traces are what ``crate_edu.evaluation``'s attention-map tools read, so a CLIPA model gives
[CLS] attention maps as the classifiers do (notebook 10 draws them on the composites).
"""

from __future__ import annotations

import torch

import crate_edu
from crate_edu.evaluation import cls_attention_maps, patch_grid
from crate_edu.models import CRATEAlphaCLIPA

SMALL = dict(
    image_size=32,
    patch_size=8,
    vision_width=32,
    vision_depth=3,
    vision_heads=4,
    context_length=8,
    vocab_size=50,
    text_width=32,
    text_depth=2,
    text_heads=4,
    embed_dim=16,
)


def small_model(**changes) -> CRATEAlphaCLIPA:
    torch.manual_seed(0)
    return CRATEAlphaCLIPA(**{**SMALL, **changes}).eval()


def test_traces_reproduce_the_image_features():
    model = small_model()
    images = torch.randn(3, 3, 32, 32)
    features, traces = model.forward_intermediates(images)
    torch.testing.assert_close(features, model.encode_image(images), atol=1e-5, rtol=0)
    assert len(traces) == 3
    for trace in traces:
        assert trace.attn.shape == (3, 4, 17, 17)  # (B, heads, N + 1, N + 1)
        torch.testing.assert_close(trace.attn.sum(-1), torch.ones(3, 4, 17))
        assert trace.codes.shape == (3, 17, 4 * 32) and (trace.codes >= 0).all()  # A2, r = 4


def test_layer_trace_equals_the_layer():
    model = small_model()
    x = torch.randn(2, 17, 32)
    block = model.visual.transformer.resblocks[0]
    z_out, trace = block.forward_trace(x)
    torch.testing.assert_close(z_out, block(x), atol=1e-5, rtol=0)
    torch.testing.assert_close(trace.z_half, x + block.attn(block.ln_1(x)), atol=1e-5, rtol=0)


def test_cls_attention_maps_read_the_image_tower():
    model = small_model()
    images = torch.randn(2, 3, 32, 32)
    assert patch_grid(model) == (4, 4)
    maps = cls_attention_maps(model, images)  # default: the penultimate layer
    _, traces = model.forward_intermediates(images)
    assert maps.shape == (2, 4, 4, 4)
    torch.testing.assert_close(maps, traces[1].attn[:, :, 0, 1:].unflatten(-1, (4, 4)))


def test_the_last_position_pools_padding_that_attends_everywhere():
    """Departure measured: with no padding mask the pooled feature depends on the tokens after the
    text; a causal mask, CLIP's, would not let the end of text see what follows it."""
    model = small_model()
    text = torch.tensor([[1, 5, 6, 7, 0, 0, 0, 0]])
    other_padding = text.clone()
    other_padding[0, 4:7] = 9  # the same words, different filler before the pooled position
    a, b = model.encode_text(text), model.encode_text(other_padding)
    assert (a - b).abs().max() > 1e-4


def test_separate_qkv_cost_in_the_published_sizes():
    """Departure measured: three projections where MSSA has one add 2·W² parameters per image
    layer: 7.9 % of CRATE-α-CLIPA-L/14 and 10.8 % of H/14."""
    for name, expected in (("crate_alpha_clipa_l14", 0.0786), ("crate_alpha_clipa_h14", 0.1084)):
        with torch.device("meta"):
            model = crate_edu.create_model(name)
        cfg = model.config
        extra = cfg.vision_depth * 2 * cfg.vision_width**2
        assert abs(extra / model.num_params() - expected) < 5e-4, (name, extra / model.num_params())


def test_cost_of_the_published_towers_counts_on_the_meta_device():
    """Notebook 10 counts the CLIPA towers' FLOPs on the meta device (nothing allocated): the
    image tower at 84 px costs 7.1x less than at 224 px, the text tower is unchanged."""
    from torch.utils.flop_counter import FlopCounterMode

    flops = {}
    for size in (84, 224):
        with torch.device("meta"):
            model = crate_edu.create_model("crate_alpha_clipa_l14", image_size=size)
            images, tokens = torch.empty(1, 3, size, size), torch.zeros(1, 32, dtype=torch.long)
        with FlopCounterMode(display=False) as count:
            model.encode_image(images)
        with FlopCounterMode(display=False) as count_text:
            model.encode_text(tokens)
        flops[size] = count.get_total_flops(), count_text.get_total_flops()
    assert abs(flops[224][0] / flops[84][0] - 7.09) < 0.01
    assert flops[224][1] == flops[84][1]
