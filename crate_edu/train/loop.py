"""The training loop: one code path for a laptop CPU, one GPU, several GPUs and a TPU.

A run, as nanoGPT's ``train.py`` has it: set-up, the step, evaluation, checkpoint. The calls
(this file defines them from the inside out: the step first, the entry point last)::

    train(cfg, out_dir)                       the entry point: a fresh run, or resume one
      fit(model, train_set, test_set, cfg)    set_up, then run_epochs
        set_up(...)                           Accelerator, optimiser and schedule, resume, loaders,
                                              run folder, random generators
        run_epochs(run, objective)            for each epoch:
          train_one_epoch(run, objective)       every batch: train_step, a finite-loss check
          objective.evaluate(run, epoch)        the test metrics
          save_epoch(run, objective, epoch)     checkpoint.pt, then metrics.jsonl, atomically

``run_epochs`` does not know what is learnt: an objective (:mod:`crate_edu.train.objectives`)
gives the loss and the metrics. Classification is the one here; the CRATE-MAE pre-training of
:mod:`crate_edu.train.mae` sets up its own run (one device, no Accelerate) and calls the same
``run_epochs``.

Hugging Face Accelerate does the distributed work (process groups, DDP, device placement, mixed
precision, the gradient scaler, sharding batches across processes); this module adds what a
reproducible research run needs on top:

* a data order that is a function of ``(seed, epoch)`` alone
  (:class:`~crate_edu.data.loader.EpochSampler`), split across
  processes so that N processes with a global batch B see exactly the batches one process would;
* the optimisers of the official recipes (Lion, AdamW, SGD), linear warm-up + cosine decay
  updated every step (:mod:`crate_edu.train.optim`), label smoothing, gradient clipping;
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

import json
import os
import sys
import time
import warnings
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.data import Dataset

from crate_edu.device import distributed_state, resolve_precision, sum_dtype
from crate_edu.errors import ConfigError
from crate_edu.train.build import build_datasets, build_model, data_loaders, make_accelerator
from crate_edu.train.checkpoint import (
    CHECKPOINT_NAME,
    CONFIG_NAME,
    METRICS_NAME,
    atomic_write_bytes,
    load_checkpoint,
    make_folder,
    save_checkpoint,
    set_rng_state,
    write_jsonl,
)
from crate_edu.train.config import (
    RESUMABLE_OVERRIDES,
    TrainConfig,
    check_config,
    image_size_of,
    is_language_model,
    min_lr_ratio_of,
)
from crate_edu.train.language import NextToken
from crate_edu.train.objectives import Classification, EpochStats, Objective, Run
from crate_edu.train.optim import build_optimizer, lr_schedule, param_groups

__all__ = [
    "OneDevice",
    "RunResult",
    "fit",
    "restore_state",
    "run_epochs",
    "save_epoch",
    "set_up",
    "start_run_folder",
    "train",
    "train_one_epoch",
    "train_step",
]


# --------------------------------------------------------------------------------------------
# The skeleton: one step, one epoch, the checkpoint, the epochs. Every objective runs through it.
# --------------------------------------------------------------------------------------------


def train_step(run: Run, objective: Objective, batch: Any) -> tuple[Tensor, Tensor | None]:
    """One micro-batch: the objective's loss, backward; on the last micro-batch of an optimiser
    step also gradient clipping, the optimiser step and the schedule step. Returns the loss and
    the objective's hits (correct predictions, or None)."""
    acc, model, optimizer = run.accelerator, run.model, run.optimizer
    # accumulate(): with grad_accum > 1, gradients add up over that many micro-batches (no
    # DDP all-reduce in between) and the prepared optimiser steps only on the last one.
    with acc.accumulate(model):
        loss, hits = objective.loss(model, batch)
        acc.backward(loss)  # divides by grad_accum
        if run.grad_clip is not None and acc.sync_gradients:
            acc.clip_grad_norm_(model.parameters(), run.grad_clip)
        optimizer.step()
        # fp16 overflow skips the optimiser step; the schedule then waits for it
        if acc.sync_gradients and not acc.optimizer_step_was_skipped:
            run.scheduler.step()
        optimizer.zero_grad(set_to_none=True)
    if acc.sync_gradients:
        run.step += 1
    return loss, hits


def train_one_epoch(run: Run, objective: Objective, epoch: int) -> EpochStats:
    """Every batch of epoch ``epoch`` (0-based) through :func:`train_step`; the mean loss (and
    accuracy) over all processes. A NaN or infinite loss raises the objective's
    :class:`~crate_edu.errors.TrainingDivergedError` before the epoch is saved."""
    from tqdm.auto import tqdm

    acc = run.accelerator
    started, cpu_started = time.perf_counter(), time.process_time()
    watch = _LossWatch(acc, run.micro_steps)
    run.model.train()
    run.train_loader.set_epoch(epoch)
    dtype = sum_dtype(acc.device)
    loss_sum = torch.zeros((), dtype=dtype, device=acc.device)
    correct = torch.zeros((), dtype=dtype, device=acc.device)
    seen = 0
    bar = tqdm(
        run.train_loader,
        total=run.micro_steps,
        desc=f"epoch {epoch + 1}/{run.epochs}",
        disable=not run.show_bar,
        leave=False,
        dynamic_ncols=True,
    )
    for i, batch in enumerate(bar):
        run.lr = run.optimizer.param_groups[0]["lr"]
        loss, hits = train_step(run, objective, batch)
        bad = watch.add(i, loss)
        if bad is not None:
            raise objective.diverged(run, bad[1], epoch, bad[0])
        loss_sum += loss.detach().to(dtype)
        if hits is not None:
            correct += hits.sum().to(dtype)
            seen += int(hits.numel())
        if run.show_bar and (i % 10 == 0 or i == run.micro_steps - 1):
            bar.set_postfix(loss=f"{loss.item():.4f}", lr=f"{run.lr:.2e}")
    bar.close()
    seconds, cpu_seconds = time.perf_counter() - started, time.process_time() - cpu_started
    # Averages over all processes: equal shares per micro-batch, so the mean of means is the mean.
    nproc = acc.num_processes
    loss_sum, correct = acc.reduce(loss_sum, "sum"), acc.reduce(correct, "sum")
    mean_loss = float(loss_sum) / (max(1, run.micro_steps) * nproc)
    accuracy = float(correct) / max(1, seen * nproc) if seen else None
    return EpochStats(mean_loss, accuracy, started, seconds, cpu_seconds)


def save_epoch(run: Run, objective: Objective, epoch: int) -> None:
    """Write epoch ``epoch`` (0-based, just finished): ``checkpoint.pt`` with everything a resume
    needs, then ``metrics.jsonl``, each atomically, by the main process. Nothing without a folder."""
    if run.out is None:
        return
    acc = run.accelerator
    extras = objective.checkpoint_extras(run)  # on every process: it may gather from all of them
    if acc.is_main_process:
        state = {
            "epoch": epoch + 1,
            "step": run.step,
            "model": acc.unwrap_model(run.model, keep_torch_compile=False).state_dict(),
            "optimizer": run.optimizer.state_dict(),
            "scheduler": run.scheduler.state_dict(),
            "history": run.history,
            **extras,
        }
        save_checkpoint(state, run.out / CHECKPOINT_NAME)
        write_jsonl(run.out / METRICS_NAME, run.history)  # atomic, after the checkpoint: never a torn line
    acc.wait_for_everyone()


def run_epochs(
    run: Run, objective: Objective, on_epoch_end: Callable[[dict[str, Any]], None] | None = None
) -> None:
    """The loop: from ``run.start_epoch`` to ``run.epochs``, train one epoch, evaluate, record the
    metrics, save the checkpoint, print one line, call ``on_epoch_end(record)``."""
    for epoch in range(run.start_epoch, run.epochs):
        stats = train_one_epoch(run, objective, epoch)
        test = objective.evaluate(run, epoch)
        record = objective.record(run, epoch, stats, test)
        run.history.append(record)
        save_epoch(run, objective, epoch)
        run.accelerator.print(objective.describe(record, run.epochs))
        if on_epoch_end is not None:
            on_epoch_end(record)
    run.accelerator.wait_for_everyone()


def _nonfinite_check_interval(device_type: str) -> int:
    """Micro-steps between two checks for a non-finite loss: 1 on a CPU (a check costs nothing
    there), 25 on accelerators (each check waits for the device once)."""
    return 1 if device_type == "cpu" else 25


class _LossWatch:
    """Each micro-step's loss, kept on the device and checked for NaN and infinity every
    :func:`_nonfinite_check_interval` steps, so that on an accelerator the check costs no
    synchronisation per step; the step it names is still the first bad one."""

    def __init__(self, accelerator: Any, micro_steps: int) -> None:
        self.accelerator = accelerator
        self.losses = torch.zeros(max(1, micro_steps), dtype=torch.float32, device=accelerator.device)
        self.micro_steps = micro_steps
        self.every = _nonfinite_check_interval(accelerator.device.type)
        self.checked = 0

    def add(self, i: int, loss: Tensor) -> tuple[int, float] | None:
        """Keep micro-step ``i``'s loss; at a check, the first non-finite ``(micro-step, loss)``
        since the previous check, on any process; else None."""
        if i < self.losses.numel():
            self.losses[i] = loss.detach()
        if (i + 1) % self.every and i + 1 < self.micro_steps:
            return None
        stop = min(i + 1, self.losses.numel())
        bad = _first_nonfinite(self.accelerator, self.losses, self.checked, stop)
        self.checked = stop
        return bad


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


class OneDevice:
    """Stands in for Accelerate's ``Accelerator`` in a run of one process on one device, in
    float32, with one micro-batch per optimiser step (the CRATE-MAE pre-training): every method
    the loop calls is the plain PyTorch operation, and :meth:`print` goes to ``log``.

    Args:
        device: where the model and the batches live.
        log: called with each line the loop prints (None: silent).
    """

    num_processes = 1
    process_index = 0
    is_main_process = True
    is_local_main_process = True
    sync_gradients = True  # every micro-batch is a whole optimiser step
    optimizer_step_was_skipped = False  # no fp16 gradient scaler that could skip one
    scaler = None

    def __init__(self, device: torch.device | str, log: Callable[[str], None] | None = print) -> None:
        self.device = torch.device(device)
        self.log = log

    def accumulate(self, model: nn.Module) -> Any:
        return nullcontext()

    def backward(self, loss: Tensor) -> None:
        loss.backward()

    def clip_grad_norm_(self, parameters: Any, max_norm: float) -> Tensor:
        return nn.utils.clip_grad_norm_(parameters, max_norm)

    def reduce(self, tensor: Tensor, reduction: str = "sum") -> Tensor:
        return tensor  # one process: nothing to add up

    def gather(self, tensor: Tensor) -> Tensor:
        return tensor

    def gather_for_metrics(self, tensors: Any) -> Any:
        return tensors  # one process: no padding to drop

    def unwrap_model(self, model: nn.Module, keep_torch_compile: bool = True) -> nn.Module:
        return model

    def wait_for_everyone(self) -> None:
        pass

    def print(self, text: str) -> None:
        if self.log is not None:
            self.log(text)


# --------------------------------------------------------------------------------------------
# Set-up pieces every run shares: restoring a checkpoint, starting the run folder.
# --------------------------------------------------------------------------------------------


def restore_state(
    state: dict[str, Any] | None, model: nn.Module, optimizer: Any, scheduler: Any
) -> tuple[int, list[dict[str, Any]]]:
    """Load a checkpoint's model, optimiser and schedule; return its epoch count and history
    (``0, []`` when ``state`` is None: a fresh run)."""
    if state is None:
        return 0, []
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    return int(state["epoch"]), [dict(h) for h in state["history"]]


def start_run_folder(out: Path, config_json: str, history: list[dict[str, Any]]) -> None:
    """Make the run folder, write ``config.json``, and rewrite ``metrics.jsonl`` with ``history``
    (a resumed run drops the lines of epochs its checkpoint does not have)."""
    make_folder(out)
    text = config_json.encode("utf-8")
    atomic_write_bytes(out / CONFIG_NAME, lambda f: f.write(text))
    write_jsonl(out / METRICS_NAME, history)


# --------------------------------------------------------------------------------------------
# Classification: set-up and fit.
# --------------------------------------------------------------------------------------------


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


def _check_batches(cfg: TrainConfig, nproc: int, train_set: Dataset, test_set: Dataset) -> None:
    """Raise ConfigError unless the global batch splits over the processes and micro-batches and
    fits the train split, and the test split has images."""
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


def _config_json(cfg: TrainConfig, mixed_precision: str, nproc: int) -> str:
    d = cfg.to_dict()
    d["_resolved"] = {
        "mixed_precision": mixed_precision,
        "num_processes": nproc,
        "image_size": image_size_of(cfg),
        "torch": torch.__version__,
    }
    return json.dumps(d, indent=2) + "\n"


def _seed_generators(
    cfg: TrainConfig, accelerator: Any, resume: dict[str, Any] | None, start_epoch: int
) -> None:
    """Every process's random generators: as the checkpoint saved them, or seeded per process."""
    from accelerate.utils import set_seed

    if resume is None:
        set_seed(cfg.seed, device_specific=True)
        return
    states, nproc = resume["rng"], accelerator.num_processes
    if len(states) == nproc:
        set_rng_state(states[accelerator.process_index])
        return
    warnings.warn(
        f"the checkpoint holds the generators of {len(states)} process(es) but this run has "
        f"{nproc}; random augmentations will differ from an uninterrupted run",
        stacklevel=3,
    )
    set_seed(cfg.seed + 7919 * start_epoch, device_specific=True)


def _announce(
    run: Run,
    cfg: TrainConfig,
    mixed_precision: str,
    n_train: int,
    n_test: int,
    on_device: bool,
    context: int | None = None,
) -> None:
    """The run's first lines on stdout: what trains on what, where; where the data lives."""
    acc = run.accelerator
    items = f"windows of {context} {cfg.tokenizer} tokens" if context else "images"
    acc.print(
        f"training {cfg.model} on {cfg.dataset} ({n_train} train / {n_test} test {items}) "
        f"for {cfg.epochs} epochs of {run.steps_per_epoch} steps on {acc.num_processes} x {acc.device.type}, "
        f"precision {mixed_precision}; run folder {run.out}"
    )
    if on_device:
        held = run.train_loader.nbytes + run.test_data.nbytes
        acc.print(
            f"data on {acc.device}: {n_train} train and {n_test} test images held there as "
            f"uint8 ({held / 2**20:.1f} MB per process); batches and "
            f"the '{run.train_loader.policy}' augmentation are made there, no DataLoader"
        )


def _prepare(
    cfg: TrainConfig,
    accelerator: Any,
    model: nn.Module,
    optimizer: Any,
    train_set: Dataset,
    test_set: Dataset,
    steps_per_epoch: int,
) -> tuple[nn.Module, Any, Any, Any, bool]:
    """``(model, optimizer, train_loader, test_loader, on_device)`` placed by Accelerate (the
    model compiled first if ``cfg.compile``); loaders that hold the data on the device place
    themselves."""
    train_loader, test_loader, on_device = data_loaders(
        cfg, train_set, test_set, accelerator, steps_per_epoch
    )
    if cfg.compile:  # one graph per model; the checkpoint stores the plain module
        model = torch.compile(model, backend=cfg.compile)
    if on_device:  # each process cuts its own share of every global batch: nothing to prepare
        model, optimizer = accelerator.prepare(model, optimizer)
        return model, optimizer, train_loader, test_loader, True
    model, optimizer, train_loader, test_loader = accelerator.prepare(
        model, optimizer, train_loader, test_loader
    )
    return model, optimizer, train_loader, test_loader, False


def set_up(
    model: nn.Module,
    train_set: Dataset,
    test_set: Dataset,
    cfg: TrainConfig,
    out: Path,
    resume: dict[str, Any] | None = None,
) -> tuple[Run, Classification]:
    """Everything before the first step of a classification or language-model run: the
    Accelerator, the optimiser and its schedule, the state of a resumed run, the loaders, the run
    folder, the generators."""
    accelerator, mixed_precision = make_accelerator(cfg.precision, cfg.grad_accum)
    _check_batches(cfg, accelerator.num_processes, train_set, test_set)
    steps_per_epoch = len(train_set) // cfg.batch_size  # type: ignore[arg-type]  # drops a partial batch
    optimizer = build_optimizer(param_groups(model, cfg), cfg)
    warmup_steps = round(cfg.warmup_epochs * steps_per_epoch)
    scheduler = lr_schedule(optimizer, warmup_steps, steps_per_epoch * cfg.epochs, min_lr_ratio_of(cfg))
    start_epoch, history = restore_state(resume, model, optimizer, scheduler)
    if cfg.threads is not None:
        torch.set_num_threads(cfg.threads)
    model, optimizer, train_loader, test_loader, on_device = _prepare(
        cfg, accelerator, model, optimizer, train_set, test_set, steps_per_epoch
    )
    if resume is not None and resume.get("scaler") is not None and accelerator.scaler is not None:
        accelerator.scaler.load_state_dict(resume["scaler"])
    if accelerator.is_main_process:
        start_run_folder(out, _config_json(cfg, mixed_precision, accelerator.num_processes), history)
    accelerator.wait_for_everyone()
    _seed_generators(cfg, accelerator, resume, start_epoch)
    show_bar = cfg.progress if cfg.progress is not None else sys.stderr.isatty()
    run = Run(
        model, optimizer, scheduler, accelerator, train_loader, test_data=test_loader, epochs=cfg.epochs,
        steps_per_epoch=steps_per_epoch, grad_accum=cfg.grad_accum, grad_clip=cfg.grad_clip, out=out,
        start_epoch=start_epoch, history=history,
        show_bar=bool(show_bar) and accelerator.is_local_main_process,
    )  # fmt: skip
    context = int(train_set[0][0].shape[0]) if is_language_model(cfg) else None  # tokens per window
    _announce(run, cfg, mixed_precision, len(train_set), len(test_set), on_device, context)  # type: ignore[arg-type]
    objective = (NextToken if is_language_model(cfg) else Classification)(cfg, mixed_precision)
    return run, objective


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
        run, objective = set_up(model, train_set, test_set, cfg, Path(out_dir), resume)
        run_epochs(run, objective, on_epoch_end)
    finally:
        torch.set_num_threads(threads_before)  # cfg.threads applies to this run only
    return RunResult(out_dir=run.out, history=run.history, checkpoint=run.out / CHECKPOINT_NAME, config=cfg)


# --------------------------------------------------------------------------------------------
# The entry point: a fresh run, or one resumed from its checkpoint.
# --------------------------------------------------------------------------------------------


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
            stacklevel=4,
        )
    return saved.replace(**changes)


def _resumed(
    resume: bool | str | os.PathLike,
    out_dir: str | os.PathLike | None,
    cfg: TrainConfig | None,
    explicit: Sequence[str],
) -> tuple[TrainConfig, str | os.PathLike, dict[str, Any]]:
    """``(configuration, run folder, checkpoint)`` of a run to resume (see :func:`train`)."""
    if resume is True:
        if out_dir is None:
            raise ConfigError("--resume needs a run folder: pass --out DIR or --resume PATH")
        src = Path(out_dir)
    else:
        src = Path(resume)  # type: ignore[arg-type]
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
            stacklevel=3,
        )
    return cfg, out_dir, ckpt


def _check_run_folder(out: Path, resuming: bool) -> None:
    """Raise ConfigError, before any data is loaded, if ``out`` cannot be a run folder: it is a file,
    or a part of its path is a file, or it holds a run and this one is not resuming it."""
    for parent in (out, *out.parents):
        if parent.exists():
            if not parent.is_dir():
                what = "is a file" if parent == out else f"lies under {parent}, which is a file"
                raise ConfigError(f"--out {out} {what}, not a folder; choose a folder path for the run")
            break
    if not resuming and (out / CHECKPOINT_NAME).exists():
        raise ConfigError(
            f"{out} already holds a run ({CHECKPOINT_NAME}); pass --resume to continue it, "
            "or choose another --out"
        )


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
    ckpt = None
    if resume:
        cfg, out_dir, ckpt = _resumed(resume, out_dir, cfg, explicit)
    if cfg is None:
        raise ConfigError("no configuration: pass a TrainConfig or resume from a checkpoint")
    if out_dir is None:
        raise ConfigError("no run folder: pass out_dir (--out DIR)")
    check_config(cfg)
    resolve_precision(cfg.precision, distributed_state().device.type)  # e.g. fp16 on a CPU: say so now
    out = Path(out_dir)
    _check_run_folder(out, resuming=ckpt is not None)

    from accelerate.utils import set_seed

    # The run folder is made before the (possibly long) data loading, so that an unwritable --out
    # fails at once; a folder made here is removed again if the run stops before writing into it.
    made = make_folder(out) if distributed_state().is_main_process else []
    try:
        set_seed(cfg.seed)  # the same initial weights in every process
        # a resumed run takes its weights from the checkpoint, not from --pretrained
        model = build_model(cfg if ckpt is None else cfg.replace(pretrained=None))
        train_set, test_set = build_datasets(cfg)
        return fit(model, train_set, test_set, cfg, out, resume=ckpt, on_epoch_end=on_epoch_end)
    except BaseException:
        for folder in made:  # deepest first; only folders that are still empty
            try:
                folder.rmdir()
            except OSError:
                break
        raise
