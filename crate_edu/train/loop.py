"""The training loop: one code path for a laptop CPU, one GPU, several GPUs and a TPU.

Hugging Face Accelerate does the distributed work (process groups, DDP, device placement, mixed
precision, the gradient scaler, sharding batches across processes); this module adds what a
reproducible research run needs on top:

* a data order that is a function of ``(seed, epoch)`` alone (:class:`EpochSampler`), split across
  processes so that N processes with a global batch B see exactly the batches one process would;
* the optimisers of the official recipes (Lion, AdamW, SGD), linear warm-up + cosine decay
  updated every step, label smoothing, gradient clipping;
* per-epoch evaluation, one JSON line of metrics per epoch in ``metrics.jsonl``;
* small in-memory image datasets kept on the GPU and augmented there (``data_on_device``,
  :mod:`crate_edu.data.loader`), so that the loader never starves the GPU;
* an atomic checkpoint per epoch holding everything ``--resume`` needs (model, optimiser,
  scheduler, gradient scaler, and the Python/NumPy/torch generators of every process), so that an
  interrupted and resumed run ends with the same numbers as an uninterrupted one.

Launch on several GPUs with ``accelerate launch -m crate_edu train ...`` or
``torchrun --nproc_per_node N -m crate_edu train ...``.
"""

from __future__ import annotations

import math
import os
import sys
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset, Subset

from crate_edu.data.loader import EpochSampler
from crate_edu.train.checkpoint import (
    CHECKPOINT_NAME,
    CONFIG_NAME,
    METRICS_NAME,
    atomic_write_bytes,
    is_checkpoint,
    load_checkpoint,
    make_folder,
    read_checkpoint,
    rng_state,
    save_checkpoint,
    set_rng_state,
    write_jsonl,
)
from crate_edu.train.config import (
    RESUMABLE_OVERRIDES,
    ConfigError,
    TrainConfig,
    check_config,
    image_size_of,
    model_kwargs,
)

if TYPE_CHECKING:
    from crate_edu.data.loader import DeviceImageLoader

__all__ = [
    "EpochSampler",
    "RunResult",
    "TrainingDivergedError",
    "build_datasets",
    "build_model",
    "build_optimizer",
    "evaluate",
    "fit",
    "resolve_precision",
    "train",
    "warmup_cosine",
]


# --------------------------------------------------------------------------------------------
# Pieces: data order, schedule, optimiser, precision.
# --------------------------------------------------------------------------------------------


def warmup_cosine(step: int, warmup_steps: int, total_steps: int, min_ratio: float = 0.0) -> float:
    """Learning-rate factor of optimiser step ``step`` (0-based): linear warm-up, then cosine decay.

    ``(step + 1) / warmup_steps`` during the warm-up (so the first step is not wasted at lr 0),
    then ``min_ratio + (1 - min_ratio) * (1 + cos(pi * t)) / 2`` with ``t`` going from 0 to 1 over
    the remaining steps.
    """
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    t = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    t = min(1.0, t)
    return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * t))


def build_optimizer(params: Any, cfg: TrainConfig) -> torch.optim.Optimizer:
    """The optimiser ``cfg.optimizer`` over ``params``, at the peak learning rate ``cfg.lr``."""
    if cfg.optimizer == "lion":
        from lion_pytorch import Lion

        betas = cfg.betas if cfg.betas is not None else (0.9, 0.99)
        return Lion(params, lr=cfg.lr, betas=betas, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "adamw":
        betas = cfg.betas if cfg.betas is not None else (0.9, 0.999)
        return torch.optim.AdamW(params, lr=cfg.lr, betas=betas, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    raise ConfigError(f"unknown optimizer {cfg.optimizer!r}; choose one of: lion, adamw, sgd")


def _bf16_supported_on_cuda() -> bool:
    return bool(torch.cuda.is_bf16_supported(including_emulation=False))


def cpu_only() -> bool:
    """True when the run must use the CPU: ``ACCELERATE_USE_CPU=1`` (what ``accelerate launch
    --cpu`` sets), or no accelerator (CUDA, TPU, MPS, NPU, XPU) is visible.

    Accelerate only sets up multi-process CPU training (``torchrun`` on a machine without GPUs)
    when told that the run is CPU-only, so every state and accelerator here is created with it.
    """
    from accelerate.utils import (
        is_mps_available,
        is_npu_available,
        is_torch_xla_available,
        is_xpu_available,
        parse_flag_from_env,
    )

    if parse_flag_from_env("ACCELERATE_USE_CPU"):
        return True
    return not (
        torch.cuda.is_available()
        or is_torch_xla_available()
        or is_mps_available()
        or is_npu_available()
        or is_xpu_available()
    )


def distributed_state() -> Any:
    """Accelerate's ``PartialState`` of this process (one process, or one of a launched group)."""
    from accelerate import PartialState

    return PartialState(cpu=cpu_only())


def auto_precision(device_type: str) -> str:
    """What ``--precision auto`` picks on a ``device_type`` device (``accelerate launch`` aside):
    bf16 on a GPU that has it natively (Ampere or newer) and on TPU, fp16 on older CUDA GPUs,
    none elsewhere."""
    if device_type == "cuda":
        return "bf16" if _bf16_supported_on_cuda() else "fp16"
    if device_type == "xla":
        return "bf16"
    return "no"


def resolve_precision(requested: str, device_type: str) -> str:
    """The Accelerate ``mixed_precision`` value for ``requested`` on a ``device_type`` device.

    ``auto``: ``ACCELERATE_MIXED_PRECISION`` if ``accelerate launch`` set it; else bf16 on a GPU
    that has it natively (Ampere or newer) and on TPU, fp16 on older CUDA GPUs, none on CPU.

    Raises:
        ConfigError: the hardware cannot run the requested precision.
    """
    if requested == "auto":
        env = os.environ.get("ACCELERATE_MIXED_PRECISION")
        if env not in ("no", "fp16", "bf16"):
            return auto_precision(device_type)
        requested = env
    if requested == "fp16" and device_type not in ("cuda", "npu", "xpu", "mlu", "musa", "mps"):
        raise ConfigError(
            f"--precision fp16 needs a GPU, but this process runs on {device_type}; "
            "use --precision no (or bf16, slower on most CPUs)"
        )
    if requested == "bf16" and device_type == "cuda" and not _bf16_supported_on_cuda():
        raise ConfigError(
            f"--precision bf16 is not supported by this GPU ({torch.cuda.get_device_name()}); "
            "use --precision fp16 or auto"
        )
    return requested


# --------------------------------------------------------------------------------------------
# Data and model.
# --------------------------------------------------------------------------------------------


def _limit(ds: Dataset, n: int | None) -> Dataset:
    """A fixed random subset of ``n`` items (seed 0: the same subset for every training seed)."""
    if n is None or n >= len(ds):  # type: ignore[arg-type]
        return ds
    g = torch.Generator().manual_seed(0)
    idx = torch.randperm(len(ds), generator=g)[:n].sort().values  # type: ignore[arg-type]
    return Subset(ds, idx.tolist())


def build_datasets(cfg: TrainConfig) -> tuple[Dataset, Dataset]:
    """The train and test splits of ``cfg.dataset`` at the run's image size and augmentation.

    Raises:
        crate_edu.data.DatasetUnavailableError: the files are missing (one-line message).
    """
    from crate_edu.data import build_dataset

    common = dict(
        data_dir=cfg.data_dir, image_size=image_size_of(cfg), download=cfg.download, normalize=cfg.normalize
    )
    train_set = build_dataset(cfg.dataset, "train", augment=cfg.augment, **common)
    test_set = build_dataset(cfg.dataset, "test", augment=cfg.augment, **common)
    return _limit(train_set, cfg.limit_train), _limit(test_set, cfg.limit_test)


def _sum_dtype(device: torch.device) -> torch.dtype:
    """Accumulator dtype for sums of losses: float64 where the device has it (not MPS or TPU)."""
    return torch.float64 if device.type in ("cpu", "cuda") else torch.float32


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())


def _load_pretrained(cfg: TrainConfig, num_classes: int) -> nn.Module:
    """Build ``cfg.model`` from ``cfg.pretrained`` and give it a fresh ``num_classes`` head if needed."""
    import crate_edu

    src = str(cfg.pretrained)
    path = Path(src).expanduser()
    if not path.exists():
        keys = [w.key for w in crate_edu.list_official()]
        if src not in keys:
            raise ConfigError(
                f"--pretrained {src!r}: no such file, and not the key of published weights "
                f"({', '.join(keys)})"
            )
        try:
            path = crate_edu.download_official(src)
        except Exception as e:  # offline, dead link: say so in one line
            raise ConfigError(f"--pretrained {src}: {_one_line(e)}") from None
    if path.is_dir():
        path = path / CHECKPOINT_NAME
    size = image_size_of(cfg)
    from crate_edu.weights.official import CheckpointError

    try:
        obj = read_checkpoint(path, mmap=True)  # nothing in the file runs; legacy format too
    except (CheckpointError, FileNotFoundError) as e:
        raise ConfigError(f"--pretrained {path}: {_one_line(e)}") from None
    if is_checkpoint(obj):
        src_cfg = TrainConfig.from_dict(obj["config"])
        if src_cfg.model != cfg.model:
            raise ConfigError(
                f"--pretrained {path} holds a {src_cfg.model!r} model, but this run trains {cfg.model!r}; "
                f"pass --model {src_cfg.model}"
            )
        model = crate_edu.create_model(src_cfg.model, **model_kwargs(src_cfg))
        model.load_state_dict(obj["model"])
    else:
        try:
            model = crate_edu.load_official(cfg.model, path, **cfg.model_overrides)
        except (ValueError, RuntimeError, OSError) as e:
            raise ConfigError(f"--pretrained {path}: {_one_line(e)}") from None
    del obj
    model_size = getattr(model.config, "image_size", size)
    if model_size != size:
        raise ConfigError(
            f"--pretrained weights are for {model_size} px images but the run uses {size} px; "
            f"pass --image-size {model_size} (position embeddings are not interpolated)"
        )
    if getattr(model.config, "num_classes", num_classes) != num_classes:
        model.reset_classifier(num_classes)
    return model.train()


def build_model(cfg: TrainConfig) -> nn.Module:
    """A fresh model for the run (random init, or ``cfg.pretrained`` with a new head)."""
    import crate_edu
    from crate_edu.data import dataset_info

    if cfg.pretrained:
        return _load_pretrained(cfg, dataset_info(cfg.dataset).num_classes)
    return crate_edu.create_model(cfg.model, **model_kwargs(cfg))


# --------------------------------------------------------------------------------------------
# Evaluation.
# --------------------------------------------------------------------------------------------


@torch.no_grad()
def _evaluate_prepared(
    model: nn.Module, loader: DataLoader | DeviceImageLoader, accelerator: Any
) -> dict[str, float]:
    """Plain cross-entropy and accuracy over every image of ``loader`` (all processes together)."""
    model.eval()
    acc_dtype = _sum_dtype(accelerator.device)
    loss_sum = torch.zeros((), dtype=acc_dtype, device=accelerator.device)
    correct = torch.zeros((), dtype=acc_dtype, device=accelerator.device)
    count = 0
    # The device loader pads the last batch itself and says how many of each global batch are real.
    real: list[int] | None = getattr(loader, "global_sizes", None)
    for i, (x, y) in enumerate(loader):
        logits = model(x).float()  # (B, num_classes)
        loss = F.cross_entropy(logits, y, reduction="none")  # (B,)
        hit = (logits.argmax(dim=-1) == y).to(acc_dtype)  # (B,)
        if real is None:
            loss, hit = accelerator.gather_for_metrics((loss, hit))  # drops the padding of the last batch
        else:
            loss, hit = accelerator.gather((loss, hit))  # the global batch, in order
            loss, hit = loss[: real[i]], hit[: real[i]]
        loss_sum += loss.to(acc_dtype).sum()
        correct += hit.sum()
        count += int(hit.numel())
    model.train()
    if count == 0:
        return {"loss": float("nan"), "acc": float("nan"), "n": 0}
    return {"loss": float(loss_sum) / count, "acc": float(correct) / count, "n": count}


def _default_workers(device_type: str, num_processes: int) -> int:
    if device_type == "cpu":
        return 0  # the CPU is busy training; in-memory datasets need no workers
    return max(0, min(8, (os.cpu_count() or 1) // max(1, num_processes) - 1))


def evaluate(
    model: nn.Module,
    dataset: Dataset,
    *,
    batch_size: int = 256,
    precision: str = "auto",
    num_workers: int | None = None,
) -> dict[str, float]:
    """Test loss (plain cross-entropy, mean over images) and accuracy (a fraction) of ``model``.

    Works in one process or under ``accelerate launch`` / ``torchrun`` (every process evaluates a
    share; the result is over the whole dataset). Returns ``{"loss", "acc", "n"}``.
    """
    from accelerate import Accelerator
    from accelerate.utils import DataLoaderConfiguration

    from crate_edu.train.config import PRECISIONS, choice_error

    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ConfigError(f"batch_size must be a positive integer, got {batch_size!r}")
    if num_workers is not None and (
        isinstance(num_workers, bool) or not isinstance(num_workers, int) or num_workers < 0
    ):
        raise ConfigError(f"num_workers must be 0 or more (or None for the default), got {num_workers!r}")
    if precision not in PRECISIONS:
        raise choice_error(precision, PRECISIONS, "precision")
    try:
        n_items = len(dataset)  # type: ignore[arg-type]
    except TypeError:
        n_items = None  # an iterable dataset: its size is unknown
    if n_items == 0:
        raise ConfigError("the dataset to evaluate is empty; give one with at least one image")
    state = distributed_state()
    mp = resolve_precision(precision, state.device.type)
    accelerator = Accelerator(
        cpu=cpu_only(), mixed_precision=mp, dataloader_config=DataLoaderConfiguration(split_batches=True)
    )
    n = accelerator.num_processes
    bs = max(n, (batch_size // n) * n)
    workers = _default_workers(accelerator.device.type, n) if num_workers is None else num_workers
    loader = DataLoader(dataset, batch_size=bs, shuffle=False, num_workers=workers)
    model, loader = accelerator.prepare(model, loader)
    result = _evaluate_prepared(model, loader, accelerator)
    accelerator.free_memory()
    return result


# --------------------------------------------------------------------------------------------
# Training.
# --------------------------------------------------------------------------------------------


class TrainingDivergedError(RuntimeError):
    """The training loss (or the test loss) became NaN or infinite, so the run was stopped.

    ``str(err)`` is one line: the epoch and step, the value, what to change, and where the last good
    checkpoint is. The epoch that diverged is neither saved nor logged: ``checkpoint.pt`` and
    ``metrics.jsonl`` keep the last good epoch (or do not exist, if it was the first).
    """


def _diverged(
    cfg: TrainConfig, what: str, value: float, epoch: int, where: str, ckpt: Path, lr: float, fp16: bool
) -> TrainingDivergedError:
    last = (
        f"{ckpt} still holds epoch {epoch - 1}, the last good one"
        if epoch > 1
        else "no checkpoint was written"
    )
    fixes = [f"a lower --lr (this run: {lr:.3g} at that step, peak {cfg.lr:g})"]
    if cfg.grad_clip is None:
        fixes.append("--grad-clip 1.0")
    if cfg.warmup_epochs < 1:
        fixes.append("--warmup-epochs 1")
    if fp16:
        fixes.append("--precision bf16 or no (fp16 overflows more easily)")
    return TrainingDivergedError(
        f"training diverged: the {what} became {value} at epoch {epoch}, {where}; the run stopped "
        f"and {last}; start a new run (another --out) with {', '.join(fixes[:-1])}"
        + (f" or {fixes[-1]}" if len(fixes) > 1 else fixes[0])
    )


def _nonfinite_check_interval(device_type: str) -> int:
    """Micro-steps between two checks for a non-finite loss: 1 on a CPU (a check costs nothing
    there), 25 on accelerators (each check waits for the device once)."""
    return 1 if device_type == "cpu" else 25


def _first_nonfinite(accelerator: Any, losses: Tensor, start: int, stop: int) -> tuple[int, float] | None:
    """The first micro-step in ``[start, stop)`` whose loss is not finite on any process, with that
    loss, or None. One synchronisation (and one gather across processes)."""
    if stop <= start:
        return None
    window = losses[start:stop]
    bad = ~torch.isfinite(window)
    big = torch.tensor(stop, device=window.device)
    idx = torch.where(bad.any(), bad.float().argmax() + start, big)  # first bad index, or stop
    val = window[torch.clamp(idx - start, max=max(0, stop - start - 1))]
    both = torch.stack([idx.to(torch.float64), val.to(torch.float64)]).reshape(1, 2)
    if accelerator.num_processes > 1:
        both = accelerator.gather(both)  # (num_processes, 2)
    both = both.cpu()
    first = int(both[:, 0].min())
    if first >= stop:
        return None
    row = int(both[:, 0].argmin())
    return first, float(both[row, 1])


@dataclass
class RunResult:
    """What a finished (or resumed-to-the-end) run leaves behind.

    Attributes:
        out_dir: the run folder.
        history: one metrics dict per epoch (what ``metrics.jsonl`` holds).
        checkpoint: path of the last checkpoint.
        config: the configuration the run used.
    """

    out_dir: Path
    history: list[dict[str, Any]]
    checkpoint: Path
    config: TrainConfig

    @property
    def final(self) -> dict[str, Any]:
        """Metrics of the last epoch."""
        return self.history[-1]


def _device_loaders(
    cfg: TrainConfig,
    train_set: Dataset,
    test_set: Dataset,
    accelerator: Any,
    micro_batch: int,
    eval_batch: int,
    length: int,
) -> tuple[DeviceImageLoader, DeviceImageLoader] | None:
    """Train and test loaders that keep the data on the training device, or None for DataLoaders.

    ``cfg.data_on_device``: ``no`` -> None; ``auto`` -> the loaders on a CUDA device when both splits
    can be served (in-memory uint8 images, policy none / cifar / shift at the stored size) and take
    at most a quarter of its memory, else None; ``yes`` -> the loaders on any device, or a
    ConfigError saying why they cannot be made.
    """
    from crate_edu.data.loader import DeviceImageLoader, device_source

    mode = cfg.data_on_device
    if mode == "no" or (mode == "auto" and accelerator.device.type != "cuda"):
        return None
    try:
        sources = device_source(train_set, train=True), device_source(test_set, train=False)
    except ValueError as e:
        if mode == "auto":
            return None
        raise ConfigError(
            f"data-on-device yes cannot serve {cfg.dataset} with augment {cfg.augment or 'default'}: {e}; "
            "pass --data-on-device no (or auto) to use a DataLoader"
        ) from None
    held = sum(src.images.nbytes for src in sources)
    if mode == "auto" and held > torch.cuda.get_device_properties(accelerator.device).total_memory // 4:
        return None  # e.g. cluttered-digits at 224 px (7 GB): leave the GPU's memory to the model
    common = dict(
        device=accelerator.device,
        seed=cfg.seed,
        num_processes=accelerator.num_processes,
        process_index=accelerator.process_index,
    )
    train_src, test_src = sources
    train_loader = DeviceImageLoader.from_source(
        train_src, train=True, batch_size=micro_batch, length=length, **common
    )
    test_loader = DeviceImageLoader.from_source(test_src, train=False, batch_size=eval_batch, **common)
    return train_loader, test_loader


def _gather_rng(accelerator: Any) -> list[dict[str, Any]]:
    """The generator states of every process, in rank order (on XLA only this process's)."""
    from accelerate.utils import DistributedType, gather_object

    mine = rng_state()
    if accelerator.num_processes == 1 or accelerator.distributed_type == DistributedType.XLA:
        return [mine]
    return list(gather_object([mine]))


def fit(
    model: nn.Module,
    train_set: Dataset,
    test_set: Dataset,
    cfg: TrainConfig,
    out_dir: str | os.PathLike,
    *,
    resume: dict[str, Any] | None = None,
    on_epoch_end: Callable[[dict[str, Any]], None] | None = None,
) -> RunResult:
    """Train ``model`` on ``train_set``, evaluating on ``test_set`` after every epoch.

    Args:
        model: a classifier returning logits ``(B, num_classes)``.
        train_set, test_set: datasets of ``(image (3, S, S), label)``.
        cfg: the run configuration (checked by :func:`check_config` beforehand).
        out_dir: run folder: ``config.json``, ``metrics.jsonl`` and ``checkpoint.pt`` go there.
        resume: a loaded checkpoint (:func:`~crate_edu.train.checkpoint.load_checkpoint`) to
            continue from; ``model`` must have been built from the same configuration.
        on_epoch_end: called on every process with each epoch's metrics after its checkpoint is
            written (raise to stop the run, e.g. in a test or a time-boxed session).

    Returns:
        A :class:`RunResult`.

    Raises:
        TrainingDivergedError: the training or test loss became NaN or infinite; the epoch is
            neither saved nor logged, so ``checkpoint.pt`` and ``metrics.jsonl`` keep the last good one.
        crate_edu.train.checkpoint.FileWriteError: a file of the run folder could not be written
            (disk full, read-only, ...); the previous version of each file is unchanged.
        ConfigError: the batch does not fit the data or the hardware cannot run the precision.
    """
    threads_before = torch.get_num_threads()
    try:
        return _fit(model, train_set, test_set, cfg, out_dir, resume=resume, on_epoch_end=on_epoch_end)
    finally:
        torch.set_num_threads(threads_before)  # cfg.threads applies to this run only


def _fit(
    model: nn.Module,
    train_set: Dataset,
    test_set: Dataset,
    cfg: TrainConfig,
    out_dir: str | os.PathLike,
    *,
    resume: dict[str, Any] | None = None,
    on_epoch_end: Callable[[dict[str, Any]], None] | None = None,
) -> RunResult:
    """The body of :func:`fit`."""
    from accelerate import Accelerator
    from accelerate.utils import DataLoaderConfiguration, set_seed
    from tqdm.auto import tqdm

    out = Path(out_dir)
    state = distributed_state()
    mixed_precision = resolve_precision(cfg.precision, state.device.type)
    accelerator = Accelerator(
        cpu=cpu_only(),
        mixed_precision=mixed_precision,
        gradient_accumulation_steps=cfg.grad_accum,
        dataloader_config=DataLoaderConfiguration(split_batches=True),
    )
    nproc = accelerator.num_processes
    chunks = nproc * cfg.grad_accum
    if cfg.batch_size % chunks:
        raise ConfigError(
            f"batch-size {cfg.batch_size} is the global batch and must be a multiple of the number of "
            f"processes times grad-accum ({nproc} x {cfg.grad_accum}); "
            f"try {max(chunks, cfg.batch_size // chunks * chunks)}"
        )
    n_train = len(train_set)  # type: ignore[arg-type]
    if cfg.batch_size > n_train:
        raise ConfigError(
            f"batch-size {cfg.batch_size} is larger than the train split ({n_train} images of "
            f"{cfg.dataset}); choose a batch size between 1 and {n_train}"
        )
    if len(test_set) == 0:  # type: ignore[arg-type]
        raise ConfigError(f"the test split of {cfg.dataset} is empty; the run evaluates after every epoch")
    eval_bs = cfg.eval_batch_size or cfg.batch_size
    eval_bs = max(nproc, eval_bs // nproc * nproc)

    steps_per_epoch = n_train // cfg.batch_size  # optimiser steps; the last partial batch is dropped
    micro_batch = cfg.batch_size // cfg.grad_accum  # images per forward pass, over all processes
    micro_steps = steps_per_epoch * cfg.grad_accum
    total_steps = steps_per_epoch * cfg.epochs
    warmup_steps = round(cfg.warmup_epochs * steps_per_epoch)

    optimizer = build_optimizer(model.parameters(), cfg)

    def lr_factor(step: int) -> float:
        return warmup_cosine(step, warmup_steps, total_steps, cfg.min_lr_ratio)

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor)

    start_epoch = 0
    history: list[dict[str, Any]] = []
    if resume is not None:
        model.load_state_dict(resume["model"])
        optimizer.load_state_dict(resume["optimizer"])
        scheduler.load_state_dict(resume["scheduler"])
        start_epoch = int(resume["epoch"])
        history = [dict(h) for h in resume["history"]]

    device_type = accelerator.device.type
    if cfg.threads is not None:
        torch.set_num_threads(cfg.threads)
    loaders = _device_loaders(
        cfg, train_set, test_set, accelerator, micro_batch, eval_bs, steps_per_epoch * cfg.batch_size
    )
    if cfg.compile:  # one graph per model (tests/unit/models/test_models.py); the checkpoint stores the plain module
        model = torch.compile(model, backend=cfg.compile)
    if loaders is not None:  # each process cuts its own share of every global batch: nothing to prepare
        train_loader, test_loader = loaders
        model, optimizer = accelerator.prepare(model, optimizer)
    else:
        workers = _default_workers(device_type, nproc) if cfg.num_workers is None else cfg.num_workers
        sampler = EpochSampler(n_train, cfg.seed, length=steps_per_epoch * cfg.batch_size)
        train_loader = DataLoader(
            train_set,
            batch_size=micro_batch,
            sampler=sampler,
            drop_last=True,
            num_workers=workers,
            pin_memory=device_type == "cuda",
        )
        test_loader = DataLoader(
            test_set, batch_size=eval_bs, shuffle=False, num_workers=workers, pin_memory=device_type == "cuda"
        )
        model, optimizer, train_loader, test_loader = accelerator.prepare(
            model, optimizer, train_loader, test_loader
        )
    if resume is not None and resume.get("scaler") is not None and accelerator.scaler is not None:
        accelerator.scaler.load_state_dict(resume["scaler"])

    if accelerator.is_main_process:
        make_folder(out)
        text = _config_json(cfg, mixed_precision, nproc).encode("utf-8")
        atomic_write_bytes(out / CONFIG_NAME, lambda f: f.write(text))
        write_jsonl(out / METRICS_NAME, history)  # drops lines of epochs the checkpoint does not have
    accelerator.wait_for_everyone()

    # Generators: restored from the checkpoint, or seeded per process for a fresh run.
    if resume is not None:
        states = resume["rng"]
        if len(states) == nproc:
            set_rng_state(states[accelerator.process_index])
        else:
            warnings.warn(
                f"the checkpoint holds the generators of {len(states)} process(es) but this run has "
                f"{nproc}; random augmentations will differ from an uninterrupted run",
                stacklevel=2,
            )
            set_seed(cfg.seed + 7919 * start_epoch, device_specific=True)
    else:
        set_seed(cfg.seed, device_specific=True)

    show_bar = cfg.progress if cfg.progress is not None else sys.stderr.isatty()
    show_bar = bool(show_bar) and accelerator.is_local_main_process
    ckpt_path = out / CHECKPOINT_NAME
    step = start_epoch * steps_per_epoch
    accelerator.print(
        f"training {cfg.model} on {cfg.dataset} ({n_train} train / {len(test_set)} test images) "  # type: ignore[arg-type]
        f"for {cfg.epochs} epochs of {steps_per_epoch} steps on {nproc} x {device_type}, "
        f"precision {mixed_precision}; run folder {out}"
    )
    if loaders is not None:
        accelerator.print(
            f"data on {accelerator.device}: {n_train} train and {len(test_set)} test images held there as "  # type: ignore[arg-type]
            f"uint8 ({(loaders[0].nbytes + loaders[1].nbytes) / 2**20:.1f} MB per process); batches and "
            f"the '{loaders[0].policy}' augmentation are made there, no DataLoader"
        )
    # A NaN or infinite loss stops the run before the epoch is saved (TrainingDivergedError). Each
    # micro-step's loss is kept on the device and checked every `check_every` steps (every step on
    # a CPU), so that on an accelerator the check costs no synchronisation per step.
    check_every = _nonfinite_check_interval(accelerator.device.type)

    def diverged(what: str, value: float, epoch: int, where: str) -> TrainingDivergedError:
        fp16 = mixed_precision == "fp16"
        return _diverged(cfg, what, value, epoch + 1, where, ckpt_path, lr_used, fp16)

    for epoch in range(start_epoch, cfg.epochs):
        t0 = time.perf_counter()
        losses = torch.zeros(max(1, micro_steps), dtype=torch.float32, device=accelerator.device)
        checked = 0
        model.train()
        train_loader.set_epoch(epoch)
        acc_dtype = _sum_dtype(accelerator.device)
        loss_sum = torch.zeros((), dtype=acc_dtype, device=accelerator.device)
        correct = torch.zeros((), dtype=acc_dtype, device=accelerator.device)
        seen = 0
        bar = tqdm(
            train_loader,
            total=micro_steps,
            desc=f"epoch {epoch + 1}/{cfg.epochs}",
            disable=not show_bar,
            leave=False,
            dynamic_ncols=True,
        )
        lr_used = optimizer.param_groups[0]["lr"]
        for i, (x, y) in enumerate(bar):
            lr_used = optimizer.param_groups[0]["lr"]
            # accumulate(): with grad_accum > 1, gradients add up over that many micro-batches (no
            # DDP all-reduce in between) and the prepared optimiser steps only on the last one.
            with accelerator.accumulate(model):
                logits = model(x).float()  # (micro_batch / nproc, num_classes)
                loss = F.cross_entropy(logits, y, label_smoothing=cfg.label_smoothing)
                accelerator.backward(loss)  # divides by grad_accum
                if cfg.grad_clip is not None and accelerator.sync_gradients:
                    accelerator.clip_grad_norm_(model.parameters(), cfg.grad_clip)
                optimizer.step()
                # fp16 overflow skips the optimiser step; the schedule then waits for it
                if accelerator.sync_gradients and not accelerator.optimizer_step_was_skipped:
                    scheduler.step()
                optimizer.zero_grad(set_to_none=True)
            if accelerator.sync_gradients:
                step += 1
            if i < losses.numel():
                losses[i] = loss.detach()
            if (i + 1) % check_every == 0 or i + 1 >= micro_steps:
                bad = _first_nonfinite(accelerator, losses, checked, min(i + 1, losses.numel()))
                checked = min(i + 1, losses.numel())
                if bad is not None:
                    k, value = bad
                    where = (
                        f"micro-step {k + 1} of {micro_steps} (optimizer step "
                        f"{epoch * steps_per_epoch + k // cfg.grad_accum + 1} of {total_steps})"
                    )
                    raise diverged("training loss", value, epoch, where)
            loss_sum += loss.detach().to(acc_dtype)
            correct += (logits.detach().argmax(dim=-1) == y).sum().to(acc_dtype)
            seen += int(y.numel())
            if show_bar and (i % 10 == 0 or i == micro_steps - 1):
                bar.set_postfix(loss=f"{loss.item():.4f}", lr=f"{lr_used:.2e}")
        bar.close()

        # Averages over all processes: equal shares per micro-batch, so the mean of means is the mean.
        loss_sum = accelerator.reduce(loss_sum, "sum")
        correct = accelerator.reduce(correct, "sum")
        train_loss = float(loss_sum) / (max(1, micro_steps) * nproc)
        train_acc = float(correct) / max(1, seen * nproc)
        ev = _evaluate_prepared(model, test_loader, accelerator)
        if not math.isfinite(ev["loss"]):
            raise diverged("test loss", ev["loss"], epoch, "in the evaluation after its last step")
        record = {
            "epoch": epoch + 1,
            "step": step,
            "train_loss": train_loss,
            "train_acc": train_acc,
            "test_loss": ev["loss"],
            "test_acc": ev["acc"],
            "lr": lr_used,
            "seconds": round(time.perf_counter() - t0, 3),
        }
        history.append(record)

        rng = _gather_rng(accelerator)
        if accelerator.is_main_process:
            save_checkpoint(
                {
                    "epoch": epoch + 1,
                    "step": step,
                    "config": cfg.to_dict(),
                    "model": accelerator.unwrap_model(model, keep_torch_compile=False).state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(),
                    "scaler": accelerator.scaler.state_dict() if accelerator.scaler is not None else None,
                    "rng": rng,
                    "history": history,
                    "mixed_precision": mixed_precision,
                    "num_processes": nproc,
                },
                ckpt_path,
            )
            write_jsonl(out / METRICS_NAME, history)  # atomic, like the checkpoint: never a torn line
        accelerator.wait_for_everyone()
        accelerator.print(
            f"epoch {epoch + 1}/{cfg.epochs}  train_loss {train_loss:.4f}  train_acc {train_acc:.4f}  "
            f"test_loss {ev['loss']:.4f}  test_acc {ev['acc']:.4f}  lr {lr_used:.2e}  "
            f"{record['seconds']:.1f} s"
        )
        if on_epoch_end is not None:
            on_epoch_end(record)

    accelerator.wait_for_everyone()
    return RunResult(out_dir=out, history=history, checkpoint=ckpt_path, config=cfg)


def _config_json(cfg: TrainConfig, mixed_precision: str, nproc: int) -> str:
    import json

    d = cfg.to_dict()
    d["_resolved"] = {
        "mixed_precision": mixed_precision,
        "num_processes": nproc,
        "image_size": image_size_of(cfg),
        "torch": torch.__version__,
    }
    return json.dumps(d, indent=2) + "\n"


def _merge_resume_config(
    saved: TrainConfig, requested: TrainConfig | None, explicit: Sequence[str]
) -> TrainConfig:
    """The configuration of a resumed run: the saved one, with the run-time fields the user set."""
    if requested is None:
        return saved
    changes: dict[str, Any] = {}
    for name in explicit:
        new, old = getattr(requested, name), getattr(saved, name)
        if new == old:
            continue
        if name not in RESUMABLE_OVERRIDES:
            raise ConfigError(
                f"cannot change {name.replace('_', '-')} when resuming (the checkpoint has {old!r}, "
                f"asked for {new!r}); only {', '.join(RESUMABLE_OVERRIDES)} may change"
            )
        changes[name] = new
    if "epochs" in changes:
        warnings.warn(
            f"resuming with epochs {changes['epochs']} instead of {saved.epochs}: the cosine schedule is "
            "stretched to the new length, so the result differs from a run planned that long",
            stacklevel=3,
        )
    return saved.replace(**changes)


def _check_run_folder(out: Path) -> None:
    """Raise ConfigError, before any data is loaded, if ``out`` cannot be a run folder: it is a file,
    or a part of its path is a file."""
    for parent in (out, *out.parents):
        if parent.exists():
            if not parent.is_dir():
                what = "is a file" if parent == out else f"lies under {parent}, which is a file"
                raise ConfigError(f"--out {out} {what}, not a folder; choose a folder path for the run")
            return


def train(
    cfg: TrainConfig | None = None,
    out_dir: str | os.PathLike | None = None,
    *,
    resume: bool | str | os.PathLike = False,
    explicit: Sequence[str] = (),
    on_epoch_end: Callable[[dict[str, Any]], None] | None = None,
) -> RunResult:
    """Build the model and data of ``cfg`` and train; the entry point of ``crate-edu train``.

    Args:
        cfg: the run configuration (``RECIPES[name].config(...)``); may be None when resuming.
        out_dir: the run folder (required unless ``resume`` is a path inside one).
        resume: False for a fresh run; True to continue the checkpoint in ``out_dir``; or the path
            of a checkpoint file or run folder to continue (the run then goes on in ``out_dir`` if
            given, else in the checkpoint's folder).
        explicit: names of the fields of ``cfg`` that the user set explicitly; when resuming, those
            of :data:`~crate_edu.train.config.RESUMABLE_OVERRIDES` replace the saved values and
            any other that differs is an error.
        on_epoch_end: see :func:`fit`.

    Raises:
        ConfigError: a bad configuration, batch size or checkpoint (one-line message).
        crate_edu.data.DatasetUnavailableError: the dataset is missing or its files are damaged.
        TrainingDivergedError, FileWriteError: see :func:`fit`.
    """
    ckpt: dict[str, Any] | None = None
    if resume:
        if resume is True:
            if out_dir is None:
                raise ConfigError("--resume needs a run folder: pass --out DIR or --resume PATH")
            src = Path(out_dir)
        else:
            src = Path(resume)
        try:
            ckpt = load_checkpoint(src)
        except FileNotFoundError:
            raise ConfigError(
                f"--resume: no checkpoint at {src if src.suffix else src / CHECKPOINT_NAME}; "
                "start the run without --resume"
            ) from None
        except ValueError as e:
            raise ConfigError(f"--resume: {e}") from None
        if out_dir is None:
            out_dir = src if src.is_dir() else src.parent
        # checkpoints older than data_on_device were trained with DataLoaders: resume them so
        saved = {"data_on_device": "no", **ckpt["config"]}
        cfg = _merge_resume_config(TrainConfig.from_dict(saved), cfg, explicit)
        if int(ckpt["epoch"]) >= cfg.epochs:
            warnings.warn(
                f"the checkpoint has already run {ckpt['epoch']} of {cfg.epochs} epochs; nothing to do "
                "(pass --epochs N to train longer)",
                stacklevel=2,
            )
    if cfg is None:
        raise ConfigError("no configuration: pass a TrainConfig or resume from a checkpoint")
    if out_dir is None:
        raise ConfigError("no run folder: pass out_dir (--out DIR)")
    check_config(cfg)
    resolve_precision(cfg.precision, distributed_state().device.type)  # e.g. fp16 on a CPU: say so now
    out = Path(out_dir)
    _check_run_folder(out)
    if ckpt is None and (out / CHECKPOINT_NAME).exists():
        raise ConfigError(
            f"{out} already holds a run ({CHECKPOINT_NAME}); pass --resume to continue it, "
            "or choose another --out"
        )

    from accelerate.utils import set_seed

    # The run folder is made before the (possibly long) data loading, so that an unwritable --out
    # fails at once; a folder made here is removed again if the run stops before writing into it.
    made = make_folder(out) if distributed_state().is_main_process else []
    try:
        set_seed(cfg.seed)  # the same initial weights in every process
        if ckpt is not None:
            cfg_no_pretrained = cfg.replace(pretrained=None)  # the checkpoint has the weights
            model = build_model(cfg_no_pretrained)
        else:
            model = build_model(cfg)
        train_set, test_set = build_datasets(cfg)
        return fit(model, train_set, test_set, cfg, out, resume=ckpt, on_epoch_end=on_epoch_end)
    except BaseException:
        for folder in made:  # deepest first; only folders that are still empty
            try:
                folder.rmdir()
            except OSError:
                break
        raise
