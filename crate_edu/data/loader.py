"""Small-image datasets held on the training device, batched and augmented there.

CIFAR-10's 50,000 training images take 150 MB as uint8: they fit on any GPU. Keeping them there and
building each batch with a few tensor operations (an index, a pad, a gather, a normalisation) costs
microseconds per batch, where a ``DataLoader`` decodes, augments and collates image by image in
Python and then copies the batch over PCIe. :class:`DeviceImageLoader` does the former:

* the images stay uint8 ``(N, 3, S, S)`` on the device; only the batch being produced is converted
  to float32 (so the memory is 1 byte per pixel, not 4);
* the order of the images is the CPU path's exactly: the permutation of
  :class:`EpochSampler` for ``(seed, epoch)``, cut into global batches, each
  process taking its contiguous slice of every global batch, as Accelerate's ``DataLoader`` does with
  ``split_batches=True``; the test split is read in order without dropping the last batch, and under
  several processes its last batch is padded the way Accelerate pads it (the caller drops the
  padding, see :attr:`DeviceImageLoader.global_sizes`);
* the augmentation policies ``'none'``, ``'cifar'`` (zero-padded random crop with ``S // 8`` pixels
  of padding, then a horizontal flip with probability 1/2) and ``'shift'`` (the crop alone) are
  applied to the whole batch at once by :func:`augment_batch`, which computes bit for bit what
  ``torchvision.transforms.v2`` computes image by image (pad with 0, crop, flip, ``ToDtype(scale)``,
  ``Normalize``) for the same crop offsets and flips.

Randomness. The crop offsets and flips of an epoch come from a ``torch.Generator`` on the device,
seeded by :func:`augmentation_seed` from ``(seed, epoch, process_index)`` alone. There is thus no
generator state to save in a checkpoint: a run resumed at an epoch boundary draws exactly the
augmentations the uninterrupted run drew. The draws are NOT those of the CPU path (which draws from
the global torch generator inside ``RandomCrop`` / ``RandomHorizontalFlip``), so a run with the data
on the device and one without see the same images in the same steps, with different (equally
distributed) crops and flips; without augmentation they compute the same numbers.

Images must already have the run's size (CIFAR at 32 px, the generated digits at any size): a
resize is not done on the device and :func:`device_source` says so.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch.utils.data import Dataset, Sampler, Subset

from crate_edu.data.transforms import crop_padding, normalize_batch  # one definition of each

__all__ = [
    "EpochSampler",
    "DEVICE_POLICIES",
    "DeviceImageLoader",
    "DeviceSource",
    "augment_batch",
    "augmentation_seed",
    "device_source",
    "draw_augmentation",
    "epoch_generator",
]

#: Augmentation policies the device loader implements (see :mod:`crate_edu.data.transforms`).
DEVICE_POLICIES: tuple[str, ...] = ("none", "cifar", "shift")


def epoch_generator(seed: int, epoch: int) -> torch.Generator:
    """A CPU generator seeded by ``(seed, epoch)`` alone: the source of an epoch's order (and, in
    the MAE pre-training, of its masks), whatever happened to the global generators."""
    return torch.Generator().manual_seed((int(seed) * 1_000_003 + int(epoch)) % 2**63)


class EpochSampler(Sampler[int]):
    """A shuffled order of ``range(n)`` that depends only on ``(seed, epoch)``.

    Accelerate calls :meth:`set_epoch` before each pass. Every process draws the same permutation,
    and Accelerate hands each one its slice of every batch; after a resume the order of epoch ``e``
    is the one the uninterrupted run used, whatever happened to the global generators. ``length``
    keeps only the first images of each permutation (the trainer drops the last incomplete batch
    this way, so that gradient accumulation never ends an epoch on a partial step).
    """

    def __init__(self, n: int, seed: int, length: int | None = None) -> None:
        self.n = int(n)
        self.seed = int(seed)
        self.length = self.n if length is None else min(int(length), self.n)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Select the permutation of pass ``epoch`` (0-based)."""
        self.epoch = int(epoch)

    def permutation(self) -> torch.Tensor:
        """The order of the current epoch: the first ``length`` entries of a permutation of ``range(n)``."""
        return torch.randperm(self.n, generator=epoch_generator(self.seed, self.epoch))[: self.length]

    def __iter__(self) -> Iterator[int]:
        return iter(self.permutation().tolist())

    def __len__(self) -> int:
        return self.length


def augmentation_seed(seed: int, epoch: int, process_index: int) -> int:
    """The seed of the augmentation generator of one process in one epoch (a 63-bit integer).

    A hash of ``(seed, epoch, process_index)``: the same triple always gives the same crops and
    flips, and the stream shares nothing with the permutation of ``EpochSampler`` (seeded with
    ``seed * 1_000_003 + epoch`` on a CPU generator).
    """
    text = f"crate_edu.device_augment:{int(seed)}:{int(epoch)}:{int(process_index)}"
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "little") >> 1


def augment_batch(
    images: torch.Tensor,
    top: torch.Tensor,
    left: torch.Tensor,
    flip: torch.Tensor,
    mean: torch.Tensor,
    std: torch.Tensor,
    padding: int,
) -> torch.Tensor:
    """Random-crop-and-flip a batch with given parameters, then scale and normalise it.

    Per image ``b`` this is ``torchvision.transforms.v2.functional``'s
    ``pad(fill=0, padding)`` -> ``crop(top[b], left[b], S, S)`` -> ``hflip`` if ``flip[b]`` ->
    ``to_dtype(float32, scale=True)`` -> ``normalize(mean, std)``, bit for bit; here for the whole batch at
    once (the crops are picked from a view of all windows, so the only copies are of the batch).

    Args:
        images: uint8 ``(B, 3, S, S)``.
        top, left: int ``(B,)``, crop offsets in the padded image, each in ``0 .. 2 * padding``.
        flip: bool ``(B,)``, flip the crop horizontally.
        mean, std: float32 ``(3, 1, 1)`` on the images' device.
        padding: pixels of zero padding on every side.

    Returns:
        float32 ``(B, 3, S, S)``.
    """
    B, _, H, W = images.shape
    p = int(padding)
    dev = images.device
    padded = F.pad(images, (p, p, p, p))  # (B, 3, H + 2p, W + 2p) uint8, zeros around
    # Every possible crop as a view (no copy): windows[b, c, i, j] is the crop at top i, left j.
    windows = padded.unfold(2, H, 1).unfold(3, W, 1)  # (B, 3, 2p + 1, 2p + 1, H, W)
    b = torch.arange(B, device=dev)
    crop = windows[b, :, top.to(dev, torch.long), left.to(dev, torch.long)]  # (B, 3, H, W) uint8, a copy
    crop = torch.where(flip.to(dev)[:, None, None, None], crop.flip(-1), crop)  # (B, 3, H, W)
    # ToDtype(float32, scale=True) multiplies by 1 / 255; Normalize subtracts, then divides.
    return crop.to(torch.float32).mul_(1.0 / 255).sub_(mean).div_(std)


def draw_augmentation(
    n: int, policy: str, image_size: int, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Crop offsets and flips of ``n`` images under ``policy``, drawn from ``generator``.

    Returns ``(top, left, flip)``, each ``(n,)`` on the generator's device: offsets uniform over
    ``0 .. 2 * (S // 8)`` (like ``RandomCrop(S, padding=S // 8)`` on an ``S``-pixel image), flips true
    with probability 1/2 for ``'cifar'`` and never for ``'shift'``. Always three draws, in that order.
    """
    dev = generator.device
    high = 2 * crop_padding(image_size) + 1
    top = torch.randint(0, high, (n,), generator=generator, device=dev)
    left = torch.randint(0, high, (n,), generator=generator, device=dev)
    flip = torch.rand(n, generator=generator, device=dev) < 0.5
    if policy != "cifar":
        flip = torch.zeros_like(flip)
    return top, left, flip


@dataclass
class DeviceSource:
    """What the device loader needs of a dataset: its uint8 images, labels, statistics and policy."""

    images: torch.Tensor  # (N, 3, S, S) uint8
    labels: torch.Tensor  # (N,) int64
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    policy: str  # one of DEVICE_POLICIES: what its items go through


def device_source(dataset: Dataset, train: bool) -> DeviceSource:
    """The uint8 images of ``dataset`` and the policy that its items apply, for :class:`DeviceImageLoader`.

    Accepts the datasets that :func:`crate_edu.data.build_dataset` makes over in-memory uint8
    images (``TensorImageDataset``: CIFAR, digits; ``ClutteredDigits``), also inside a
    ``torch.utils.data.Subset`` (``--limit-train``), whose items are normalised only or augmented
    with ``'cifar'`` / ``'shift'`` at their stored size. ``train`` is the split's role: a test split
    must not be augmented.

    Raises:
        ValueError: one line saying why this dataset cannot be served from the device.
    """
    indices = None
    base = dataset
    while isinstance(base, Subset):
        idx = torch.as_tensor(list(base.indices), dtype=torch.long)
        indices = idx if indices is None else idx[indices]
        base = base.dataset
    images = getattr(base, "images", None)
    labels = getattr(base, "labels", None)
    kind = type(base).__name__
    if not (isinstance(images, torch.Tensor) and isinstance(labels, torch.Tensor)):
        raise ValueError(f"{kind} does not hold its images in memory as one uint8 tensor")
    if images.dtype != torch.uint8 or images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"{kind} holds {images.dtype} {tuple(images.shape)} images, not uint8 (N, 3, H, W)")
    if getattr(base, "transform", None) is None:
        policy = "none"  # the items are only normalised (build_dataset's fast path)
    else:
        policy = getattr(base, "augment", None)
        size = getattr(base, "image_size", None)
        if policy not in DEVICE_POLICIES:
            raise ValueError(
                f"the {'train' if train else 'test'} split's augmentation "
                f"{repr(policy) if policy else '(a custom transform)'} has no device version "
                f"(the device loader does {', '.join(DEVICE_POLICIES)})"
            )
        if size != images.shape[-1] or images.shape[-1] != images.shape[-2]:
            raise ValueError(
                f"the images are stored at {images.shape[-2]}x{images.shape[-1]} px but the run uses "
                f"{size} px; the device loader does not resize (use the stored size as --image-size)"
            )
        if policy != "none" and not train:
            raise ValueError(f"the test split is augmented ({policy!r}); it should not be")
    if indices is not None:
        images, labels = images[indices], labels[indices]
    mean, std = getattr(base, "mean", None), getattr(base, "std", None)
    if mean is None or std is None:
        raise ValueError(f"{kind} has no mean/std normalisation attributes")
    return DeviceSource(images, labels.to(torch.int64), tuple(mean), tuple(std), policy)  # type: ignore[arg-type]


class DeviceImageLoader:
    """Batches of one split, built and augmented on ``device`` from uint8 images held there.

    Iterating yields ``(x, y)``: ``x`` float32 ``(b, 3, S, S)`` normalised, ``y`` int64 ``(b,)``, both
    on ``device``, with ``b = batch_size / num_processes`` (this process's share of a global batch).

    Args:
        images: uint8 ``(N, 3, S, S)`` (moved to ``device`` once; not copied if already there).
        labels: ``(N,)`` integer labels.
        mean, std: per-channel normalisation (RGB, [0, 1] scale).
        batch_size: the GLOBAL batch, a multiple of ``num_processes``.
        policy: ``'none'``, ``'cifar'`` or ``'shift'``.
        train: True: the ``EpochSampler`` order of ``(seed, epoch)`` (its first ``length`` images),
            the last incomplete batch dropped, the policy applied. False: the images in order, the
            last batch kept (padded under several processes, as Accelerate does), no augmentation.
        seed: the run's seed (order and augmentation).
        length: images used per epoch (``EpochSampler``'s ``length``); None for all.
        num_processes, process_index: this process's place among the training processes.
        device: where the images live and the batches are made (default: the images' device).
    """

    def __init__(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        *,
        mean: Sequence[float],
        std: Sequence[float],
        batch_size: int,
        policy: str = "none",
        train: bool = True,
        seed: int = 0,
        length: int | None = None,
        num_processes: int = 1,
        process_index: int = 0,
        device: torch.device | str | None = None,
    ) -> None:
        if policy not in DEVICE_POLICIES:
            raise ValueError(f"unknown device policy {policy!r}; choose one of {', '.join(DEVICE_POLICIES)}")
        if images.dtype != torch.uint8 or images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"images must be uint8 (N, 3, H, W), got {images.dtype} {tuple(images.shape)}")
        if images.shape[-1] != images.shape[-2]:
            raise ValueError(f"images must be square, got {tuple(images.shape[-2:])}")
        if batch_size < 1 or batch_size % num_processes:
            raise ValueError(
                f"batch size {batch_size} must be a positive multiple of the number of processes "
                f"({num_processes})"
            )
        if not 0 <= process_index < num_processes:
            raise ValueError(f"process index {process_index} is not in 0 .. {num_processes - 1}")
        self.device = torch.device(device) if device is not None else images.device
        self.images = images.to(self.device)  # (N, 3, S, S) uint8
        self.labels = labels.to(self.device, torch.int64)  # (N,)
        self.mean = torch.tensor(list(mean), dtype=torch.float32, device=self.device).view(3, 1, 1)
        self.std = torch.tensor(list(std), dtype=torch.float32, device=self.device).view(3, 1, 1)
        self.batch_size = int(batch_size)
        self.policy = policy if train else "none"
        self.train = bool(train)
        self.seed = int(seed)
        n = self.images.shape[0]
        self.length = n if length is None else min(int(length), n)
        self.num_processes = int(num_processes)
        self.process_index = int(process_index)
        self.image_size = int(self.images.shape[-1])
        self.epoch = 0

    @classmethod
    def from_source(cls, src: DeviceSource, *, train: bool, **kwargs: Any) -> DeviceImageLoader:
        """A loader over ``src`` with its policy; ``kwargs`` as for the constructor."""
        policy = src.policy if train else "none"
        return cls(src.images, src.labels, mean=src.mean, std=src.std, policy=policy, train=train, **kwargs)

    @classmethod
    def from_dataset(cls, dataset: Dataset, *, train: bool, **kwargs: Any) -> DeviceImageLoader:
        """A loader over the images of ``dataset`` (see :func:`device_source`) with its policy.

        Raises:
            ValueError: the dataset cannot be served from the device (the message says why).
        """
        return cls.from_source(device_source(dataset, train), train=train, **kwargs)

    def set_epoch(self, epoch: int) -> None:
        """Select pass ``epoch`` (0-based): its order (train) and its augmentation draws."""
        self.epoch = int(epoch)

    @property
    def nbytes(self) -> int:
        """Bytes the images and labels take on the device."""
        return self.images.nbytes + self.labels.nbytes

    def order(self) -> torch.Tensor:
        """The indices of the current epoch, over all processes, on the CPU: ``(length,)``."""
        if not self.train:
            return torch.arange(self.length)

        sampler = EpochSampler(self.images.shape[0], self.seed, length=self.length)
        sampler.set_epoch(self.epoch)
        return sampler.permutation()

    def global_batches(self) -> list[torch.Tensor]:
        """The global batches of the current epoch, before they are split across processes.

        Train: full batches only. Test: every image once; under several processes a short last
        batch is topped up from the first batch (Accelerate's ``even_batches``), so each process gets
        an equal share; :attr:`global_sizes` says how many images of each are real.
        """
        order = self.order()
        batches = list(order.split(self.batch_size))
        if batches and len(batches[-1]) < self.batch_size:
            if self.train:
                batches.pop()  # drop_last
            elif self.num_processes > 1:
                filler = batches[0]
                while len(filler) < self.batch_size:
                    filler = torch.cat([filler, filler])
                batches[-1] = torch.cat([batches[-1], filler])[: self.batch_size]
        return batches

    @property
    def global_sizes(self) -> list[int]:
        """Real (not padding) images in each global batch of the current epoch."""
        if self.train:
            return [self.batch_size] * (self.length // self.batch_size)
        full, rest = divmod(self.length, self.batch_size)
        return [self.batch_size] * full + ([rest] if rest else [])

    def indices(self) -> list[torch.Tensor]:
        """This process's image indices of each batch of the current epoch (on the CPU)."""
        if self.num_processes == 1:
            return self.global_batches()
        share = self.batch_size // self.num_processes
        lo = share * self.process_index
        return [batch[lo : lo + share] for batch in self.global_batches()]

    def __len__(self) -> int:
        return len(self.global_sizes)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        batches = self.indices()
        sizes = [len(idx) for idx in batches]
        flat = torch.cat(batches) if batches else torch.zeros(0, dtype=torch.long)
        flat = flat.to(self.device)  # the epoch's indices cross to the device at once
        if self.policy != "none":  # this process's crops and flips for the whole epoch, in batch order
            g = torch.Generator(device=self.device)
            g.manual_seed(augmentation_seed(self.seed, self.epoch, self.process_index))
            top, left, flip = draw_augmentation(len(flat), self.policy, self.image_size, g)  # (n,) each
            pad = crop_padding(self.image_size)
        start = 0
        for idx in flat.split(sizes):
            raw = self.images[idx]  # (b, 3, S, S) uint8
            if self.policy == "none":
                x = normalize_batch(raw, self.mean, self.std)
            else:
                s = slice(start, start + len(idx))
                x = augment_batch(raw, top[s], left[s], flip[s], self.mean, self.std, pad)
            start += len(idx)
            yield x, self.labels[idx]
