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
``'imagenet-randaugment'``
    The official CRATE-α ImageNet-1K fine-tuning (UCSC-VLAA/CRATE-alpha
    ``configs/crate/classification/fine_tuning_in1k.py:57-67``): train the inception crop
    (``RandomResizedCrop``: 8-100 % of the area, aspect 3/4-4/3, bilinear) + flip +
    :class:`TimmRandAugment` (2 ops, magnitude 9); test as ``'imagenet'`` (resize 256, centre
    crop 224). The official code resizes with TensorFlow (area / antialiased bilinear), this with
    torchvision: the same operations, not the same pixels.

``magnitude`` (``build_transform``) sets the RandAugment magnitude of the two RandAugment policies:
torchvision's scale of 0-30 for ``'randaugment'``, timm's of 0-10 for ``'imagenet-randaugment'``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

POLICIES: tuple[str, ...] = ("none", "cifar", "shift", "randaugment", "imagenet", "imagenet-randaugment")

#: ``RandAugment(num_ops, magnitude)`` of the official ``finetune.py`` (``--rand_aug_n 2 --rand_aug_m 14``).
RANDAUGMENT_N = 2
RANDAUGMENT_M = 14
#: ``randaug(2, 9, timm=True, increase=True)`` of the official CRATE-α fine-tuning.
TIMM_RANDAUGMENT_N = 2
TIMM_RANDAUGMENT_M = 9
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
    magnitude: float | None = None,
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
            v2.RandAugment(RANDAUGMENT_N, int(RANDAUGMENT_M if magnitude is None else magnitude)),
        ]
    elif policy in ("imagenet", "imagenet-randaugment"):
        if train:
            steps += [v2.RandomResizedCrop(S, antialias=True), v2.RandomHorizontalFlip()]
            if policy == "imagenet-randaugment":
                m = TIMM_RANDAUGMENT_M if magnitude is None else magnitude
                steps.append(TimmRandAugment(TIMM_RANDAUGMENT_N, m, image_size=S))
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


# --------------------------------------------------------------------------------------------------
# RandAugment as timm and the official CRATE-α fine-tuning draw it


#: The 15 operations of the official ``distort_image_with_randaugment_timm``
#: (transforms/autoaugment.py:795-811): timm's list without Cutout.
TIMM_OPS: tuple[str, ...] = (
    "AutoContrast", "Equalize", "Invert", "Rotate", "Posterize", "Solarize", "SolarizeAdd", "Color",
    "Contrast", "Brightness", "Sharpness", "ShearX", "ShearY", "TranslateX", "TranslateY",
)  # fmt: skip
#: Fill of the pixels that rotations, shears and translations uncover (autoaugment.py:792).
TIMM_FILL: tuple[int, int, int] = (124, 116, 104)


class TimmRandAugment:
    """RandAugment with timm's "increasing" levels, as the official CRATE-α fine-tuning applies it
    (UCSC-VLAA/CRATE-alpha ``transforms/autoaugment.py:776-836``, ``level_to_arg_increasing``).

    For each of ``num_ops`` layers: one of :data:`TIMM_OPS` chosen uniformly, a magnitude
    ``m ~ N(magnitude, 0.5)`` (not clipped, as there), and the op applied with probability 0.5, at
    the level ``m / 10`` of its range: rotate ±30°, shear ±0.3, translate ±45 % of the side (timm's
    relative translation; the official 100 pixels at 224 px are 44.6 %), posterize to
    ``4 − int(0.4 m)`` bits, solarize above ``256 − int(25.6 m)``, solarize-add ``min(128, int(11 m))``,
    colour / contrast / brightness / sharpness by a factor ``max(0.1, 1 ± 0.09 m)``; signs random;
    uncovered pixels filled with :data:`TIMM_FILL`. The operations are torchvision's (PIL's
    definitions, as timm); shears and translations are about the top-left corner, as PIL's.
    Randomness: the global torch generator.

    Args:
        num_ops: operations per image (official 2).
        magnitude: the mean magnitude on timm's 0-10 scale (official 9).
        image_size: the side of the images, for the relative translation.
    """

    def __init__(self, num_ops: int = 2, magnitude: float = 9.0, image_size: int = 224) -> None:
        self.num_ops, self.magnitude, self.image_size = int(num_ops), float(magnitude), int(image_size)

    def __repr__(self) -> str:
        return f"TimmRandAugment(num_ops={self.num_ops}, magnitude={self.magnitude})"

    def __call__(self, img: torch.Tensor) -> torch.Tensor:
        """A uint8 image (3, H, W) -> the augmented uint8 image (3, H, W)."""
        for _ in range(self.num_ops):
            op = TIMM_OPS[int(torch.randint(len(TIMM_OPS), ()))]
            level = self.magnitude + 0.5 * float(torch.randn(()))
            if float(torch.rand(())) < 0.5:
                img = apply_timm_op(img, op, level, self.image_size)
        return img


def _signed(value: float) -> float:
    """``value`` with a random sign (the official ``_randomly_negate_tensor``)."""
    return value if float(torch.rand(())) < 0.5 else -value


def apply_timm_op(img: torch.Tensor, op: str, level: float, image_size: int = 224) -> torch.Tensor:
    """One operation of :data:`TIMM_OPS` at ``level`` (0-10) on a uint8 image (3, H, W)."""
    import math

    from torchvision.transforms import InterpolationMode
    from torchvision.transforms.v2 import functional as TF

    bilinear, fill = InterpolationMode.BILINEAR, list(TIMM_FILL)
    frac = level / 10.0

    def affine(translate=(0.0, 0.0), shear=(0.0, 0.0)) -> torch.Tensor:
        return TF.affine(
            img, angle=0.0, translate=list(translate), scale=1.0, shear=list(shear),
            interpolation=bilinear, fill=fill, center=[0.0, 0.0],
        )  # fmt: skip

    if op == "AutoContrast":
        return TF.autocontrast(img)
    if op == "Equalize":
        return TF.equalize(img)
    if op == "Invert":
        return TF.invert(img)
    if op == "Rotate":
        return TF.rotate(img, _signed(frac * 30.0), interpolation=bilinear, fill=fill)
    if op in ("Posterize", "Solarize", "SolarizeAdd"):
        x = img.to(torch.int16)
        if op == "Posterize":
            step = 2 ** (8 - (4 - min(4, int(frac * 4))))  # keep 4 - int(0.4 m) bits
            out = x // step * step
        elif op == "Solarize":
            out = torch.where(x < 256 - min(256, int(frac * 256)), x, 255 - x)
        else:
            out = torch.where(x < 128, (x + min(128, int(frac * 110))).clamp(0, 255), x)
        return out.to(torch.uint8)
    if op in ("Color", "Contrast", "Brightness", "Sharpness"):
        factor = max(0.1, 1.0 + _signed(frac * 0.9))
        adjust = {
            "Color": TF.adjust_saturation,
            "Contrast": TF.adjust_contrast,
            "Brightness": TF.adjust_brightness,
            "Sharpness": TF.adjust_sharpness,
        }[op]
        return adjust(img, factor)
    if op in ("ShearX", "ShearY"):
        angle = math.degrees(math.atan(_signed(frac * 0.3)))
        return affine(shear=(angle, 0.0) if op == "ShearX" else (0.0, angle))
    if op in ("TranslateX", "TranslateY"):
        pixels = _signed(frac * 0.45 * image_size)
        return affine(translate=(pixels, 0.0) if op == "TranslateX" else (0.0, pixels))
    raise ValueError(f"unknown RandAugment operation {op!r}; choose one of {', '.join(TIMM_OPS)}")
