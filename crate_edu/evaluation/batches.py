"""Batches of images (and labels) from whatever holds them: the one batching helper of crate_edu.

    from crate_edu.evaluation.batches import iter_batches
    for x in iter_batches(test_set, 256, limit=1000):                  # x: (B, C, H, W) images
        ...
    for x, y in iter_batches((images, labels), 64, with_labels=True):  # y: (B,) int64 labels
        ...
    for x in iter_batches(train_set, 32, order=torch.randperm(len(train_set))):  # one shuffled epoch
        ...

``data`` may be a tensor of images ``(N, C, H, W)``, an ``(images, labels)`` tuple of tensors, a
dataset of ``(image, label)`` pairs (anything with ``len`` and ``[i]``), or a ``DataLoader``, whose
own batches are passed through. Batches come in order (``order`` chooses another), the last one
may be smaller, and nothing random happens here.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch
from torch import Tensor
from torch.utils.data import DataLoader, default_collate

__all__ = ["iter_batches"]


def iter_batches(
    data,
    batch_size: int,
    *,
    limit: int | None = None,
    order: Tensor | Sequence[int] | None = None,
    with_labels: bool = False,
) -> Iterator[Tensor] | Iterator[tuple[Tensor, Tensor]]:
    """Yield image batches ``(B, C, H, W)``, or ``(images, labels)`` pairs with ``with_labels``.

    Args:
        data: images as a tensor ``(N, C, H, W)``; an ``(images, labels)`` tuple of tensors; a
            dataset of ``(image, label)``; or a ``DataLoader`` (its batches as they come:
            ``batch_size`` is its own, and ``limit`` / ``order`` do not apply).
        batch_size: items per batch (the last batch may hold fewer).
        limit: use only the first ``limit`` items (of ``order``, when given).
        order: the indices to visit, in that order (e.g. one epoch's permutation); default
            ``0 .. N - 1``.
        with_labels: yield ``(images, labels)``; labels are int64 ``(B,)`` for a dataset.

    A dataset that keeps uint8 images in ``data.images`` and has no ``transform`` (the
    ``TensorImageDataset`` and ``ClutteredDigits`` of :mod:`crate_edu.data`) is read a batch at a
    time, ``normalize_uint8(data.images[idx])``: the same numbers as item by item, many times faster.

    Raises:
        ValueError: ``batch_size`` below 1, images and labels of different lengths, or ``limit`` /
            ``order`` with a DataLoader.
        TypeError: labels asked of a bare tensor of images, or a ``data`` of another kind.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if isinstance(data, DataLoader):
        if limit is not None or order is not None:
            raise ValueError("limit and order apply to tensors and datasets; a DataLoader batches by itself")
        return iter(data) if with_labels else (images for images, *_ in data)
    if isinstance(data, Tensor):
        if with_labels:
            raise TypeError(
                "a tensor of images has no labels: pass (images, labels) or a dataset of (image, label)"
            )
        return (data[idx] for idx in _chunks(len(data), batch_size, limit, order))
    if isinstance(data, tuple):
        images, labels = data
        if len(images) != len(labels):
            raise ValueError(f"images and labels differ in length: {len(images)} vs {len(labels)}")
        chunks = _chunks(len(images), batch_size, limit, order)
        return ((images[i], labels[i]) for i in chunks) if with_labels else (images[i] for i in chunks)
    if not (hasattr(data, "__len__") and hasattr(data, "__getitem__")):
        raise TypeError(
            "iter_batches() takes images (N, C, H, W) as a tensor, an (images, labels) tuple of tensors, a "
            f"dataset of (image, label) or a DataLoader, got {type(data).__name__}"
        )
    return _dataset_batches(data, _chunks(len(data), batch_size, limit, order), with_labels)


def _chunks(n: int, batch_size: int, limit: int | None, order) -> Iterator[slice | Tensor]:
    """Slices of ``0 .. min(n, limit) - 1``, or consecutive pieces of ``order[:limit]``."""
    if order is None:
        stop = n if limit is None else min(limit, n)
        for start in range(0, stop, batch_size):
            yield slice(start, min(stop, start + batch_size))
        return
    order = torch.as_tensor(order)[:limit]
    for start in range(0, len(order), batch_size):
        yield order[start : start + batch_size]


def _dataset_batches(data, chunks: Iterator[slice | Tensor], with_labels: bool):
    """Batches of a dataset of (image, label): a whole batch at once when it is uint8 tensors."""
    labels = getattr(data, "labels", None)
    whole = (  # uint8 tensors + normalisation only (TensorImageDataset, ClutteredDigits)
        getattr(data, "images", None) is not None
        and getattr(data, "transform", "x") is None
        and (isinstance(labels, Tensor) or not with_labels)
    )
    for idx in chunks:
        if whole:
            from crate_edu.data.transforms import normalize_uint8  # torchvision loads only if needed

            x = normalize_uint8(data.images[idx], data.mean, data.std)  # (B, 3, H, W)
            yield (x, labels[idx].long()) if with_labels else x
            continue
        keys = range(idx.start, idx.stop) if isinstance(idx, slice) else idx.tolist()
        items = [data[int(k)] for k in keys]
        if with_labels:  # as a DataLoader collates them: stacked images, the labels as a tensor
            yield tuple(default_collate([(item[0], item[1]) for item in items]))
        else:
            yield torch.stack([item[0] for item in items])  # (B, C, H, W)
