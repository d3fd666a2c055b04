"""Masked-autoencoder pre-training of a CRATE-MAE, on one device.

A plain loop (the classification loop in :mod:`crate_edu.train.loop` runs on Accelerate; the MAE
objective needs no labels, no evaluation accuracy and no mixed-precision bookkeeping for the small
models taught here, so one readable loop serves better)::

    from crate_edu.train.mae import MAETrainConfig, pretrain_mae
    run = pretrain_mae(MAETrainConfig(epochs=3), "runs/crate-mae")
    run.model, run.history        # the trained CRATEMAE, one dict per epoch

Per epoch it atomically rewrites ``metrics.jsonl`` (one line per epoch: train loss, masked-patch
test loss with fixed masks, learning rate, time) and ``checkpoint.pt`` (model, optimiser, step,
history, configuration) with :func:`crate_edu.train.checkpoint.save_checkpoint`. The shuffling
and the masks of epoch ``e`` come from generators seeded by ``(seed, e)``, so ``resume=True``
continues an interrupted run exactly as if it had not stopped. A NaN or infinite loss stops the
run (``TrainingDivergedError``) before that epoch is saved.

Optimiser: AdamW with betas (0.9, 0.95) (the MAE recipe), linear warm-up then cosine decay
(:func:`crate_edu.train.loop.warmup_cosine`), per-step.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from crate_edu.evaluation.batches import iter_batches
from crate_edu.evaluation.reconstruction import evaluate_reconstruction
from crate_edu.train.checkpoint import (
    CHECKPOINT_NAME,
    CONFIG_NAME,
    METRICS_NAME,
    atomic_write_bytes,
    load_checkpoint,
    make_folder,
    save_checkpoint,
    write_jsonl,
)
from crate_edu.train.loop import TrainingDivergedError, warmup_cosine

__all__ = ["MAETrainConfig", "MAERunResult", "pretrain_mae", "build_mae_model", "load_mae_run"]


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
        eval_seed: the seed of the fixed evaluation masks (:func:`crate_edu.evaluation.reconstruction.evaluate_reconstruction`).
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


def build_mae_model(cfg: MAETrainConfig) -> nn.Module:
    """The model of ``cfg``, initialised from ``cfg.seed``."""
    from crate_edu.models import create_model

    torch.manual_seed(cfg.seed)
    model = create_model(cfg.model, **cfg.model_overrides)
    if not hasattr(model, "forward_loss"):
        raise ValueError(f"{cfg.model!r} is not a masked autoencoder; choose a crate_mae_* preset")
    return model


def _datasets(cfg: MAETrainConfig):
    from crate_edu.data import build_dataset

    train = build_dataset(cfg.dataset, "train", augment="none", **cfg.dataset_options)
    test = build_dataset(cfg.dataset, "test", augment="none", **cfg.dataset_options)
    return train, test


def _epoch_generator(seed: int, epoch: int) -> torch.Generator:
    return torch.Generator().manual_seed((seed * 1_000_003 + epoch) % 2**63)


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
        return _pretrain(cfg, out_dir, resume, datasets, log)
    finally:
        torch.set_num_threads(threads_before)


def _pretrain(cfg, out_dir, resume, datasets, log) -> MAERunResult:
    device = torch.device(cfg.device)
    train, test = datasets if datasets is not None else _datasets(cfg)
    n_train = len(train) if cfg.train_limit is None else min(cfg.train_limit, len(train))
    if n_train == 0:
        raise ValueError("the training set is empty")
    steps_per_epoch = -(-n_train // cfg.batch_size)
    total_steps = cfg.epochs * steps_per_epoch

    model = build_mae_model(cfg).to(device)
    decay = [p for n, p in model.named_parameters() if p.requires_grad and p.ndim >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.requires_grad and p.ndim < 2]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=cfg.lr,
        betas=cfg.betas,
    )
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: warmup_cosine(s, cfg.warmup_steps, total_steps, cfg.min_lr_ratio)
    )

    history: list[dict[str, Any]] = []
    start_epoch, elapsed, cpu = 0, 0.0, 0.0
    folder = Path(out_dir) if out_dir is not None else None
    if folder is not None:
        make_folder(folder)
        ckpt_path = folder / CHECKPOINT_NAME
        if resume and ckpt_path.is_file():
            state = load_checkpoint(ckpt_path)
            if state["config"] != _config_record(cfg):
                raise ValueError(
                    f"{ckpt_path} was written by a run with other settings; resume with the same "
                    "MAETrainConfig or pick a new out_dir"
                )
            model.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
            scheduler.load_state_dict(state["scheduler"])
            history = list(state["history"])
            start_epoch, elapsed = int(state["epoch"]), float(state["train_time_s"])
            cpu = float(history[-1].get("cpu_time_s", 0.0)) if history else 0.0
            write_jsonl(folder / METRICS_NAME, history)  # drop lines of an epoch that did not finish
        else:
            write_jsonl(folder / METRICS_NAME, [])
        text = (json.dumps(_config_record(cfg), indent=2) + "\n").encode("utf-8")
        atomic_write_bytes(folder / CONFIG_NAME, lambda f: f.write(text))

    L = model.config.num_patches
    step = start_epoch * steps_per_epoch
    for epoch in range(start_epoch, cfg.epochs):
        model.train()
        g = _epoch_generator(cfg.seed, epoch)
        order = torch.randperm(len(train), generator=g)[:n_train]
        t0, c0 = time.perf_counter(), time.process_time()
        loss_sum, batches = 0.0, 0
        batch_iter = (
            iter_batches(train, cfg.batch_size, order=order)
            if not isinstance(train, torch.Tensor)
            else (train[order[i : i + cfg.batch_size]] for i in range(0, n_train, cfg.batch_size))
        )
        for x in batch_iter:
            x = x.to(device)
            noise = torch.rand(x.shape[0], L, generator=g).to(device)
            loss, _, _ = model(x, mask_ratio=cfg.mask_ratio, noise=noise)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.grad_clip is not None:
                nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            value = loss.item()
            if not math.isfinite(value):  # the weights would be NaN from here on: stop, save nothing
                raise TrainingDivergedError(
                    f"training diverged: the masked-patch loss became {value} at epoch {epoch + 1}, step "
                    f"{step + 1} of {total_steps}; the run stopped and the last checkpoint (if any) holds "
                    f"epoch {epoch}; start again with a lower lr (now {cfg.lr:g}) or a grad_clip"
                )
            optimizer.step()
            scheduler.step()
            loss_sum += value
            batches += 1
            step += 1
        elapsed += time.perf_counter() - t0
        cpu += time.process_time() - c0
        test_loss = evaluate_reconstruction(
            model, test, mask_ratio=cfg.mask_ratio, seed=cfg.eval_seed, limit=cfg.test_limit, device=device
        )
        record = {
            "epoch": epoch + 1,
            "step": step,
            "train_loss": loss_sum / max(1, batches),
            "test_loss": test_loss,
            "lr": optimizer.param_groups[0]["lr"],
            "time_s": elapsed,
            "cpu_time_s": cpu,
        }
        history.append(record)
        if folder is not None:
            save_checkpoint(
                {
                    "model": model.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(),
                    "epoch": epoch + 1,
                    "step": step,
                    "history": history,
                    "train_time_s": elapsed,
                    "config": _config_record(cfg),
                    "model_name": cfg.model,
                    "model_overrides": dict(cfg.model_overrides),
                },
                folder / CHECKPOINT_NAME,
            )
            write_jsonl(folder / METRICS_NAME, history)  # atomic, after the checkpoint: never a torn line
        if log is not None:
            log(
                f"epoch {epoch + 1}/{cfg.epochs}  step {step}  train loss {record['train_loss']:.4f}  "
                f"test masked-patch loss {test_loss:.4f}  ({elapsed:.0f} s)"
            )
    model.eval()
    return MAERunResult(model=model, history=history, train_time_s=elapsed, config=cfg)


def _config_record(cfg: MAETrainConfig) -> dict[str, Any]:
    """The configuration as plain JSON values (what the checkpoint and config.json store)."""
    return json.loads(json.dumps(asdict(cfg)))


def load_mae_run(path: str | Path) -> tuple[nn.Module, dict[str, Any]]:
    """The model and checkpoint dict of a run folder (or its ``checkpoint.pt``) from :func:`pretrain_mae`."""
    state = load_checkpoint(path)
    if "model_name" not in state or "history" not in state:
        raise ValueError(f"{path} is not a CRATE-MAE pre-training checkpoint (written by pretrain_mae)")
    cfg = MAETrainConfig(**{**state["config"], "betas": tuple(state["config"]["betas"])})
    model = build_mae_model(cfg)
    model.load_state_dict(state["model"])
    return model.eval(), state
