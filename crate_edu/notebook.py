"""Small helpers the notebooks share: quick mode, checks that print what they verify, run times.

Training notebooks also use :func:`warn_if_long_on_cpu` (a warning with the estimated time); the
device and its precision come from :func:`crate_edu.device.setup_device`.

``CRATE_EDU_QUICK=1`` (set by the test configuration) shrinks every notebook to a CPU run of
seconds. The variable is read once, when this module is imported, into ``QUICK``; ``choose`` and
``quick_mode`` use that one reading, so a notebook cannot mix modes (restart the kernel after
changing the variable)::

    from crate_edu.notebook import QUICK, choose, check_close
    steps = choose(quick=50, full=2000)
    check_close("closed-form gradient vs autograd", grad, auto_grad, atol=1e-10)
"""

from __future__ import annotations

import math
import os
import warnings
from typing import TypeVar

import torch

from crate_edu.device import DeviceChoice
from crate_edu.launch import LaunchCommand, read_launch_command
from crate_edu.renamed import renamed_name

__all__ = [
    "QUICK",
    "LONG_RUN_SECONDS",
    "quick_mode",
    "read_quick_env",
    "choose",
    "check_close",
    "check",
    "format_duration",
    "estimate_run_seconds",
    "warn_if_long_on_cpu",
    "LaunchCommand",
    "read_launch_command",
]

T = TypeVar("T")


def read_quick_env(environ=None) -> bool:
    """Whether ``CRATE_EDU_QUICK`` in ``environ`` (default ``os.environ``) is a true value
    (1, true, yes, on; any case). Only the import of this module calls it for the mode."""
    environ = os.environ if environ is None else environ
    return environ.get("CRATE_EDU_QUICK", "").strip().lower() in {"1", "true", "yes", "on"}


#: Quick mode, read once from ``CRATE_EDU_QUICK`` when this module is imported.
QUICK: bool = read_quick_env()


def quick_mode() -> bool:
    """The mode this kernel runs in: :data:`QUICK`, read once at import (not the variable now)."""
    return QUICK


def choose(quick: T, full: T) -> T:
    """``quick`` in quick mode (CI, a fast first read), ``full`` otherwise; follows :data:`QUICK`."""
    return quick if QUICK else full


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


# --------------------------------------------------------------------------------------------
# Run time on a CPU, said out loud before a long run (training notebooks 05, 06).
# --------------------------------------------------------------------------------------------

#: Run estimates above this many seconds on a CPU trigger :func:`warn_if_long_on_cpu`.
LONG_RUN_SECONDS = 600.0


def format_duration(seconds: float) -> str:
    """A rounded duration for people: ``'45 s'``, ``'12 min'``, ``'3.4 h'``, ``'2.1 days'``."""
    if not math.isfinite(seconds) or seconds < 0:
        raise ValueError(f"a duration must be a finite number of seconds >= 0, got {seconds!r}")
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f} min"
    if seconds < 48 * 3600:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} days"


def estimate_run_seconds(n_images: int, epochs: float, images_per_second: float) -> float:
    """Seconds to train ``epochs`` passes over ``n_images`` at a measured ``images_per_second``.

    Evaluation and data loading are not included: treat the result as a lower bound.
    """
    if n_images < 0 or epochs < 0:
        raise ValueError(f"n_images and epochs must be >= 0, got {n_images!r} and {epochs!r}")
    if not images_per_second > 0:
        raise ValueError(
            f"images_per_second must be positive, got {images_per_second!r}; measure it with "
            "crate_edu.evaluation.train_throughput"
        )
    return n_images * epochs / images_per_second


def warn_if_long_on_cpu(
    device: DeviceChoice | torch.device | str,
    estimated_seconds: float,
    *,
    what: str = "this run",
    threshold_s: float = LONG_RUN_SECONDS,
) -> str | None:
    """Warn (``warnings.warn``) when a run estimated to last over ``threshold_s`` starts on a CPU.

    Returns the warning text, or None when there is nothing to warn about (an accelerator, or a
    short run).
    """
    kind = device.kind if isinstance(device, DeviceChoice) else torch.device(device).type
    if kind != "cpu" or estimated_seconds <= threshold_s:
        return None
    msg = (
        f"{what} is estimated to take about {format_duration(estimated_seconds)} on this CPU. "
        "Use a GPU (on Colab: Runtime > Change runtime type > GPU), or set CRATE_EDU_QUICK=1 for the "
        "small configuration."
    )
    warnings.warn(msg, UserWarning, stacklevel=2)
    return msg


def __getattr__(name: str):
    """Names of crate_edu 0.1 that moved answer with their new home (crate_edu.renamed)."""
    renamed_name(__name__, name)
