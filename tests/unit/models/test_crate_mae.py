"""crate_edu.models.crate_mae: the decoder layer inverts a CRATE layer's two steps."""

import torch

from crate_edu.models import CRATEDecoderLayer
from tests.unit.models.twins import ATOL


def test_decoder_layer_structure():
    """Z̃^{ℓ+½} = D̃ LN(Z̃); Z̃^{ℓ+1} = Z̃^{ℓ+½} − MSSA(LN Z̃^{ℓ+½})."""
    torch.manual_seed(5)
    layer = CRATEDecoderLayer(32, 4, 8).eval()
    x = torch.randn(2, 7, 32)
    with torch.no_grad():
        out, trace = layer(x, return_trace=True)
        z_half = layer[0].norm(x) @ layer[0].fn.weight.T
        torch.testing.assert_close(trace.z_half, z_half)
        torch.testing.assert_close(
            trace.z_out, z_half - layer.mssa(layer[1].norm(z_half)), atol=ATOL, rtol=1e-5
        )
        torch.testing.assert_close(layer(x), out, atol=ATOL, rtol=1e-5)
    assert trace.codes is None
