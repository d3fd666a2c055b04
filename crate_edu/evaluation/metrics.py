"""Evaluation numbers for a trained classifier, and what training or inference costs.

    from crate_edu.evaluation.metrics import predict, confusion_matrix, per_class_accuracy, train_throughput
    pred = predict(model, test_set)                      # logits, predicted and true labels
    cm = confusion_matrix(pred.preds, pred.targets, 10)  # (10, 10): rows true, columns predicted
    acc = per_class_accuracy(pred.preds, pred.targets, 10)
    tp = train_throughput(model, image_size=224, batch_size=8, steps=3)
    tp.images_per_second

Everything here returns tensors or small dataclasses (no plotting: :mod:`crate_edu.plotting.training`
draws them). Throughputs are wall-clock measurements and vary from run to run.
"""

from __future__ import annotations

import copy
import time
from contextlib import nullcontext
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset

from crate_edu.evaluation.batches import iter_batches

__all__ = [
    "Predictions",
    "Throughput",
    "predict",
    "accuracy",
    "confusion_matrix",
    "per_class_accuracy",
    "measure_throughput",
    "train_throughput",
    "inference_throughput",
]

PRECISIONS = ("no", "bf16", "fp16")


@dataclass
class Predictions:
    """A model's outputs over a dataset, on the CPU.

    Attributes:
        logits: float32 ``(N, C)``.
        preds: int64 ``(N,)``, the arg-max class.
        targets: int64 ``(N,)``, the true labels.
    """

    logits: torch.Tensor
    preds: torch.Tensor
    targets: torch.Tensor

    @property
    def accuracy(self) -> float:
        """Fraction of correct predictions."""
        return accuracy(self.preds, self.targets)

    @property
    def num_classes(self) -> int:
        return int(self.logits.shape[-1])


@torch.no_grad()
def predict(
    model: nn.Module,
    data: Dataset | DataLoader | tuple[torch.Tensor, torch.Tensor],
    *,
    batch_size: int = 256,
    device: torch.device | str | None = None,
) -> Predictions:
    """Run ``model`` (in eval mode) over every image of ``data`` and collect the outputs.

    Args:
        model: a classifier mapping images ``(B, 3, S, S)`` to logits ``(B, C)``.
        data: a dataset of ``(image, label)``, a DataLoader of batches, or tensors ``(images, labels)``.
        batch_size: images per forward pass (ignored for a DataLoader).
        device: where to run (default: where the model's parameters are). The model is moved
            there and left there; its train/eval mode is restored afterwards.

    Returns:
        :class:`Predictions` on the CPU, in the order of ``data``.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    if not isinstance(data, (Dataset, DataLoader, tuple)):
        raise TypeError(
            "predict() takes a Dataset, a DataLoader or an (images, labels) tuple of tensors, "
            f"got {type(data).__name__}"
        )
    if device is None:
        first = next(model.parameters(), None)
        device = first.device if first is not None else torch.device("cpu")
    device = torch.device(device)
    was_training = model.training
    model.to(device).eval()
    logits, targets = [], []
    try:
        for x, y in iter_batches(data, batch_size, with_labels=True):
            logits.append(model(x.to(device)).float().cpu())  # (B, C)
            targets.append(torch.as_tensor(y, dtype=torch.int64).cpu())  # (B,)
    finally:
        model.train(was_training)
    if not logits:
        raise ValueError("predict() got no images: the dataset is empty")
    all_logits = torch.cat(logits)
    return Predictions(all_logits, all_logits.argmax(dim=-1), torch.cat(targets))


def _check_labels(preds: torch.Tensor, targets: torch.Tensor, num_classes: int | None = None) -> None:
    if preds.shape != targets.shape or preds.dim() != 1:
        raise ValueError(
            f"preds and targets must be 1-D label tensors of the same length, got shapes "
            f"{tuple(preds.shape)} and {tuple(targets.shape)}"
        )
    if num_classes is not None:
        if num_classes < 1:
            raise ValueError(f"num_classes must be positive, got {num_classes}")
        for name, t in (("preds", preds), ("targets", targets)):
            if t.numel() and (int(t.min()) < 0 or int(t.max()) >= num_classes):
                raise ValueError(
                    f"{name} holds labels outside 0..{num_classes - 1} (min {int(t.min())}, max "
                    f"{int(t.max())}); pass the dataset's number of classes"
                )


def accuracy(preds: torch.Tensor, targets: torch.Tensor) -> float:
    """Fraction of ``preds`` equal to ``targets`` (both int ``(N,)``)."""
    _check_labels(preds, targets)
    if preds.numel() == 0:
        raise ValueError("accuracy of zero predictions is undefined")
    return float((preds == targets).double().mean())


def confusion_matrix(preds: torch.Tensor, targets: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Counts ``M[i, j]`` of images of true class ``i`` predicted as ``j``: int64 ``(C, C)``.

    Row sums are the class counts; the trace over the total is the accuracy.
    """
    preds, targets = torch.as_tensor(preds).long().cpu(), torch.as_tensor(targets).long().cpu()
    _check_labels(preds, targets, num_classes)
    flat = targets * num_classes + preds  # (N,): one bin per (true, predicted) pair
    return torch.bincount(flat, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def per_class_accuracy(preds: torch.Tensor, targets: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Accuracy within each true class: float64 ``(C,)``, NaN for a class with no images.

    The mean weighted by the class counts is the overall accuracy.
    """
    cm = confusion_matrix(preds, targets, num_classes).double()
    counts = cm.sum(dim=1)  # (C,)
    return torch.where(counts > 0, cm.diagonal() / counts.clamp_min(1), torch.full_like(counts, float("nan")))


# --------------------------------------------------------------------------------------------
# Throughput.
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Throughput:
    """A measured speed.

    Attributes:
        mode: ``'train'`` (forward, backward, optimiser step) or ``'inference'`` (forward only).
        images_per_second: images processed per second of wall-clock time (after warm-up).
        seconds_per_step: mean wall-clock seconds per batch.
        batch_size, steps: the measurement's batch size and number of timed batches.
        image_size: side of the (random) images in pixels.
        device: the device type (``'cpu'``, ``'cuda'``, ...).
        precision: ``'no'`` (float32), ``'bf16'`` or ``'fp16'`` autocast.
    """

    mode: str
    images_per_second: float
    seconds_per_step: float
    batch_size: int
    steps: int
    image_size: int
    device: str
    precision: str

    def describe(self) -> str:
        """One line, e.g. ``train: 41.2 images/s (0.194 s per batch of 8, 224 px, cpu, fp32)``."""
        prec = "fp32" if self.precision == "no" else self.precision
        return (
            f"{self.mode}: {self.images_per_second:.1f} images/s ({self.seconds_per_step:.3f} s per batch "
            f"of {self.batch_size}, {self.image_size} px, {self.device}, {prec})"
        )


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "xla":  # pragma: no cover - needs a TPU
        import torch_xla.core.xla_model as xm

        xm.mark_step()
        xm.wait_device_ops()
    elif device.type == "mps":  # pragma: no cover - needs an Apple GPU
        torch.mps.synchronize()


def _autocast(device: torch.device, precision: str):
    if precision == "no":
        return nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)


def measure_throughput(
    model: nn.Module,
    *,
    mode: str = "train",
    image_size: int | None = None,
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
        image_size: side of the random square images (default: the model's).
        batch_size, steps, warmup: batch size, timed batches and untimed warm-up batches.
        device: where to run (default: where the model is).
        precision: ``'no'`` (float32), ``'bf16'`` or ``'fp16'`` autocast (fp16 needs a GPU).
        num_classes: number of classes for the random labels (default: the model's).
        seed: seeds the random images and labels.

    Returns:
        A :class:`Throughput`.
    """
    if mode not in ("train", "inference"):
        raise ValueError(f"unknown mode {mode!r}; choose 'train' or 'inference'")
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; choose one of: {', '.join(PRECISIONS)}")
    for name, value, low in (("batch_size", batch_size, 1), ("steps", steps, 1), ("warmup", warmup, 0)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
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
    channels = getattr(cfg, "channels", 3)

    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch_size, channels, image_size, image_size, generator=g).to(device)  # (B, 3, S, S)
    y = torch.randint(0, num_classes, (batch_size,), generator=g).to(device)  # (B,)

    if mode == "train":
        net = copy.deepcopy(model).to(device).train()
        opt = torch.optim.AdamW(net.parameters(), lr=1e-4)
        scaler = torch.amp.GradScaler(device.type) if precision == "fp16" else None

        def step() -> None:
            with _autocast(device, precision):
                loss = F.cross_entropy(net(x).float(), y)
            if scaler is not None:
                scaler.scale(loss).backward()
                scaler.step(opt)
                scaler.update()
            else:
                loss.backward()
                opt.step()
            opt.zero_grad(set_to_none=True)
    else:
        net = model.to(device)
        was_training = net.training
        net.eval()

        def step() -> None:
            with torch.no_grad(), _autocast(device, precision):
                net(x)

    try:
        for _ in range(warmup):
            step()
        _sync(device)
        t0 = time.perf_counter()
        for _ in range(steps):
            step()
        _sync(device)
        elapsed = time.perf_counter() - t0
    finally:
        if mode == "inference":
            net.train(was_training)
    return Throughput(
        mode=mode,
        images_per_second=batch_size * steps / elapsed,
        seconds_per_step=elapsed / steps,
        batch_size=batch_size,
        steps=steps,
        image_size=int(image_size),
        device=device.type,
        precision=precision,
    )


def train_throughput(model: nn.Module, **kwargs) -> Throughput:
    """:func:`measure_throughput` with ``mode='train'`` (forward + backward + AdamW step)."""
    return measure_throughput(model, mode="train", **kwargs)


def inference_throughput(model: nn.Module, **kwargs) -> Throughput:
    """:func:`measure_throughput` with ``mode='inference'`` (forward only, no gradients)."""
    return measure_throughput(model, mode="inference", **kwargs)
