"""Small helpers the notebooks share: quick mode, devices, and checks that print what they verify.

``CRATE_EDU_QUICK=1`` (set by the test configuration) shrinks every notebook to a CPU run of
seconds; a notebook reads it once through ``QUICK`` and picks sizes with ``choose``::

    from crate_edu.notebook import QUICK, choose, check_close
    steps = choose(quick=50, full=2000)
    check_close("closed-form gradient vs autograd", grad, auto_grad, atol=1e-10)
"""

from __future__ import annotations

import os
from typing import TypeVar

import torch

__all__ = ["QUICK", "quick_mode", "choose", "check_close", "check", "pick_device"]

T = TypeVar("T")


def quick_mode() -> bool:
    """True when ``CRATE_EDU_QUICK`` is set to a true value (1, true, yes)."""
    return os.environ.get("CRATE_EDU_QUICK", "").strip().lower() in {"1", "true", "yes", "on"}


QUICK = quick_mode()


def choose(quick: T, full: T) -> T:
    """``quick`` in quick mode (CI, a fast first read), ``full`` otherwise."""
    return quick if quick_mode() else full


def check_close(what: str, actual, expected, *, atol: float = 1e-6, rtol: float = 0.0) -> None:
    """Assert ``actual`` ≈ ``expected`` elementwise and print one line with the max abs difference.

    The printed line is rounded to an order of magnitude, so it reads the same on every run and
    nbval can compare it. Returns nothing, so a cell ending with it shows only that line.
    """
    a = torch.as_tensor(actual, dtype=torch.float64)
    b = torch.as_tensor(expected, dtype=torch.float64)
    if a.shape != b.shape:
        raise AssertionError(f"{what}: shapes differ, {tuple(a.shape)} vs {tuple(b.shape)}")
    diff = (a - b).abs().max().item() if a.numel() else 0.0
    bound = atol + rtol * b.abs().max().item() if b.numel() else atol
    if not diff <= bound:
        raise AssertionError(f"{what}: max |difference| {diff:.3e} exceeds tolerance {bound:.1e}")
    print(f"✓ {what}: max |difference| < {max(bound, 1e-300):.0e}")


def check(what: str, condition: bool, detail: str = "") -> None:
    """Assert ``condition`` and print one ✓ line (``detail`` should be deterministic text)."""
    if not condition:
        raise AssertionError(f"{what} failed" + (f": {detail}" if detail else ""))
    print(f"✓ {what}" + (f" ({detail})" if detail else ""))


def pick_device(verbose: bool = True) -> torch.device:
    """CUDA if available, else Apple MPS, else CPU; prints which."""
    if torch.cuda.is_available():
        device = torch.device("cuda")
    elif getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        device = torch.device("mps")
    else:
        device = torch.device("cpu")
    if verbose:
        print(f"device: {device}")
    return device
