"""What a training run minimises and how it is scored: the objectives that plug into the loop.

The loop (:func:`crate_edu.train.loop.run_epochs`) is the same for every objective: each batch goes
forward and backward, through gradient clipping, the optimiser and the schedule; after each epoch
the model is evaluated, one line of metrics is recorded and a checkpoint is written. An
:class:`Objective` says only what differs:

=====================  ====================================  ====================================
method                 :class:`Classification`               ``crate_edu.train.mae.MaskedPatches``
=====================  ====================================  ====================================
``loss``               cross-entropy with label smoothing,   masked-patch MSE (the batch's masks)
                       mixup / CutMix (``mixing.py``)
``evaluate``           test loss and accuracy                masked-patch loss, fixed test masks
``record``             the metrics.jsonl line, accuracies    the metrics.jsonl line, training time
``checkpoint_extras``  config, gradient scaler, generators   config, model name, training time
``diverged``           the one-line error naming the fixes   the same, for the MAE settings
``describe``           the epoch's line on stdout            the epoch's line for ``log``
=====================  ====================================  ====================================

Both work on a :class:`Run`: the model, optimiser, schedule, loaders and where the run stands.

:func:`contrastive_loss` is the loss of CLIP-style image–text training (CRATE-α-CLIPA): the
symmetric InfoNCE, a function for now, not yet an :class:`Objective`.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from crate_edu.device import PRECISIONS, sum_dtype
from crate_edu.errors import ConfigError, TrainingDivergedError
from crate_edu.models.crate_alpha_clipa import normalize
from crate_edu.train.build import default_workers, make_accelerator
from crate_edu.train.checkpoint import CHECKPOINT_NAME, rng_state
from crate_edu.train.config import TrainConfig, choice_error
from crate_edu.train.mixing import draw_mix, mix_images, mixed_cross_entropy

__all__ = [
    "Classification",
    "EpochStats",
    "Objective",
    "Run",
    "contrastive_loss",
    "evaluate",
    "evaluate_classifier",
]


@dataclass
class Run:
    """Everything the loop touches: made by a set-up function, advanced epoch by epoch.

    Attributes:
        model, optimizer, scheduler: what is trained and how (the scheduler steps with the optimiser).
        accelerator: Accelerate's ``Accelerator``, or :class:`crate_edu.train.loop.OneDevice` for
            a plain run on one device.
        train_loader: the batches of one epoch; ``set_epoch(e)`` selects epoch ``e``'s order.
        test_data: what the objective evaluates on (a prepared loader, a dataset, a tensor).
        epochs: the run's length; ``steps_per_epoch`` optimiser steps each, of ``grad_accum``
            micro-batches.
        grad_clip: maximum global gradient norm (None: no clipping).
        out: the run folder (None: nothing is written).
        start_epoch, history: the epochs already done (0 and ``[]`` for a fresh run).
        show_bar: draw a progress bar over each epoch.
        step: optimiser steps taken so far; ``lr``: the learning rate of the latest one.
    """

    model: nn.Module
    optimizer: Any
    scheduler: Any
    accelerator: Any
    train_loader: Any
    test_data: Any
    epochs: int
    steps_per_epoch: int
    grad_accum: int = 1
    grad_clip: float | None = None
    out: Path | None = None
    start_epoch: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)
    show_bar: bool = False
    step: int = field(init=False)
    lr: float = field(init=False)

    def __post_init__(self) -> None:
        self.step = self.start_epoch * self.steps_per_epoch
        self.lr = self.optimizer.param_groups[0]["lr"]

    @property
    def micro_steps(self) -> int:
        """Forward passes per epoch."""
        return self.steps_per_epoch * self.grad_accum

    @property
    def total_steps(self) -> int:
        """Optimiser steps of the whole run."""
        return self.steps_per_epoch * self.epochs


@dataclass
class EpochStats:
    """What one epoch of training measured, over all processes.

    Attributes:
        loss: the mean training loss over the epoch's micro-batches.
        acc: the fraction of correct training predictions (None: the objective has no accuracy).
        started: ``time.perf_counter()`` when the epoch began.
        seconds, cpu_seconds: wall-clock and process CPU time of the epoch's training steps.
    """

    loss: float
    acc: float | None
    started: float
    seconds: float
    cpu_seconds: float


class Objective(Protocol):
    """What a run minimises and how it is scored; the loop does the rest (see the module's table)."""

    def loss(self, model: nn.Module, batch: Any) -> tuple[Tensor, Tensor | None]:
        """The scalar loss of one batch, and a bool ``(B,)`` tensor of correct predictions (or None)."""
        ...

    def evaluate(self, run: Run, epoch: int) -> dict[str, float]:
        """The test metrics after epoch ``epoch`` (0-based), e.g. ``{"test_loss": ...}``."""
        ...

    def record(self, run: Run, epoch: int, stats: EpochStats, test: dict[str, float]) -> dict[str, Any]:
        """The epoch's line of ``metrics.jsonl`` (and of the run's history)."""
        ...

    def checkpoint_extras(self, run: Run) -> dict[str, Any]:
        """What the checkpoint holds besides model, optimiser, schedule, epoch, step and history."""
        ...

    def diverged(self, run: Run, value: float, epoch: int, micro_step: int) -> TrainingDivergedError:
        """The error for a non-finite training loss at ``micro_step`` (0-based) of ``epoch``."""
        ...

    def describe(self, record: dict[str, Any], epochs: int) -> str:
        """The one line printed after each epoch."""
        ...


# --------------------------------------------------------------------------------------------
# Classification.
# --------------------------------------------------------------------------------------------


class Classification:
    """Image classification: cross-entropy with label smoothing (torch's or big_vision's form) on
    batches mixed by mixup / CutMix when the run asks for it (:mod:`crate_edu.train.mixing`),
    scored by test loss and accuracy. With mixing, the training accuracy counts the label with the
    larger weight.

    Args:
        cfg: the run configuration (label smoothing; the settings a divergence message names).
        mixed_precision: the precision the run resolved to (stored in the checkpoint).
    """

    def __init__(self, cfg: TrainConfig, mixed_precision: str) -> None:
        self.cfg = cfg
        self.mixed_precision = mixed_precision

    def loss(self, model: nn.Module, batch: Any) -> tuple[Tensor, Tensor]:
        cfg = self.cfg
        x, y = batch  # (b, 3, S, S) images, (b,) labels: this process's share of the batch
        mix = draw_mix(x.shape[-2], x.shape[-1], cfg.mixup_alpha, cfg.cutmix_alpha, cfg.mix_switch_prob)
        if mix is None and cfg.smoothing_style == "torch":
            logits = model(x).float()  # (b, num_classes)
            loss = F.cross_entropy(logits, y, label_smoothing=cfg.label_smoothing)
            return loss, logits.detach().argmax(dim=-1) == y  # (), (b,)
        lam = 1.0 if mix is None else mix.lam
        logits = model(mix_images(x, mix)).float()  # (b, num_classes)
        loss = mixed_cross_entropy(logits, y, lam, cfg.label_smoothing, cfg.smoothing_style)
        main = y if lam >= 0.5 else y.flip(0)  # accuracy against the label with the larger weight
        return loss, logits.detach().argmax(dim=-1) == main  # (), (b,)

    def evaluate(self, run: Run, epoch: int) -> dict[str, float]:
        ev = evaluate_classifier(run.model, run.test_data, run.accelerator)
        if not math.isfinite(ev["loss"]):
            raise self._diverged(run, "test loss", ev["loss"], epoch, "in the evaluation after its last step")
        return {"test_loss": ev["loss"], "test_acc": ev["acc"]}

    def record(self, run: Run, epoch: int, stats: EpochStats, test: dict[str, float]) -> dict[str, Any]:
        return {
            "epoch": epoch + 1,
            "step": run.step,
            "train_loss": stats.loss,
            "train_acc": stats.acc,
            **test,
            "lr": run.lr,
            "seconds": round(time.perf_counter() - stats.started, 3),  # training and evaluation
        }

    def checkpoint_extras(self, run: Run) -> dict[str, Any]:
        acc = run.accelerator
        return {
            "config": self.cfg.to_dict(),
            "scaler": acc.scaler.state_dict() if acc.scaler is not None else None,
            "rng": _gather_rng(acc),  # every process's generators: a resume continues each of them
            "mixed_precision": self.mixed_precision,
            "num_processes": acc.num_processes,
        }

    def diverged(self, run: Run, value: float, epoch: int, micro_step: int) -> TrainingDivergedError:
        step = epoch * run.steps_per_epoch + micro_step // run.grad_accum + 1
        where = f"micro-step {micro_step + 1} of {run.micro_steps}"
        where += f" (optimizer step {step} of {run.total_steps})"
        return self._diverged(run, "training loss", value, epoch, where)

    def describe(self, record: dict[str, Any], epochs: int) -> str:
        r = record
        return (
            f"epoch {r['epoch']}/{epochs}  train_loss {r['train_loss']:.4f}  train_acc {r['train_acc']:.4f}  "
            f"test_loss {r['test_loss']:.4f}  test_acc {r['test_acc']:.4f}  lr {r['lr']:.2e}  "
            f"{r['seconds']:.1f} s"
        )

    def _diverged(self, run: Run, what: str, value: float, epoch: int, where: str) -> TrainingDivergedError:
        """One line: what became non-finite where, which checkpoint is good, what to change."""
        cfg = self.cfg
        last = (
            f"{run.out / CHECKPOINT_NAME} still holds epoch {epoch}, the last good one"
            if epoch > 0
            else "no checkpoint was written"
        )
        fixes = [f"a lower --lr (this run: {run.lr:.3g} at that step, peak {cfg.lr:g})"]
        if cfg.grad_clip is None:
            fixes.append("--grad-clip 1.0")
        if cfg.warmup_epochs < 1:
            fixes.append("--warmup-epochs 1")
        if self.mixed_precision == "fp16":
            fixes.append("--precision bf16 or no (fp16 overflows more easily)")
        return TrainingDivergedError(
            f"training diverged: the {what} became {value} at epoch {epoch + 1}, {where}; the run stopped "
            f"and {last}; start a new run (another --out) with {', '.join(fixes[:-1])}"
            + (f" or {fixes[-1]}" if len(fixes) > 1 else fixes[0])
        )


def _gather_rng(accelerator: Any) -> list[dict[str, Any]]:
    """The generator states of every process, in rank order (on XLA only this process's)."""
    from accelerate.utils import DistributedType, gather_object

    mine = rng_state()
    if accelerator.num_processes == 1 or accelerator.distributed_type == DistributedType.XLA:
        return [mine]
    return list(gather_object([mine]))


@torch.no_grad()
def evaluate_classifier(model: nn.Module, loader: Any, accelerator: Any) -> dict[str, float]:
    """Plain cross-entropy and accuracy over every image of a prepared ``loader``, all processes
    together: ``{"loss", "acc", "n"}``."""
    model.eval()
    acc_dtype = sum_dtype(accelerator.device)
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
    accelerator, _ = make_accelerator(precision)
    n = accelerator.num_processes
    bs = max(n, (batch_size // n) * n)
    workers = default_workers(accelerator.device.type, n) if num_workers is None else num_workers
    loader = DataLoader(dataset, batch_size=bs, shuffle=False, num_workers=workers)
    model, loader = accelerator.prepare(model, loader)
    result = evaluate_classifier(model, loader, accelerator)
    accelerator.free_memory()
    return result


# --------------------------------------------------------------------------------------------
# Contrastive image–text learning (CLIP, CLIPA).
# --------------------------------------------------------------------------------------------


def contrastive_loss(image_features: Tensor, text_features: Tensor, logit_scale: Tensor | float) -> Tensor:
    """The symmetric InfoNCE loss of CLIP: image ``i`` belongs with text ``i``, and with no other.

    With unit features ``u_i`` (images) and ``v_j`` (texts), each divided by its norm + 1e-8 as in
    :class:`~crate_edu.models.crate_alpha_clipa.CRATEAlphaCLIPA`, and logits ``s_ij = scale · u_i·v_j``::

        loss = ½ · mean_i[−log softmax_j(s_ij)[i]] + ½ · mean_j[−log softmax_i(s_ij)[j]]

    the cross-entropy of each image against all texts and of each text against all images.

    Args:
        image_features: ``(N, E)``, not normalised (``model.encode_image``).
        text_features: ``(N, E)``, not normalised; row ``i`` describes image ``i``.
        logit_scale: the multiplier itself, e.g. ``model.logit_scale.exp()`` (CLIP starts at 1/0.07).

    Returns:
        The scalar loss; it is ``log N`` when every logit is equal (e.g. scale 0).
    """
    if image_features.ndim != 2 or image_features.shape != text_features.shape:
        raise ValueError(
            f"contrastive_loss expects image and text features of the same shape (N, E), got "
            f"{tuple(image_features.shape)} and {tuple(text_features.shape)}"
        )
    img, text = image_features.float(), text_features.float()  # float32 under mixed precision too
    img, text = normalize(img), normalize(text)  # u_i, v_j: each / (norm + 1e-8)     (N, E)
    logits = logit_scale * img @ text.T  # row i: image i against every text  (N, N)
    targets = torch.arange(len(logits), device=logits.device)  # the matching pair is the diagonal (N,)
    per_image = F.cross_entropy(logits, targets)  # image -> text
    per_text = F.cross_entropy(logits.T, targets)  # text -> image
    return (per_image + per_text) / 2
