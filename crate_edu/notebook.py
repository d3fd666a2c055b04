"""Small helpers the notebooks share: quick mode, devices, and checks that print what they verify.

Training notebooks also use :func:`setup_device` (CUDA, TPU, Apple MPS or CPU, with the matching
precision, printed) and :func:`warn_if_long_on_cpu` (a warning with the estimated time).

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
from dataclasses import dataclass
from typing import TypeVar

import torch

__all__ = [
    "QUICK",
    "LONG_RUN_SECONDS",
    "DeviceChoice",
    "quick_mode",
    "read_quick_env",
    "choose",
    "check_close",
    "check",
    "pick_device",
    "precision_for",
    "detect_device",
    "setup_device",
    "format_duration",
    "estimate_run_seconds",
    "warn_if_long_on_cpu",
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


# --------------------------------------------------------------------------------------------
# Device and precision for training notebooks (05, 06): what the trainer will use, said out loud.
# --------------------------------------------------------------------------------------------

#: Run estimates above this many seconds on a CPU trigger :func:`warn_if_long_on_cpu`.
LONG_RUN_SECONDS = 600.0

_PRECISION_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "no": torch.float32}


@dataclass(frozen=True)
class DeviceChoice:
    """The accelerator a notebook (and :func:`crate_edu.train.train`) will run on.

    Attributes:
        device: the ``torch.device`` to put models and tensors on.
        kind: ``'cuda'``, ``'xla'`` (a TPU through torch_xla), ``'mps'`` (Apple GPU) or ``'cpu'``.
        name: a human-readable name (the GPU model, ``'TPU (torch_xla)'``, ...).
        precision: the matching Accelerate ``mixed_precision`` value: ``'bf16'``, ``'fp16'`` or
            ``'no'`` (float32), as :func:`precision_for` picks it.
    """

    device: torch.device
    kind: str
    name: str
    precision: str

    @property
    def dtype(self) -> torch.dtype:
        """The autocast dtype of :attr:`precision` (``torch.float32`` for ``'no'``)."""
        return _PRECISION_DTYPES[self.precision]

    @property
    def is_cpu(self) -> bool:
        return self.kind == "cpu"

    def describe(self) -> str:
        """One line: device, name, precision, e.g. ``device: cpu (no GPU or TPU found), precision: fp32``."""
        prec = {"no": "fp32", "bf16": "bf16 mixed precision", "fp16": "fp16 mixed precision + loss scaling"}
        return f"device: {self.kind} ({self.name}), precision: {prec[self.precision]}"


def precision_for(kind: str, *, bf16_supported: bool | None = None) -> str:
    """The mixed-precision setting that suits a device kind (the trainer's ``--precision auto``).

    bf16 where the hardware has it natively (Ampere-or-newer CUDA GPUs, TPUs): it keeps float32's
    exponent range, so no loss scaling is needed. fp16 on older CUDA GPUs (with a gradient scaler).
    float32 (``'no'``) on CPU and Apple MPS, where autocast gains little or is incomplete.

    Args:
        kind: ``'cuda'``, ``'xla'``, ``'mps'`` or ``'cpu'``.
        bf16_supported: for ``'cuda'``, whether the GPU supports bf16 natively (None: ask torch).

    Raises:
        ValueError: an unknown kind.
    """
    from crate_edu.train.loop import auto_precision

    if kind not in ("cuda", "xla", "mps", "cpu"):
        raise ValueError(f"unknown device kind {kind!r}; choose one of: cuda, xla, mps, cpu")
    if kind == "cuda" and bf16_supported is not None:
        return "bf16" if bf16_supported else "fp16"
    return auto_precision(kind)


def _xla_device() -> torch.device | None:
    """The TPU's torch device when torch_xla is installed and finds one, else None."""
    import importlib.util

    if importlib.util.find_spec("torch_xla") is None:
        return None
    try:
        import torch_xla.core.xla_model as xm

        return torch.device(xm.xla_device())
    except Exception:  # installed but no TPU attached (or a broken runtime): not usable
        return None


def detect_device() -> DeviceChoice:
    """CUDA, else a TPU (torch_xla), else Apple MPS, else the CPU; with the precision to match.

    ``ACCELERATE_USE_CPU=1`` (what ``accelerate launch --cpu`` sets, and what the tests set) forces
    the CPU, as it does in the trainer. Prints nothing; :func:`setup_device` prints.
    """
    forced_cpu = os.environ.get("ACCELERATE_USE_CPU", "").strip().lower() in {"1", "true", "yes", "on"}
    if not forced_cpu and torch.cuda.is_available():
        return DeviceChoice(torch.device("cuda"), "cuda", torch.cuda.get_device_name(), precision_for("cuda"))
    xla = None if forced_cpu else _xla_device()
    if xla is not None:
        return DeviceChoice(xla, "xla", "TPU (torch_xla)", "bf16")
    mps = getattr(torch.backends, "mps", None)
    if not forced_cpu and mps is not None and mps.is_available():
        return DeviceChoice(torch.device("mps"), "mps", "Apple GPU (MPS)", "no")
    return DeviceChoice(torch.device("cpu"), "cpu", "no GPU or TPU found", "no")


def setup_device(verbose: bool = True) -> DeviceChoice:
    """:func:`detect_device`, printing one line saying which device and precision were picked."""
    choice = detect_device()
    if verbose:
        print(choice.describe())
    return choice


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
            "crate_edu.evaluation.metrics.train_throughput"
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
