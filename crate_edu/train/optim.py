"""The optimisers of the official recipes and the learning-rate schedule, updated every step."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch.optim.lr_scheduler import LambdaLR

from crate_edu.errors import ConfigError
from crate_edu.train.config import TrainConfig

__all__ = ["build_optimizer", "lr_schedule", "warmup_cosine"]


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


def lr_schedule(
    optimizer: torch.optim.Optimizer, warmup_steps: int, total_steps: int, min_ratio: float = 0.0
) -> LambdaLR:
    """The scheduler that sets every step's learning rate to ``lr * warmup_cosine(step, ...)``."""
    return LambdaLR(optimizer, lambda step: warmup_cosine(step, warmup_steps, total_steps, min_ratio))


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
