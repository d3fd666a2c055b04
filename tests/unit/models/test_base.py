"""crate_edu.models.base: the reference switch, its former name, the layer stack."""

import pytest
import torch

import crate_edu
from crate_edu.models import (
    ISTA,
    MSSA,
    CRATEAlphaConfig,
    CRATEAlphaLayer,
    CRATEConfig,
    CRATELayer,
    CRATEMAEConfig,
    OvercompleteISTA,
    Transformer,
    ViTConfig,
    set_reference,
)
from tests.unit.models.twins import ATOL


def test_set_reference_switches_every_block():
    layer = CRATEAlphaLayer(16, 2, 8)
    assert set_reference(layer, True) is layer
    assert layer.mssa.reference and layer.ista.reference
    set_reference(layer, False)
    assert not layer.mssa.reference and not layer.ista.reference


def test_config_reference_reaches_every_block():
    model = crate_edu.create_model("crate_nano_cifar", depth=2, reference=True)
    flags = [m.reference for m in model.modules() if hasattr(m, "reference")]
    assert len(flags) == 2 * 2 and all(flags)  # MSSA and ISTA of each layer


RENAMED = "literal= was renamed reference= in crate_edu 0.2; use reference= with {}"


@pytest.mark.parametrize(
    "make,owner",
    [
        (lambda: MSSA(16, 2, 8, literal=True), "MSSA"),
        (lambda: ISTA(16, literal=True), "ISTA"),
        (lambda: OvercompleteISTA(16, literal=True), "OvercompleteISTA"),
        (lambda: CRATELayer(16, 2, 8, literal=True), "CRATELayer"),
        (lambda: CRATEConfig(literal=True), "CRATEConfig"),
        (lambda: CRATEAlphaConfig(literal=True), "CRATEAlphaConfig"),
        (lambda: ViTConfig(literal=True), "ViTConfig"),
        (lambda: CRATEMAEConfig(literal=True), "CRATEMAEConfig"),
        (lambda: crate_edu.create_model("vit_nano_cifar", literal=True), "create_model('vit_nano_cifar')"),
    ],
)
def test_the_former_name_literal_says_its_new_name(make, owner):
    with pytest.raises(TypeError) as info:
        make()
    message = str(info.value)
    assert message.startswith(RENAMED.format(owner)) and "\n" not in message


def test_setting_literal_on_a_block_is_an_error_not_a_silent_no_op():
    block = MSSA(16, 2, 8)
    with pytest.raises(TypeError, match="literal= was renamed reference="):
        block.literal = True
    block.reference = True  # the new name works
    assert block.reference


def test_reference_must_be_a_bool():
    with pytest.raises(TypeError, match="reference must be True or False, got 'yes'"):
        CRATEConfig(reference="yes")
    with pytest.raises(TypeError, match="reference must be True or False, got 1"):
        CRATEMAEConfig(dim=64, heads=4, decoder_heads=4, reference=1)


def test_transformer_stacks_layers_and_traces_each():
    torch.manual_seed(0)
    stack = Transformer([CRATELayer(32, 4, 8) for _ in range(3)]).eval()
    x = torch.randn(2, 11, 32)
    with torch.no_grad():
        out, traces = stack.forward_trace(x)
        expected = x
        for layer in stack.layers:
            expected = layer(expected)
        torch.testing.assert_close(stack(x), expected)
    torch.testing.assert_close(out, expected, atol=ATOL, rtol=1e-5)
    assert len(traces) == 3 and traces[-1].z_out is out
