"""What training or inference costs on this machine: images per second, measured.

    from crate_edu.evaluation.throughput import train_throughput, inference_throughput
    tp = train_throughput(model, image_size=224, batch_size=8, steps=3)
    tp.images_per_second, tp.describe()

Throughputs are wall-clock measurements of random images through the model (no data loading) and
vary from run to run; :mod:`crate_edu.evaluation.flops` counts the operations instead.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from crate_edu.device import PRECISION_DTYPES, autocast, sync
from crate_edu.models.base import pair

__all__ = ["Throughput", "measure_throughput", "train_throughput", "inference_throughput"]


@dataclass(frozen=True)
class Throughput:
    """A measured speed.

    Attributes:
        mode: ``'train'`` (forward, backward, optimiser step) or ``'inference'`` (forward only).
        images_per_second: images processed per second of wall-clock time (after warm-up).
        seconds_per_step: mean wall-clock seconds per batch.
        batch_size, steps: the measurement's batch size and number of timed batches.
        image_size: side of the (random) square images in pixels, or (height, width).
        device: the device type (``'cpu'``, ``'cuda'``, ...).
        precision: ``'no'`` (float32), ``'bf16'`` or ``'fp16'`` autocast.
    """

    mode: str
    images_per_second: float
    seconds_per_step: float
    batch_size: int
    steps: int
    image_size: int | tuple[int, int]
    device: str
    precision: str

    def describe(self) -> str:
        """One line: ``train: <images/s> images/s (<s> s per batch of 8, 224 px, cpu, fp32)``."""
        prec = "fp32" if self.precision == "no" else self.precision
        size = "x".join(map(str, self.image_size)) if isinstance(self.image_size, tuple) else self.image_size
        return (
            f"{self.mode}: {self.images_per_second:.1f} images/s ({self.seconds_per_step:.3f} s per batch "
            f"of {self.batch_size}, {size} px, {self.device}, {prec})"
        )


def measure_throughput(
    model: nn.Module,
    *,
    mode: str = "train",
    image_size: int | tuple[int, int] | None = None,
    batch_size: int = 8,
    steps: int = 5,
    warmup: int = 1,
    device: torch.device | str | None = None,
    precision: str = "no",
    num_classes: int | None = None,
    seed: int = 0,
) -> Throughput:
    """Time ``steps`` batches of random images through ``model`` (after ``warmup`` untimed ones).

    ``mode='train'`` times what a training step costs: forward, cross-entropy, backward and an
    AdamW step, on a deep copy of the model (the caller's weights are left untouched).
    ``mode='inference'`` times forward passes under ``torch.no_grad`` in eval mode. Data loading
    is not included: this is the model's cost, the best a training run can reach.

    Args:
        model: a classifier; ``model.config.image_size`` / ``num_classes`` are used by default.
        mode: ``'train'`` or ``'inference'``.
        image_size: side of the random square images, or (height, width) (default: the model's).
        batch_size, steps, warmup: batch size, timed batches and untimed warm-up batches.
        device: where to run (default: where the model is).
        precision: ``'no'`` (float32), ``'bf16'`` or ``'fp16'`` autocast (fp16 needs a GPU).
        num_classes: number of classes for the random labels (default: the model's).
        seed: seeds the random images and labels.

    Returns:
        A :class:`Throughput`.
    """
    _check_settings(mode, precision, batch_size, steps, warmup)
    cfg = getattr(model, "config", None)
    image_size = image_size if image_size is not None else getattr(cfg, "image_size", None)
    num_classes = num_classes if num_classes is not None else getattr(cfg, "num_classes", None)
    if image_size is None or num_classes is None:
        raise ValueError("the model has no config: pass image_size and num_classes")
    if device is None:
        first = next(model.parameters(), None)
        device = first.device if first is not None else torch.device("cpu")
    device = torch.device(device)
    if precision == "fp16" and device.type == "cpu":
        raise ValueError("fp16 autocast needs a GPU; use precision='bf16' or 'no' on a CPU")

    g = torch.Generator().manual_seed(seed)
    shape = (batch_size, getattr(cfg, "channels", 3), *pair(image_size))  # (B, C, H, W)
    x = torch.randn(*shape, generator=g).to(device)
    y = torch.randint(0, num_classes, (batch_size,), generator=g).to(device)  # (B,)
    if mode == "train":
        step, restore = _train_step(model, x, y, device, precision)
    else:
        step, restore = _inference_step(model, x, device, precision)
    try:
        elapsed = _timed(step, warmup, steps, device)
    finally:
        restore()
    return Throughput(
        mode=mode,
        images_per_second=batch_size * steps / elapsed,
        seconds_per_step=elapsed / steps,
        batch_size=batch_size,
        steps=steps,
        image_size=tuple(image_size) if isinstance(image_size, (tuple, list)) else int(image_size),
        device=device.type,
        precision=precision,
    )


def _check_settings(mode: str, precision: str, batch_size: int, steps: int, warmup: int) -> None:
    if mode not in ("train", "inference"):
        raise ValueError(f"unknown mode {mode!r}; choose 'train' or 'inference'")
    if precision not in PRECISION_DTYPES:
        raise ValueError(f"unknown precision {precision!r}; choose one of: {', '.join(PRECISION_DTYPES)}")
    for name, value, low in (("batch_size", batch_size, 1), ("steps", steps, 1), ("warmup", warmup, 0)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")


def _train_step(
    model: nn.Module, x: Tensor, y: Tensor, device: torch.device, precision: str
) -> tuple[Callable[[], None], Callable[[], None]]:
    """One training step (forward, cross-entropy, backward, AdamW) on a copy of ``model``."""
    net = copy.deepcopy(model).to(device).train()
    opt = torch.optim.AdamW(net.parameters(), lr=1e-4)
    scaler = torch.amp.GradScaler(device.type) if precision == "fp16" else None

    def step() -> None:
        with autocast(device, precision):
            loss = F.cross_entropy(net(x).float(), y)
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
        else:
            loss.backward()
            opt.step()
        opt.zero_grad(set_to_none=True)

    return step, lambda: None  # the copy is thrown away: nothing to restore


def _inference_step(
    model: nn.Module, x: Tensor, device: torch.device, precision: str
) -> tuple[Callable[[], None], Callable[[], None]]:
    """One forward pass without gradients in eval mode; ``restore`` puts the mode back."""
    net = model.to(device)
    was_training = net.training
    net.eval()

    def step() -> None:
        with torch.no_grad(), autocast(device, precision):
            net(x)

    return step, lambda: net.train(was_training)


def _timed(step: Callable[[], None], warmup: int, steps: int, device: torch.device) -> float:
    """Seconds of wall-clock time for ``steps`` calls of ``step``, after ``warmup`` untimed ones."""
    for _ in range(warmup):
        step()
    sync(device)  # the clock starts when the device has finished the warm-up
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    sync(device)
    return time.perf_counter() - t0


def train_throughput(model: nn.Module, **kwargs) -> Throughput:
    """:func:`measure_throughput` with ``mode='train'`` (forward + backward + AdamW step)."""
    return measure_throughput(model, mode="train", **kwargs)


def inference_throughput(model: nn.Module, **kwargs) -> Throughput:
    """:func:`measure_throughput` with ``mode='inference'`` (forward only, no gradients)."""
    return measure_throughput(model, mode="inference", **kwargs)
