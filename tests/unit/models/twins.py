"""A block on the fast path and its twin on the reference path, with the same weights."""

import torch

ATOL = 1e-5  # float32, equal computations in a different order


def twins(make, seed=0):
    """(fast, reference): ``make(reference: bool)`` twice, the reference one given the fast one's weights."""
    torch.manual_seed(seed)
    fast = make(False)
    reference = make(True)
    reference.load_state_dict(fast.state_dict())
    return fast, reference


def assert_same_forward_and_grads(fast, reference, x, atol=ATOL):
    """Equal outputs, input gradients and parameter gradients for a random upstream gradient."""
    x1 = x.clone().requires_grad_(True)
    x2 = x.clone().requires_grad_(True)
    y1, y2 = fast(x1), reference(x2)
    torch.testing.assert_close(y1, y2, atol=atol, rtol=1e-5)
    g = torch.randn_like(y1)
    (y1 * g).sum().backward()
    (y2 * g).sum().backward()
    torch.testing.assert_close(x1.grad, x2.grad, atol=atol, rtol=1e-5)
    for (n1, p1), (_, p2) in zip(fast.named_parameters(), reference.named_parameters(), strict=True):
        torch.testing.assert_close(p1.grad, p2.grad, atol=atol, rtol=1e-5, msg=f"gradient of {n1}")
