"""Augmentation policies by name: the transforms of the official CRATE recipes, and two small ones.

Every policy is a pair (train transform, test transform) built from ``torchvision.transforms.v2``, so
the same pipeline accepts a PIL image, a uint8 tensor ``(3, H, W)``, or an image together with a
``tv_tensors.Mask`` (geometric operations move the mask with the image; colour operations leave it
alone). Every pipeline ends in a float32 tensor ``(3, S, S)`` normalised with the given mean/std,
where ``S = image_size``.

Policies (facts from the official Ma-Lab-Berkeley/CRATE scripts):

``'none'``
    Resize to ``(S, S)`` if the image is not already that size; nothing random.
``'cifar'``
    Train: ``RandomCrop(S, padding=S // 8)`` (4 pixels at 32 px) + ``RandomHorizontalFlip``; the
    usual from-scratch CIFAR recipe. Test: as ``'none'``.
``'shift'``
    Train: ``RandomCrop(S, padding=S // 8)`` without the flip, for digits (a flipped 2 is not a 2).
    Test: as ``'none'``.
``'randaugment'``
    ``finetune.py``: train ``RandomResizedCrop((S, S))`` + ``RandomHorizontalFlip`` +
    ``RandAugment(2, 14)``; test ``Resize((S, S))`` (a square resize, no crop).
``'imagenet'``
    ``main.py``: train ``RandomResizedCrop(S)`` + ``RandomHorizontalFlip``; test
    ``Resize(int(S / 0.875))`` + ``CenterCrop(S)`` (256 → 224 at the default size).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

POLICIES: tuple[str, ...] = ("none", "cifar", "shift", "randaugment", "imagenet")

#: ``RandAugment(num_ops, magnitude)`` of the official ``finetune.py`` (``--rand_aug_n 2 --rand_aug_m 14``).
RANDAUGMENT_N = 2
RANDAUGMENT_M = 14
#: Resize-then-centre-crop ratio of the ImageNet evaluation transform (224 / 256).
CROP_PCT = 0.875


def crop_padding(image_size: int) -> int:
    """Zero padding of the random crop of the ``'cifar'`` and ``'shift'`` policies: ``S // 8`` pixels."""
    return int(image_size) // 8


def check_policy(policy: str) -> str:
    """Return ``policy`` if it names a known augmentation policy, else raise ``ValueError``."""
    if policy not in POLICIES:
        raise ValueError(f"unknown augmentation policy {policy!r}; choose one of {', '.join(POLICIES)}")
    return policy


def build_transform(
    policy: str,
    train: bool,
    image_size: int,
    mean: Sequence[float],
    std: Sequence[float],
    *,
    native_size: int | None = None,
) -> Callable:
    """The ``torchvision.transforms.v2`` pipeline of one policy and split.

    Args:
        policy: one of :data:`POLICIES`.
        train: the random train transform if True, the deterministic test transform otherwise.
        image_size: output side ``S`` in pixels.
        mean, std: per-channel normalisation, in units of the [0, 1] intensity scale.
        native_size: side of the stored images when every image has the same square size (CIFAR,
            digits); the resize step is then skipped when it equals ``image_size``. ``None`` for
            datasets of variable-size photographs.

    Returns:
        A callable mapping an image (PIL, uint8 tensor ``(3, H, W)``, or a tuple ``(image, mask)``
        of ``tv_tensors``) to a float32 tensor ``(3, S, S)`` (and the mask, when one was given).
    """
    check_policy(policy)
    S = int(image_size)
    from torchvision.transforms import v2  # here, not at import: torchvision takes seconds to load

    steps: list[Callable] = [v2.ToImage()]  # PIL or tensor -> tv_tensors.Image (uint8)
    needs_resize = native_size is None or native_size != S
    square_resize = [v2.Resize((S, S), antialias=True)] if needs_resize else []

    if policy == "none" or (not train and policy in ("cifar", "shift", "randaugment")):
        steps += square_resize
    elif policy in ("cifar", "shift"):
        steps += square_resize + [v2.RandomCrop(S, padding=crop_padding(S))]
        if policy == "cifar":
            steps.append(v2.RandomHorizontalFlip())
    elif policy == "randaugment":
        steps += [
            v2.RandomResizedCrop((S, S), antialias=True),
            v2.RandomHorizontalFlip(),
            v2.RandAugment(RANDAUGMENT_N, RANDAUGMENT_M),
        ]
    elif policy == "imagenet":
        if train:
            steps += [v2.RandomResizedCrop(S, antialias=True), v2.RandomHorizontalFlip()]
        else:
            steps += [v2.Resize(int(S / CROP_PCT), antialias=True), v2.CenterCrop(S)]

    # ToDtype with a plain dtype converts images only; a Mask passes through unchanged.
    steps += [v2.ToDtype(torch.float32, scale=True), v2.Normalize(mean=list(mean), std=list(std))]
    return v2.Compose(steps)


def normalize_batch(images: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """uint8 ``(..., 3, H, W)`` -> float32: ``(x / 255 - mean) / std``, with ``mean`` and ``std``
    ``(3, 1, 1)`` float32 tensors on the images' device.

    The 255 is a tensor on that device so that CUDA divides too (with a Python number it multiplies
    by the reciprocal, which can differ in the last bit); on CPU both give the same bits.
    """
    scale = torch.full((), 255.0, dtype=torch.float32, device=images.device)
    return (images.to(torch.float32) / scale - mean) / std


def normalize_uint8(images: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """uint8 images ``(..., 3, H, W)`` in 0..255 -> float32 ``(..., 3, H, W)`` normalised per channel."""
    m = torch.tensor(mean, dtype=torch.float32, device=images.device).view(3, 1, 1)
    s = torch.tensor(std, dtype=torch.float32, device=images.device).view(3, 1, 1)
    return normalize_batch(images, m, s)
