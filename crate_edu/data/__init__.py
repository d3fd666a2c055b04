"""Datasets for CRATE: real ones by name (CIFAR, Pets, Flowers, Imagenette, ImageNet, ImageNet-100)
and offline ones that ship with installed packages (``digits``, ``cluttered-digits``).

    from crate_edu.data import build_dataset, dataset_info, list_datasets
    train = build_dataset("digits", "train")          # items: (float (3, 32, 32), int)
    info = dataset_info("cifar10")                    # num_classes, image_size, mean, std, ...

See :mod:`crate_edu.data.datasets` for layouts and sources, :mod:`crate_edu.data.transforms` for
the augmentation policies, :mod:`crate_edu.data.synthetic` for the offline datasets.
"""

from crate_edu.data import synthetic
from crate_edu.data.base import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    DatasetFileError,
    DatasetInfo,
    DatasetUnavailableError,
    TensorImageDataset,
    default_data_dir,
)
from crate_edu.data.datasets import (
    build_dataset,
    dataset_info,
    fetch_dataset,
    imagenet100_classes,
    list_datasets,
)
from crate_edu.data.loader import DeviceImageLoader, EpochSampler, device_source, epoch_generator
from crate_edu.data.synthetic import ClutteredDigits
from crate_edu.data.transforms import POLICIES, build_transform, normalize_batch, normalize_uint8

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "POLICIES",
    "ClutteredDigits",
    "DatasetFileError",
    "DatasetInfo",
    "DatasetUnavailableError",
    "DeviceImageLoader",
    "EpochSampler",
    "TensorImageDataset",
    "build_dataset",
    "build_transform",
    "dataset_info",
    "default_data_dir",
    "device_source",
    "epoch_generator",
    "fetch_dataset",
    "imagenet100_classes",
    "list_datasets",
    "normalize_batch",
    "normalize_uint8",
    "synthetic",
]
