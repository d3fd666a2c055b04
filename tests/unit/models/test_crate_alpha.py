"""crate_edu.models.crate_alpha: the overcomplete sparse coding block, on both paths."""

import pytest
import torch
import torch.nn.functional as F

from crate_edu.models import OvercompleteISTA
from tests.unit.models.twins import assert_same_forward_and_grads, twins


@pytest.mark.parametrize("decoupled", [True, False], ids=["decoupled", "tied"])
def test_overcomplete_ista_fast_equals_reference(decoupled):
    fast, reference = twins(
        lambda ref: OvercompleteISTA(16, overcomplete_ratio=4, reference=ref, decoupled=decoupled)
    )
    assert_same_forward_and_grads(fast, reference, torch.randn(2, 5, 16))
    x = torch.randn(3, 16)
    for fast_part, ref_part in zip(fast.forward_parts(x), reference.forward_parts(x), strict=True):
        torch.testing.assert_close(fast_part, ref_part, atol=1e-5, rtol=1e-5)  # codes, then out


def test_overcomplete_ista_is_two_ista_steps_from_zero():
    torch.manual_seed(3)
    block = OvercompleteISTA(8, overcomplete_ratio=4, eta=0.1, lambd=0.1)
    x = torch.randn(5, 8)
    D, D1 = block.D.detach(), block.D1.detach()
    a = torch.zeros(5, 32)
    for _ in range(2):  # a ← ReLU(a − η D^T (D a − x) − η λ), tokens as rows
        a = F.relu(a - 0.1 * (a @ D.T - x) @ D - 0.01)
    codes, out = block.forward_parts(x)
    torch.testing.assert_close(codes, a)
    torch.testing.assert_close(out, a @ D1.T)
    torch.testing.assert_close(block(x), out)
