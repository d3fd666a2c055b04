"""Masked-autoencoder pre-training of a CRATE-MAE, on one device, through the one training loop.

The MAE objective (:class:`MaskedPatches`: the masked-patch loss, scored on fixed test masks)
plugs into :func:`crate_edu.train.loop.run_epochs`, the loop that trains the classifiers; only the
set-up differs: one device in float32 (:class:`~crate_edu.train.loop.OneDevice` in place of
Accelerate), no labels, and an :class:`MAETrainConfig`::

    from crate_edu.train import MAETrainConfig, pretrain_mae
    run = pretrain_mae(MAETrainConfig(epochs=3), "runs/crate-mae")
    run.model, run.history        # the trained CRATEMAE, one dict per epoch

Per epoch it atomically rewrites ``metrics.jsonl`` (one line per epoch: train loss, masked-patch
test loss with fixed masks, learning rate, time) and ``checkpoint.pt`` (model, optimiser, step,
history, configuration) with :func:`crate_edu.train.checkpoint.save_checkpoint`. The shuffling
and the masks of epoch ``e`` come from one generator seeded by ``(seed, e)``, so ``resume=True``
continues an interrupted run exactly as if it had not stopped. A NaN or infinite loss stops the
run (``TrainingDivergedError``) before that epoch is saved.

Optimiser: AdamW with betas (0.9, 0.95) (the MAE recipe), no weight decay on biases and norms,
linear warm-up then cosine decay (:func:`crate_edu.train.optim.warmup_cosine`), per step.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from crate_edu.data.loader import epoch_generator
from crate_edu.errors import TrainingDivergedError
from crate_edu.evaluation.batches import iter_batches
from crate_edu.evaluation.reconstruction import evaluate_reconstruction
from crate_edu.train.checkpoint import CHECKPOINT_NAME, load_checkpoint
from crate_edu.train.loop import OneDevice, restore_state, run_epochs, start_run_folder
from crate_edu.train.objectives import EpochStats, Run
from crate_edu.train.optim import lr_schedule

__all__ = [
    "MAERunResult",
    "MAETrainConfig",
    "MaskedImageBatches",
    "MaskedPatches",
    "build_mae_model",
    "load_mae_run",
    "pretrain_mae",
]


@dataclass
class MAETrainConfig:
    """Settings of a CRATE-MAE pre-training run (defaults: the shipped cluttered-digits checkpoint).

    Attributes:
        model: registry name of a CRATE-MAE preset; ``model_overrides`` are passed to ``create_model``.
        dataset: a :func:`crate_edu.data.build_dataset` name; ``dataset_options`` go with it.
        train_limit / test_limit: use only the first items of a split (None: all).
        epochs, batch_size: the budget; steps = epochs · ceil(train items / batch_size).
        lr, weight_decay, betas: AdamW; ``warmup_steps`` of linear warm-up, then cosine to
            ``min_lr_ratio · lr``.
        mask_ratio: fraction of patches removed during training (0.75 as in MAE and CRATE-MAE).
        grad_clip: max gradient norm (None: no clipping).
        seed: initialisation, shuffling and masks.
        threads: ``torch.set_num_threads`` during the run (None: leave as is).
        eval_seed: the seed of the fixed evaluation masks
            (:func:`crate_edu.evaluation.reconstruction.evaluate_reconstruction`).
        device: where the run trains (``'cpu'``, ``'cuda'``, ...).
    """

    model: str = "crate_mae_nano_cifar"
    model_overrides: dict[str, Any] = field(default_factory=lambda: {"depth": 4, "decoder_depth": 4})
    dataset: str = "cluttered-digits"
    dataset_options: dict[str, Any] = field(default_factory=dict)
    train_limit: int | None = None
    test_limit: int | None = None
    epochs: int = 3
    batch_size: int = 64
    lr: float = 1.5e-3
    weight_decay: float = 0.05
    betas: tuple[float, float] = (0.9, 0.95)
    warmup_steps: int = 200
    min_lr_ratio: float = 0.0
    mask_ratio: float = 0.75
    grad_clip: float | None = 1.0
    seed: int = 0
    threads: int | None = 1
    eval_seed: int = 0
    device: str = "cpu"

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.batch_size < 1:
            raise ValueError(f"epochs and batch_size must be >= 1, got {self.epochs} and {self.batch_size}")
        if not 0.0 < self.mask_ratio < 1.0:
            raise ValueError(f"mask_ratio must be in (0, 1) for pre-training, got {self.mask_ratio}")
        if self.lr <= 0:
            raise ValueError(f"lr must be positive, got {self.lr}")
        if self.warmup_steps < 0:
            raise ValueError(f"warmup_steps must be >= 0, got {self.warmup_steps}")
        self.betas = tuple(self.betas)

    def to_dict(self) -> dict[str, Any]:
        """The configuration as plain JSON values (what the checkpoint and ``config.json`` store)."""
        return json.loads(json.dumps(asdict(self)))


@dataclass
class MAERunResult:
    """What :func:`pretrain_mae` returns: the trained model, one metrics dict per epoch, the time."""

    model: nn.Module
    history: list[dict[str, Any]]
    train_time_s: float
    config: MAETrainConfig

    @property
    def final(self) -> dict[str, Any]:
        return self.history[-1]


# --------------------------------------------------------------------------------------------
# The objective and its batches.
# --------------------------------------------------------------------------------------------


class MaskedImageBatches:
    """The training batches of one MAE epoch: ``(images, noise)`` on ``device``.

    The first ``n`` items of a permutation of ``data`` in the order of ``(seed, epoch)``, cut into
    batches of ``batch_size`` (the last may be smaller); each batch comes with uniform noise
    ``(B, num_patches)`` that fixes its masks (the patches with the smallest noise stay visible).
    Order and noise come from one generator seeded by ``(seed, epoch)``
    (:func:`crate_edu.data.loader.epoch_generator`), so a resumed run draws what an uninterrupted
    one drew.

    Args:
        data: normalised images ``(N, C, H, W)``, or a dataset of ``(image, label)``.
        n: items per epoch.
        batch_size, num_patches, seed, device: as their names say.
    """

    def __init__(
        self, data: Any, n: int, batch_size: int, num_patches: int, seed: int, device: torch.device
    ) -> None:
        self.data, self.n, self.batch_size = data, n, batch_size
        self.num_patches, self.seed, self.device = num_patches, seed, device
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return -(-self.n // self.batch_size)

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        g = epoch_generator(self.seed, self.epoch)
        order = torch.randperm(len(self.data), generator=g)[: self.n]  # (n,)
        for x in iter_batches(self.data, self.batch_size, order=order):  # (B, C, H, W)
            noise = torch.rand(x.shape[0], self.num_patches, generator=g)  # (B, L): the batch's masks
            yield x.to(self.device), noise.to(self.device)


class MaskedPatches:
    """The CRATE-MAE objective: the masked-patch loss; scored by the same loss on the test split
    with masks fixed by ``cfg.eval_seed``. Its history lines hold ``epoch``, ``step``,
    ``train_loss``, ``test_loss``, ``lr`` (after the epoch's last step), ``time_s`` and
    ``cpu_time_s`` (wall-clock and CPU time of the training steps so far)."""

    def __init__(self, cfg: MAETrainConfig) -> None:
        self.cfg = cfg

    def loss(self, model: nn.Module, batch: Any) -> tuple[Tensor, None]:
        x, noise = batch  # (B, C, H, W) images, (B, L) noise that fixes the masks
        loss, _, _ = model(x, mask_ratio=self.cfg.mask_ratio, noise=noise)  # MSE on the removed patches
        return loss, None

    def evaluate(self, run: Run, epoch: int) -> dict[str, float]:
        cfg = self.cfg
        test_loss = evaluate_reconstruction(
            run.model,
            run.test_data,
            mask_ratio=cfg.mask_ratio,
            seed=cfg.eval_seed,
            limit=cfg.test_limit,
            device=run.accelerator.device,
        )
        return {"test_loss": test_loss}

    def record(self, run: Run, epoch: int, stats: EpochStats, test: dict[str, float]) -> dict[str, Any]:
        before = run.history[-1] if run.history else {}
        return {
            "epoch": epoch + 1,
            "step": run.step,
            "train_loss": stats.loss,
            **test,
            "lr": run.optimizer.param_groups[0]["lr"],
            "time_s": before.get("time_s", 0.0) + stats.seconds,
            "cpu_time_s": before.get("cpu_time_s", 0.0) + stats.cpu_seconds,
        }

    def checkpoint_extras(self, run: Run) -> dict[str, Any]:
        return {
            "train_time_s": run.history[-1]["time_s"],
            "config": self.cfg.to_dict(),
            "model_name": self.cfg.model,
            "model_overrides": dict(self.cfg.model_overrides),
        }

    def diverged(self, run: Run, value: float, epoch: int, micro_step: int) -> TrainingDivergedError:
        step = epoch * run.steps_per_epoch + micro_step + 1
        return TrainingDivergedError(
            f"training diverged: the masked-patch loss became {value} at epoch {epoch + 1}, step "
            f"{step} of {run.total_steps}; the run stopped and the last checkpoint (if any) holds "
            f"epoch {epoch}; start again with a lower lr (now {self.cfg.lr:g}) or a grad_clip"
        )

    def describe(self, record: dict[str, Any], epochs: int) -> str:
        r = record
        return (
            f"epoch {r['epoch']}/{epochs}  step {r['step']}  train loss {r['train_loss']:.4f}  "
            f"test masked-patch loss {r['test_loss']:.4f}  ({r['time_s']:.0f} s)"
        )


# --------------------------------------------------------------------------------------------
# Set-up and the entry point.
# --------------------------------------------------------------------------------------------


def build_mae_model(cfg: MAETrainConfig) -> nn.Module:
    """The model of ``cfg``, initialised from ``cfg.seed``."""
    from crate_edu.models import create_model

    torch.manual_seed(cfg.seed)
    model = create_model(cfg.model, **cfg.model_overrides)
    if not hasattr(model, "forward_loss"):
        raise ValueError(f"{cfg.model!r} is not a masked autoencoder; choose a crate_mae_* preset")
    return model


def _datasets(cfg: MAETrainConfig) -> tuple[Any, Any]:
    from crate_edu.data import build_dataset

    train = build_dataset(cfg.dataset, "train", augment="none", **cfg.dataset_options)
    test = build_dataset(cfg.dataset, "test", augment="none", **cfg.dataset_options)
    return train, test


def _optimizer(model: nn.Module, cfg: MAETrainConfig) -> torch.optim.AdamW:
    """AdamW with weight decay on the matrices only (not on biases, norms and 1-D parameters)."""
    decay = [p for p in model.parameters() if p.requires_grad and p.ndim >= 2]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.ndim < 2]
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=cfg.betas)


def _saved_state(folder: Path, cfg: MAETrainConfig, resume: bool) -> dict[str, Any] | None:
    """The checkpoint to continue (None: start afresh); it must come from the same settings."""
    path = folder / CHECKPOINT_NAME
    if not (resume and path.is_file()):
        return None
    state = load_checkpoint(path)
    if state["config"] != cfg.to_dict():
        raise ValueError(
            f"{path} was written by a run with other settings; resume with the same "
            "MAETrainConfig or pick a new out_dir"
        )
    return state


def _set_up(
    cfg: MAETrainConfig,
    out_dir: str | Path | None,
    resume: bool,
    datasets: tuple[Any, Any] | None,
    log: Callable[[str], None] | None,
) -> tuple[Run, MaskedPatches]:
    """Data, model, optimiser and schedule, the state of a resumed run, the run folder."""
    device = torch.device(cfg.device)
    train, test = datasets if datasets is not None else _datasets(cfg)
    n_train = len(train) if cfg.train_limit is None else min(cfg.train_limit, len(train))
    if n_train == 0:
        raise ValueError("the training set is empty")
    steps_per_epoch = -(-n_train // cfg.batch_size)  # the last batch may be smaller
    model = build_mae_model(cfg).to(device)
    optimizer = _optimizer(model, cfg)
    scheduler = lr_schedule(optimizer, cfg.warmup_steps, cfg.epochs * steps_per_epoch, cfg.min_lr_ratio)
    folder = Path(out_dir) if out_dir is not None else None
    start_epoch, history = 0, []
    if folder is not None:
        start_epoch, history = restore_state(_saved_state(folder, cfg, resume), model, optimizer, scheduler)
        start_run_folder(folder, json.dumps(cfg.to_dict(), indent=2) + "\n", history)
    batches = MaskedImageBatches(train, n_train, cfg.batch_size, model.config.num_patches, cfg.seed, device)
    run = Run(
        model, optimizer, scheduler, OneDevice(device, log), batches, test_data=test, epochs=cfg.epochs,
        steps_per_epoch=steps_per_epoch, grad_clip=cfg.grad_clip, out=folder, start_epoch=start_epoch,
        history=history,
    )  # fmt: skip
    return run, MaskedPatches(cfg)


def pretrain_mae(
    cfg: MAETrainConfig,
    out_dir: str | Path | None = None,
    *,
    resume: bool = False,
    datasets: tuple[Any, Any] | None = None,
    log: Callable[[str], None] | None = print,
) -> MAERunResult:
    """Pre-train a CRATE-MAE with the masked-patch loss.

    Args:
        cfg: the run settings.
        out_dir: run folder for ``checkpoint.pt``, ``metrics.jsonl`` and ``config.json`` (None: keep
            nothing on disk).
        resume: continue from ``out_dir/checkpoint.pt`` if it exists (its configuration must match).
        datasets: ``(train, test)`` to use instead of building ``cfg.dataset`` (tests, notebooks);
            a tensor of normalised images works as well as a dataset.
        log: called with one line per epoch (None: silent).

    Returns:
        :class:`MAERunResult`; ``history[e]`` has ``epoch``, ``step``, ``train_loss`` (mean over the
        epoch's batches), ``test_loss`` (masked-patch MSE, fixed masks), ``lr``, ``time_s`` (wall
        clock of the training steps so far) and ``cpu_time_s`` (their process CPU time).
    """
    threads_before = torch.get_num_threads()
    if cfg.threads is not None:
        torch.set_num_threads(cfg.threads)
    try:
        run, objective = _set_up(cfg, out_dir, resume, datasets, log)
        run_epochs(run, objective)
    finally:
        torch.set_num_threads(threads_before)
    train_time = run.history[-1]["time_s"] if run.history else 0.0
    return MAERunResult(model=run.model.eval(), history=run.history, train_time_s=train_time, config=cfg)


def load_mae_run(path: str | Path) -> tuple[nn.Module, dict[str, Any]]:
    """The model and checkpoint dict of a run folder (or its ``checkpoint.pt``) from :func:`pretrain_mae`."""
    state = load_checkpoint(path)
    if "model_name" not in state or "history" not in state:
        raise ValueError(f"{path} is not a CRATE-MAE pre-training checkpoint (written by pretrain_mae)")
    cfg = MAETrainConfig(**{**state["config"], "betas": tuple(state["config"]["betas"])})
    model = build_mae_model(cfg)
    model.load_state_dict(state["model"])
    return model.eval(), state
