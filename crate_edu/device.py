"""The one place for devices and precision: which device, which mixed precision, autocast, sync.

Three users, one set of rules:

* the trainer (:mod:`crate_edu.train`) turns ``--precision`` into Accelerate's setting with
  :func:`resolve_precision` and learns from :func:`cpu_only` whether the run stays on the CPU;
* measurements (:mod:`crate_edu.evaluation.metrics`) run under :func:`autocast` and wait for the
  device with :func:`sync` before they read a clock;
* notebooks call :func:`setup_device` to learn, in one printed line, which device and precision a
  run will use (:func:`detect_device` without the line; :func:`pick_device` for the device alone).

Precisions are Accelerate's ``mixed_precision`` values: ``'no'`` (float32), ``'bf16'``, ``'fp16'``
(with a gradient scaler), and ``'auto'``, which picks one of them for the device (:func:`auto_precision`).
"""

from __future__ import annotations

import os
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any

import torch

from crate_edu.errors import ConfigError

__all__ = [
    "PRECISIONS",
    "PRECISION_DTYPES",
    "DeviceChoice",
    "auto_precision",
    "autocast",
    "cpu_only",
    "detect_device",
    "distributed_state",
    "pick_device",
    "precision_for",
    "resolve_precision",
    "setup_device",
    "sum_dtype",
    "sync",
    "xla_device",
]

#: Mixed-precision settings: ``auto`` picks bf16 where the accelerator supports it, else fp16 on
#: CUDA, else no mixed precision (CPU).
PRECISIONS: tuple[str, ...] = ("auto", "no", "fp16", "bf16")
#: The autocast dtype of each fixed setting (``'no'``: float32, autocast off).
PRECISION_DTYPES: dict[str, torch.dtype] = {
    "no": torch.float32,
    "bf16": torch.bfloat16,
    "fp16": torch.float16,
}

#: Where fp16 can run (Accelerate's GPU-like device types).
_FP16_DEVICES = ("cuda", "npu", "xpu", "mlu", "musa", "mps")


# --------------------------------------------------------------------------------------------
# Which device: the trainer's rule (Accelerate) and the notebooks' one-line report.
# --------------------------------------------------------------------------------------------


def _cpu_forced() -> bool:
    """``ACCELERATE_USE_CPU`` is set to a true value (what ``accelerate launch --cpu`` and the tests set)."""
    return os.environ.get("ACCELERATE_USE_CPU", "").strip().lower() in {"1", "true", "yes", "on", "y", "t"}


def cpu_only() -> bool:
    """True when the run must use the CPU: ``ACCELERATE_USE_CPU=1`` (what ``accelerate launch
    --cpu`` sets), or no accelerator (CUDA, TPU, MPS, NPU, XPU) is visible.

    Accelerate only sets up multi-process CPU training (``torchrun`` on a machine without GPUs)
    when told that the run is CPU-only, so every state and accelerator here is created with it.
    """
    from accelerate.utils import is_mps_available, is_npu_available, is_torch_xla_available, is_xpu_available

    if _cpu_forced():
        return True
    return not (
        torch.cuda.is_available()
        or is_torch_xla_available()
        or is_mps_available()
        or is_npu_available()
        or is_xpu_available()
    )


def distributed_state() -> Any:
    """Accelerate's ``PartialState`` of this process (one process, or one of a launched group)."""
    from accelerate import PartialState

    return PartialState(cpu=cpu_only())


def xla_device() -> torch.device | None:
    """The TPU's torch device when torch_xla is installed and finds one, else None."""
    import importlib.util

    if importlib.util.find_spec("torch_xla") is None:
        return None
    try:
        import torch_xla.core.xla_model as xm

        return torch.device(xm.xla_device())
    except Exception:  # installed but no TPU attached (or a broken runtime): not usable
        return None


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
        return PRECISION_DTYPES[self.precision]

    @property
    def is_cpu(self) -> bool:
        return self.kind == "cpu"

    def describe(self) -> str:
        """One line: device, name, precision, e.g. ``device: cpu (no GPU or TPU found), precision: fp32``."""
        prec = {"no": "fp32", "bf16": "bf16 mixed precision", "fp16": "fp16 mixed precision + loss scaling"}
        return f"device: {self.kind} ({self.name}), precision: {prec[self.precision]}"


def detect_device() -> DeviceChoice:
    """CUDA, else a TPU (torch_xla), else Apple MPS, else the CPU; with the precision to match.

    ``ACCELERATE_USE_CPU=1`` (what ``accelerate launch --cpu`` sets, and what the tests set) forces
    the CPU, as it does in the trainer. Prints nothing; :func:`setup_device` prints.
    """
    forced_cpu = _cpu_forced()
    if not forced_cpu and torch.cuda.is_available():
        return DeviceChoice(torch.device("cuda"), "cuda", torch.cuda.get_device_name(), precision_for("cuda"))
    xla = None if forced_cpu else xla_device()
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


# --------------------------------------------------------------------------------------------
# Which precision.
# --------------------------------------------------------------------------------------------


def _bf16_supported_on_cuda() -> bool:
    return bool(torch.cuda.is_bf16_supported(including_emulation=False))


def auto_precision(device_type: str) -> str:
    """What ``--precision auto`` picks on a ``device_type`` device (``accelerate launch`` aside):
    bf16 on a GPU that has it natively (Ampere or newer) and on TPU, fp16 on older CUDA GPUs,
    none elsewhere."""
    if device_type == "cuda":
        return "bf16" if _bf16_supported_on_cuda() else "fp16"
    if device_type == "xla":
        return "bf16"
    return "no"


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
    if kind not in ("cuda", "xla", "mps", "cpu"):
        raise ValueError(f"unknown device kind {kind!r}; choose one of: cuda, xla, mps, cpu")
    if kind == "cuda" and bf16_supported is not None:
        return "bf16" if bf16_supported else "fp16"
    return auto_precision(kind)


def resolve_precision(requested: str, device_type: str) -> str:
    """The Accelerate ``mixed_precision`` value for ``requested`` on a ``device_type`` device.

    ``auto``: ``ACCELERATE_MIXED_PRECISION`` if ``accelerate launch`` set it; else bf16 on a GPU
    that has it natively (Ampere or newer) and on TPU, fp16 on older CUDA GPUs, none on CPU.

    Raises:
        ConfigError: the hardware cannot run the requested precision.
    """
    if requested == "auto":
        env = os.environ.get("ACCELERATE_MIXED_PRECISION")
        if env not in ("no", "fp16", "bf16"):
            return auto_precision(device_type)
        requested = env
    if requested == "fp16" and device_type not in _FP16_DEVICES:
        raise ConfigError(
            f"--precision fp16 needs a GPU, but this process runs on {device_type}; "
            "use --precision no (or bf16, slower on most CPUs)"
        )
    if requested == "bf16" and device_type == "cuda" and not _bf16_supported_on_cuda():
        raise ConfigError(
            f"--precision bf16 is not supported by this GPU ({torch.cuda.get_device_name()}); "
            "use --precision fp16 or auto"
        )
    return requested


def sum_dtype(device: torch.device) -> torch.dtype:
    """Accumulator dtype for sums of losses: float64 where the device has it (not MPS or TPU)."""
    return torch.float64 if device.type in ("cpu", "cuda") else torch.float32


# --------------------------------------------------------------------------------------------
# Running under a precision, and timing on an asynchronous device.
# --------------------------------------------------------------------------------------------


def autocast(device: torch.device, precision: str):
    """``torch.autocast`` to the dtype of ``precision`` (``'bf16'``, ``'fp16'``); a no-op for ``'no'``."""
    if precision == "no":
        return nullcontext()
    return torch.autocast(device_type=device.type, dtype=PRECISION_DTYPES[precision])


def sync(device: torch.device) -> None:
    """Wait until ``device`` has finished the work queued so far (before reading a clock)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "xla":  # pragma: no cover - needs a TPU
        import torch_xla.core.xla_model as xm

        xm.mark_step()
        xm.wait_device_ops()
    elif device.type == "mps":  # pragma: no cover - needs an Apple GPU
        torch.mps.synchronize()
