"""Shared pieces of the data package: the dataset record, the error, the cache folder, and a
dataset over images held in memory as a uint8 tensor."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.utils.data import Dataset

from crate_edu.data.transforms import normalize_uint8

#: ImageNet per-channel mean/std (RGB, [0, 1] scale), as in the official ``main.py`` and
#: ``finetune.py`` (which uses them for every fine-tuning dataset, CIFAR included).
IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)


class DatasetUnavailableError(RuntimeError):
    """A dataset is not on disk and could not be downloaded.

    ``str(err)`` is one self-contained message: what was looked for, where, and how to get it
    (``crate-edu fetch NAME`` on a connected machine, or ``--data-dir``). The command line prints it
    as one line and exits non-zero.
    """


class DatasetFileError(DatasetUnavailableError):
    """A dataset file is on disk but cannot be used: truncated, not in the expected format, or
    holding something other than data (a pickle that asks to run code is refused, never run).

    ``str(err)`` is one line: which file, what is wrong with it, and how to get a genuine copy.
    """


def default_data_dir() -> Path:
    """Root folder of downloaded datasets: ``$CRATE_EDU_DATA`` if set, else ``~/.cache/crate_edu/data``."""
    env = os.environ.get("CRATE_EDU_DATA")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "crate_edu" / "data"


@dataclass(frozen=True)
class DatasetInfo:
    """What a dataset is, without loading it.

    Attributes:
        name: registry name (``list_datasets()``).
        num_classes: number of labels; labels are ``0 .. num_classes - 1``.
        image_size: side in pixels of the images a model sees by default (the native size for
            fixed-size datasets, the recipe's crop size for photographs).
        mean, std: per-channel normalisation (RGB, in units of the [0, 1] intensity scale).
        classes: class names in label order, or None where they are only known from the files.
        downloadable: whether ``fetch_dataset`` / ``download=True`` can fetch it.
        description: one paragraph: source, splits, sizes.
        default_augment: the policy that ``augment=None`` selects for the train split.
    """

    name: str
    num_classes: int
    image_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    classes: tuple[str, ...] | None
    downloadable: bool
    description: str
    default_augment: str = "none"


class TensorImageDataset(Dataset):
    """Images held in memory as uint8 ``(N, 3, H, W)`` with int labels ``(N,)``.

    ``ds[i]`` is ``(image, label)``: image float32 ``(3, S, S)`` normalised with ``mean``/``std``,
    label a Python int. Without a transform the normalisation is done directly (no resize).
    """

    def __init__(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        *,
        mean: Sequence[float],
        std: Sequence[float],
        transform: Callable | None = None,
        classes: Sequence[str] | None = None,
    ) -> None:
        if images.dtype != torch.uint8 or images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"images must be uint8 (N, 3, H, W), got {images.dtype} {tuple(images.shape)}")
        if labels.shape != (images.shape[0],):
            raise ValueError(f"labels must have shape ({images.shape[0]},), got {tuple(labels.shape)}")
        self.images = images  # (N, 3, H, W) uint8
        self.labels = labels.to(torch.int64)  # (N,)
        self.mean = tuple(float(m) for m in mean)
        self.std = tuple(float(s) for s in std)
        self.transform = transform
        self.classes = list(classes) if classes is not None else None

    def __len__(self) -> int:
        return self.images.shape[0]

    @property
    def targets(self) -> list[int]:
        """Labels as a list of ints (the attribute name torchvision datasets use)."""
        return self.labels.tolist()

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        img = self.images[i]  # (3, H, W) uint8
        if self.transform is None:
            x = normalize_uint8(img, self.mean, self.std)
        else:
            x = self.transform(img)
        return x, int(self.labels[i])
