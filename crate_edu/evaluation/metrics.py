"""How good a trained classifier is: its predictions, accuracy, confusion matrix, per-class accuracy.

    from crate_edu.evaluation.metrics import predict, confusion_matrix, per_class_accuracy
    pred = predict(model, test_set)                      # logits, predicted and true labels
    cm = confusion_matrix(pred.preds, pred.targets, 10)  # (10, 10): rows true, columns predicted
    acc = per_class_accuracy(pred.preds, pred.targets, 10)

Everything here returns tensors or small dataclasses (no plotting: :mod:`crate_edu.plotting.training`
draws them). What a model costs is in :mod:`crate_edu.evaluation.throughput` (measured speed) and
:mod:`crate_edu.evaluation.flops` (counted operations).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from crate_edu.evaluation.batches import iter_batches

__all__ = [
    "Predictions",
    "predict",
    "accuracy",
    "confusion_matrix",
    "per_class_accuracy",
]


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
