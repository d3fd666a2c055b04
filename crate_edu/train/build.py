"""What a classification run is built from: its datasets, its model, its Accelerator and loaders.

Each function turns part of a :class:`~crate_edu.train.config.TrainConfig` into objects;
:func:`crate_edu.train.loop.set_up` puts them together. Bad input is a one-line
:class:`~crate_edu.errors.ConfigError`.
"""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, Subset

from crate_edu.data.loader import DeviceImageLoader, EpochSampler, device_source
from crate_edu.device import cpu_only, distributed_state, resolve_precision
from crate_edu.errors import ConfigError, one_line
from crate_edu.train.checkpoint import CHECKPOINT_NAME, is_checkpoint, read_checkpoint
from crate_edu.train.config import TrainConfig, image_size_of, is_language_model, model_kwargs

__all__ = [
    "build_datasets",
    "build_model",
    "data_loaders",
    "default_workers",
    "limit_dataset",
    "load_pretrained",
    "make_accelerator",
]


# --------------------------------------------------------------------------------------------
# Data and model.
# --------------------------------------------------------------------------------------------


def limit_dataset(ds: Dataset, n: int | None) -> Dataset:
    """A fixed random subset of ``n`` items (seed 0: the same subset for every training seed)."""
    if n is None or n >= len(ds):  # type: ignore[arg-type]
        return ds
    g = torch.Generator().manual_seed(0)
    idx = torch.randperm(len(ds), generator=g)[:n].sort().values  # type: ignore[arg-type]
    return Subset(ds, idx.tolist())


def build_datasets(cfg: TrainConfig) -> tuple[Dataset, Dataset]:
    """The train and test splits of ``cfg.dataset`` at the run's image size and augmentation (for a
    language model: the corpus's train and validation windows).

    Raises:
        crate_edu.data.DatasetUnavailableError: the files are missing (one-line message).
    """
    from crate_edu.data import build_dataset

    if is_language_model(cfg):
        return _text_datasets(cfg)
    common = dict(
        data_dir=cfg.data_dir,
        image_size=image_size_of(cfg),
        download=cfg.download,
        normalize=cfg.normalize,
        randaugment_magnitude=cfg.randaugment_magnitude,
    )
    train_set = build_dataset(cfg.dataset, "train", augment=cfg.augment, **common)
    test_set = build_dataset(cfg.dataset, "test", augment=cfg.augment, **common)
    return limit_dataset(train_set, cfg.limit_train), limit_dataset(test_set, cfg.limit_test)


def _text_datasets(cfg: TrainConfig) -> tuple[Dataset, Dataset]:
    """A language model's train and validation windows: the corpus in the run's tokenizer, cut
    into windows as long as the model's context, side by side (:func:`crate_edu.text.build_text_dataset`;
    the sampler shuffles the windows every epoch)."""
    from crate_edu.models import model_config
    from crate_edu.text import build_text_dataset

    context = model_config(cfg.model, **model_kwargs(cfg)).block_size
    common = dict(
        tokenizer=cfg.tokenizer,
        block_size=context,
        stride=context,  # windows side by side: an epoch reads the training text once
        data_dir=cfg.data_dir,
        download=cfg.download,
    )
    train_set = build_text_dataset(cfg.dataset, "train", **common)
    test_set = build_text_dataset(cfg.dataset, "val", **common)
    return limit_dataset(train_set, cfg.limit_train), limit_dataset(test_set, cfg.limit_test)


def _pretrained_file(src: str) -> Path:
    """The file ``--pretrained`` names: a path, or the key of published weights (downloaded)."""
    from crate_edu.weights import download_official, list_official

    path = Path(src).expanduser()
    if not path.exists():
        keys = [w.key for w in list_official()]
        if src not in keys:
            raise ConfigError(
                f"--pretrained {src!r}: no such file, and not the key of published weights "
                f"({', '.join(keys)})"
            )
        try:
            path = download_official(src)
        except Exception as e:  # offline, dead link: say so in one line
            raise ConfigError(f"--pretrained {src}: {one_line(e)}") from None
    return path / CHECKPOINT_NAME if path.is_dir() else path


def _read_pretrained(cfg: TrainConfig, path: Path) -> nn.Module:
    """The model that ``path`` holds: a checkpoint of this trainer, or an official file read with
    ``load_official`` at the geometry (classes, patch, image size) the file's shapes say."""
    from crate_edu.models import create_model
    from crate_edu.weights import CheckpointError, load_official

    try:
        obj = read_checkpoint(path, mmap=True)  # nothing in the file runs; legacy format too
    except (CheckpointError, FileNotFoundError) as e:
        raise ConfigError(f"--pretrained {path}: {one_line(e)}") from None
    if is_checkpoint(obj):
        src_cfg = TrainConfig.from_dict(obj["config"])
        if src_cfg.model != cfg.model:
            raise ConfigError(
                f"--pretrained {path} holds a {src_cfg.model!r} model, but this run trains {cfg.model!r}; "
                f"pass --model {src_cfg.model}"
            )
        model = create_model(src_cfg.model, **model_kwargs(src_cfg))
        model.load_state_dict(obj["model"])
        return model
    del obj
    shape = {k: v for k, v in cfg.model_overrides.items() if k not in _GEOMETRY}  # the file says these
    try:
        return load_official(cfg.model, path, **shape)
    except (ValueError, RuntimeError, OSError) as e:
        raise ConfigError(f"--pretrained {path}: {one_line(e)}") from None


#: What the hand-off may change between the pretrained model and the run's.
_GEOMETRY = ("image_size", "patch_size", "num_classes")


def load_pretrained(cfg: TrainConfig, num_classes: int) -> nn.Module:
    """Build ``cfg.model`` from ``cfg.pretrained`` and give it a fresh ``num_classes`` head if needed.

    When the run's image size (or its ``patch_size`` override) differs from the weights', and
    ``cfg.resample_pretrained`` is set, the weights go into a model of the run's geometry as the
    official CRATE-α fine-tuning does (:mod:`crate_edu.weights.resize`): the position embeddings
    resampled ([CLS] kept, the grid zoomed linearly), a convolutional patch embedding resized
    bilinearly, the head fresh when the classes differ, every other weight as it was.
    """
    from crate_edu.models.base import pair
    from crate_edu.weights.resize import adapt_state_dict

    path = _pretrained_file(str(cfg.pretrained))
    model = _read_pretrained(cfg, path)
    src = model.config
    size = image_size_of(cfg)
    patch = cfg.model_overrides.get("patch_size", getattr(src, "patch_size", None))
    model_size = getattr(src, "image_size", size)
    same_grid = pair(model_size) == pair(size) and pair(src.patch_size) == pair(patch)
    if same_grid:
        if getattr(src, "num_classes", num_classes) != num_classes:
            model.reset_classifier(num_classes)
        return model.train()
    what = f"{model_size} px images, patch {src.patch_size}"
    if not cfg.resample_pretrained:
        raise ConfigError(
            f"--pretrained weights are for {model_size} px images (patch {src.patch_size}) but the run uses "
            f"{size} px (patch {patch}); pass --image-size {model_size}"
            + (f" --patch-size {src.patch_size}" if pair(src.patch_size) != pair(patch) else "")
            + " (position embeddings are not interpolated unless resample_pretrained is set)"
        )
    new_cfg = replace(src, image_size=size, patch_size=patch, num_classes=num_classes)
    target = type(model)(new_cfg)
    patch_key = "conv1.weight" if isinstance(getattr(model, "conv1", None), nn.Conv2d) else None
    if patch_key is None and pair(src.patch_size) != pair(patch):
        raise ConfigError(
            f"--pretrained weights for {what}: {cfg.model} embeds patches with a Linear layer, which "
            f"cannot be resized to patch {patch}; pass --patch-size {src.patch_size}"
        )

    def grid(image_size: Any, patch_size: Any) -> tuple[int, int]:
        (ih, iw), (ph, pw) = pair(image_size), pair(patch_size)
        return ih // ph, iw // pw

    grids = (grid(model_size, src.patch_size), grid(size, patch))
    head = f"mlp_head.{len(target.mlp_head) - 1}."  # the final Linear, as reset_classifier replaces it
    changed = getattr(src, "num_classes", num_classes) != num_classes
    fresh = [k for k in target.state_dict() if k.startswith(head)] if changed else []
    try:
        state = adapt_state_dict(
            model.state_dict(), target.state_dict(), grids=grids, fresh=fresh, patch_key=patch_key
        )
    except ValueError as e:
        raise ConfigError(f"--pretrained weights for {what}: {one_line(e)}") from None
    target.load_state_dict(state)
    return target.train()


def build_model(cfg: TrainConfig) -> nn.Module:
    """A fresh model for the run (random init, or ``cfg.pretrained`` with a new head)."""
    from crate_edu.data import dataset_info
    from crate_edu.models import create_model

    if cfg.pretrained:
        return load_pretrained(cfg, dataset_info(cfg.dataset).num_classes)
    return create_model(cfg.model, **model_kwargs(cfg))


# --------------------------------------------------------------------------------------------
# Accelerator and loaders.
# --------------------------------------------------------------------------------------------


def make_accelerator(precision: str, grad_accum: int = 1) -> tuple[Any, str]:
    """Accelerate's ``Accelerator`` for ``precision`` on this process's device, and the precision
    it resolved to (``'no'``, ``'fp16'`` or ``'bf16'``).

    Batches are split across processes (``split_batches``): the batch size is the global one.

    Raises:
        ConfigError: the hardware cannot run ``precision``.
    """
    from accelerate import Accelerator
    from accelerate.utils import DataLoaderConfiguration

    mixed_precision = resolve_precision(precision, distributed_state().device.type)
    accelerator = Accelerator(
        cpu=cpu_only(),
        mixed_precision=mixed_precision,
        gradient_accumulation_steps=grad_accum,
        dataloader_config=DataLoaderConfiguration(split_batches=True),
    )
    return accelerator, mixed_precision


def default_workers(device_type: str, num_processes: int) -> int:
    """Data-loading processes per training process: none on a CPU, else up to 8."""
    if device_type == "cpu":
        return 0  # the CPU is busy training; in-memory datasets need no workers
    return max(0, min(8, (os.cpu_count() or 1) // max(1, num_processes) - 1))


def _device_loaders(
    cfg: TrainConfig, train_set: Dataset, test_set: Dataset, accelerator: Any, sizes: dict[str, int]
) -> tuple[DeviceImageLoader, DeviceImageLoader] | None:
    """Train and test loaders that keep the data on the training device, or None for DataLoaders.

    ``cfg.data_on_device``: ``no`` -> None; ``auto`` -> the loaders on a CUDA device when both splits
    can be served (in-memory uint8 images, policy none / cifar / shift at the stored size) and take
    at most a quarter of its memory, else None; ``yes`` -> the loaders on any device, or a
    ConfigError saying why they cannot be made.
    """
    mode = cfg.data_on_device
    if mode == "no" or (mode == "auto" and accelerator.device.type != "cuda"):
        return None
    try:
        train_src, test_src = device_source(train_set, train=True), device_source(test_set, train=False)
    except ValueError as e:
        if mode == "auto":
            return None
        raise ConfigError(
            f"data-on-device yes cannot serve {cfg.dataset} with augment {cfg.augment or 'default'}: {e}; "
            "pass --data-on-device no (or auto) to use a DataLoader"
        ) from None
    held = train_src.images.nbytes + test_src.images.nbytes
    if mode == "auto" and held > torch.cuda.get_device_properties(accelerator.device).total_memory // 4:
        return None  # e.g. cluttered-digits at 224 px (7 GB): leave the GPU's memory to the model
    common = dict(
        device=accelerator.device,
        seed=cfg.seed,
        num_processes=accelerator.num_processes,
        process_index=accelerator.process_index,
    )
    train_loader = DeviceImageLoader.from_source(
        train_src, train=True, batch_size=sizes["micro_batch"], length=sizes["length"], **common
    )
    test_loader = DeviceImageLoader.from_source(
        test_src, train=False, batch_size=sizes["eval_batch"], **common
    )
    return train_loader, test_loader


def data_loaders(
    cfg: TrainConfig, train_set: Dataset, test_set: Dataset, accelerator: Any, steps_per_epoch: int
) -> tuple[Any, Any, bool]:
    """``(train_loader, test_loader, on_device)`` of a run.

    The train loader gives ``steps_per_epoch * grad_accum`` micro-batches of
    ``batch_size / grad_accum`` images (all processes together) in the :class:`EpochSampler` order
    of ``(seed, epoch)``; the test loader every test image once, in order. ``on_device``: the
    loaders hold the images on the training device (:mod:`crate_edu.data.loader`) and need no
    ``accelerator.prepare``; otherwise they are DataLoaders for Accelerate to prepare.
    """
    nproc = accelerator.num_processes
    eval_batch = max(nproc, (cfg.eval_batch_size or cfg.batch_size) // nproc * nproc)
    sizes = dict(
        micro_batch=cfg.batch_size // cfg.grad_accum,  # images per forward pass, over all processes
        eval_batch=eval_batch,
        length=steps_per_epoch * cfg.batch_size,  # images per epoch: the last partial batch is dropped
    )
    loaders = _device_loaders(cfg, train_set, test_set, accelerator, sizes)
    if loaders is not None:
        return *loaders, True
    device_type = accelerator.device.type
    workers = default_workers(device_type, nproc) if cfg.num_workers is None else cfg.num_workers
    sampler = EpochSampler(len(train_set), cfg.seed, length=sizes["length"])  # type: ignore[arg-type]
    pin = device_type == "cuda"
    train_loader = DataLoader(
        train_set,
        batch_size=sizes["micro_batch"],
        sampler=sampler,
        drop_last=True,
        num_workers=workers,
        pin_memory=pin,
    )
    test_loader = DataLoader(
        test_set, batch_size=eval_batch, shuffle=False, num_workers=workers, pin_memory=pin
    )
    return train_loader, test_loader, False
