"""Datasets for CRATE: real ones by name (CIFAR, Pets, Flowers, Imagenette, ImageNet, ImageNet-100)
and offline ones that ship with installed packages (``digits``, ``cluttered-digits``, and the
cluttered digits with captions, :class:`CaptionedDigits`, for contrastive image–text training).

    from crate_edu.data import build_dataset, dataset_info, list_datasets
    train = build_dataset("digits", "train")          # items: (float (3, 32, 32), int)
    info = dataset_info("cifar10")                    # num_classes, image_size, mean, std, ...

See :mod:`crate_edu.data.datasets` for layouts and sources, :mod:`crate_edu.data.transforms` for
the augmentation policies, :mod:`crate_edu.data.synthetic` for the offline datasets,
:mod:`crate_edu.data.captions` for the captions, their held-out prompts and classes, and their
tokenizer::

    from crate_edu.data import CaptionTokenizer, CaptionedDigits
    test = CaptionedDigits("test")                    # items: (float (3, 32, 32), digit); test.captions
    tokens = CaptionTokenizer(16)(test.captions[:8])  # LongTensor (8, 16)
"""

from crate_edu.data import captions, synthetic
from crate_edu.data.base import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    DatasetFileError,
    DatasetInfo,
    DatasetUnavailableError,
    TensorImageDataset,
    default_data_dir,
)
from crate_edu.data.captions import (
    HELD_OUT_PAIRS,
    HELD_OUT_TEMPLATES,
    TRAIN_TEMPLATES,
    CaptionAttributes,
    CaptionedDigits,
    CaptionTokenizer,
    caption_vocabulary,
    pair_classes,
)
from crate_edu.data.datasets import (
    build_dataset,
    dataset_info,
    fetch_dataset,
    imagenet100_classes,
    list_datasets,
)
from crate_edu.data.loader import DeviceImageLoader, EpochSampler, device_source, epoch_generator
from crate_edu.data.synthetic import ClutteredDigits, CompositeAttributes
from crate_edu.data.transforms import POLICIES, build_transform, normalize_batch, normalize_uint8

__all__ = [
    "HELD_OUT_PAIRS",
    "HELD_OUT_TEMPLATES",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "POLICIES",
    "TRAIN_TEMPLATES",
    "CaptionAttributes",
    "CaptionTokenizer",
    "CaptionedDigits",
    "ClutteredDigits",
    "CompositeAttributes",
    "DatasetFileError",
    "DatasetInfo",
    "DatasetUnavailableError",
    "DeviceImageLoader",
    "EpochSampler",
    "TensorImageDataset",
    "build_dataset",
    "build_transform",
    "caption_vocabulary",
    "captions",
    "dataset_info",
    "default_data_dir",
    "device_source",
    "epoch_generator",
    "fetch_dataset",
    "imagenet100_classes",
    "list_datasets",
    "normalize_batch",
    "normalize_uint8",
    "pair_classes",
    "synthetic",
]
