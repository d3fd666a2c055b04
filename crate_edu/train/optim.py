"""The optimisers of the official recipes and the learning-rate schedule, updated every step.

Weight decay is decoupled (AdamW, Lion: ``θ ← θ − lr_t · wd · θ`` besides the gradient step), on
every parameter as in the official CRATE scripts, or only on the weight matrices of Linear and Conv
layers (``decay_mask='kernels'``), as big_vision's default mask ``.*/kernel$`` does in the official
CRATE-α recipes (optim/build_optax.py): the ISTA dictionaries D and D1, the class token, the
position embeddings, LayerNorms and biases are then not decayed.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn
from torch.optim.lr_scheduler import LambdaLR

from crate_edu.errors import ConfigError
from crate_edu.train.config import TrainConfig

__all__ = [
    "build_optimizer",
    "decayed_parameters",
    "kernel_decay_groups",
    "lr_schedule",
    "matrix_decay_groups",
    "param_groups",
    "warmup_cosine",
]


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


def decayed_parameters(model: nn.Module) -> set[str]:
    """Names of the parameters that the ``kernels`` mask decays: the ``weight`` of every Linear and
    Conv layer (big_vision's Dense and Conv ``kernel``), and the raw matrices a module lists in its
    ``kernel_parameters`` (weights the official code keeps as Dense kernels but the PyTorch port
    stores as plain parameters, e.g. CRATE-α-CLIPA's ``in_proj_weight`` and projections); nothing
    else."""
    kernels = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)
    names = set()
    for prefix, module in model.named_modules():
        own = (
            ["weight"] if isinstance(module, kernels) and getattr(module, "weight", None) is not None else []
        )
        for name in own + list(getattr(module, "kernel_parameters", ())):
            names.add(f"{prefix}.{name}" if prefix else name)
    return names


def kernel_decay_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Two optimiser groups: the trainable parameters of :func:`decayed_parameters` with
    ``weight_decay``, every other trainable parameter without."""
    decayed = decayed_parameters(model)
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    return [
        {"params": [p for n, p in named if n in decayed], "weight_decay": weight_decay},
        {"params": [p for n, p in named if n not in decayed], "weight_decay": 0.0},
    ]


def param_groups(model: nn.Module, cfg: TrainConfig) -> Any:
    """What :func:`build_optimizer` optimises: every parameter with ``cfg.weight_decay``
    (``decay_mask='all'``), :func:`kernel_decay_groups` (``'kernels'``) or
    :func:`matrix_decay_groups` (``'matrices'``)."""
    if cfg.decay_mask == "all":
        return model.parameters()
    if cfg.decay_mask == "matrices":
        return matrix_decay_groups(model, cfg.weight_decay)
    return kernel_decay_groups(model, cfg.weight_decay)


def matrix_decay_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Two optimiser groups: every trainable parameter with two or more dimensions (weight matrices,
    embeddings, dictionaries) with ``weight_decay``, the rest (biases, LayerNorms) without: the
    grouping of nanoGPT's and the official CRATE-LM's ``configure_optimizers``. Parameters a module
    names in its ``no_weight_decay()`` (TSSA's temperatures, as the official ToST code) are not
    decayed either."""
    exempt = {
        f"{prefix}.{name}" if prefix else name
        for prefix, module in model.named_modules()
        if callable(getattr(module, "no_weight_decay", None))
        for name in module.no_weight_decay()
    }
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    decayed = [p for n, p in named if p.dim() >= 2 and n not in exempt]
    return [
        {"params": decayed, "weight_decay": weight_decay},
        {"params": [p for n, p in named if p.dim() < 2 or n in exempt], "weight_decay": 0.0},
    ]


def build_optimizer(params: Any, cfg: TrainConfig) -> torch.optim.Optimizer:
    """The optimiser ``cfg.optimizer`` over ``params`` (parameters or :func:`param_groups`), at the
    peak learning rate ``cfg.lr``; Adam's epsilon is torch's default 1e-8 (optax's too)."""
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
