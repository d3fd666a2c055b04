"""Language modelling on the one training loop: next-token prediction, scored in bits.

A causal language model (:class:`~crate_edu.models.crate_lm.CRATELanguageModel`, or the
:class:`~crate_edu.models.gpt.GPT` baseline) trains through :func:`crate_edu.train.train` like a
classifier: the same recipes, checkpoints, ``--resume``, ``metrics.jsonl`` and progress bar. Only the
objective differs. Each batch is a pair of token windows ``(x, y)`` of shape ``(B, T)`` with
``y[:, t] = x[:, t + 1]`` (:class:`crate_edu.text.TextWindows`), and the loss is the cross-entropy of
every next token::

    loss = mean_{b, t} −log softmax(model(x)[b, t])[y[b, t]]          # nats per token

Scores: the same loss in bits (``loss / ln 2``: bits per character with the character tokenizer,
the usual unit of character-level language models) and the fraction of next tokens predicted
exactly (``acc``).
"""

from __future__ import annotations

import math
import time
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from crate_edu.device import PRECISIONS, sum_dtype
from crate_edu.errors import ConfigError
from crate_edu.train.build import default_workers, make_accelerator
from crate_edu.train.config import choice_error
from crate_edu.train.objectives import Classification, EpochStats, Run

__all__ = ["NextToken", "evaluate_language", "evaluate_language_model", "next_token_loss"]


def next_token_loss(logits: Tensor, targets: Tensor, label_smoothing: float = 0.0) -> Tensor:
    """Mean cross-entropy of ``logits`` (B, T, V) against the next tokens ``targets`` (B, T), in nats."""
    return F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten(), label_smoothing=label_smoothing)


@torch.no_grad()
def evaluate_language_model(model: nn.Module, loader: Any, accelerator: Any) -> dict[str, float]:
    """Next-token cross-entropy (nats and bits per token) and accuracy over every window of a
    prepared ``loader``, all processes together: ``{"loss", "bits", "acc", "n"}`` (``n``: tokens)."""
    model.eval()
    acc_dtype = sum_dtype(accelerator.device)
    loss_sum = torch.zeros((), dtype=acc_dtype, device=accelerator.device)
    correct = torch.zeros((), dtype=acc_dtype, device=accelerator.device)
    count = 0
    for x, y in loader:
        logits = model(x).float()  # (B, T, V)
        loss = F.cross_entropy(logits.transpose(1, 2), y, reduction="none").mean(dim=1)  # per window (B,)
        hit = (logits.argmax(dim=-1) == y).to(acc_dtype).mean(dim=1)  # per window (B,)
        loss, hit = accelerator.gather_for_metrics((loss, hit))  # drops the padding of the last batch
        loss_sum += loss.to(acc_dtype).sum()
        correct += hit.sum()
        count += int(hit.numel())
    model.train()
    if count == 0:
        return {"loss": float("nan"), "bits": float("nan"), "acc": float("nan"), "n": 0}
    mean = float(loss_sum) / count  # every window has T tokens: the mean of means is the mean
    return {"loss": mean, "bits": mean / math.log(2), "acc": float(correct) / count, "n": count * y.shape[1]}


def evaluate_language(
    model: nn.Module,
    dataset: Any,
    *,
    batch_size: int = 64,
    precision: str = "auto",
    num_workers: int | None = None,
) -> dict[str, float]:
    """Next-token loss (nats and bits per token) and accuracy of ``model`` on every window of
    ``dataset`` (:class:`crate_edu.text.TextWindows`), in one process or under ``accelerate launch``.
    Returns ``{"loss", "bits", "acc", "n"}`` (``n``: tokens scored)."""
    from torch.utils.data import DataLoader

    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ConfigError(f"batch_size must be a positive integer, got {batch_size!r}")
    if precision not in PRECISIONS:
        raise choice_error(precision, PRECISIONS, "precision")
    if len(dataset) == 0:
        raise ConfigError("the text to evaluate is empty; give at least one window")
    accelerator, _ = make_accelerator(precision)
    n = accelerator.num_processes
    workers = default_workers(accelerator.device.type, n) if num_workers is None else num_workers
    loader = DataLoader(dataset, batch_size=max(n, batch_size // n * n), shuffle=False, num_workers=workers)
    model, loader = accelerator.prepare(model, loader)
    result = evaluate_language_model(model, loader, accelerator)
    accelerator.free_memory()
    return result


class NextToken(Classification):
    """Next-token prediction: cross-entropy of every position (label smoothing if the run asks),
    scored by the validation loss in nats and bits per token and the next-token accuracy.

    It shares with :class:`Classification` what a checkpoint holds, the divergence message and the
    configuration it reads; the loss, the evaluation and the recorded line are its own.
    """

    def loss(self, model: nn.Module, batch: Any) -> tuple[Tensor, Tensor]:
        x, y = batch  # (b, T) token ids and their next tokens: this process's share of the batch
        logits = model(x)  # (b, T, V)
        loss = next_token_loss(logits, y, self.cfg.label_smoothing)
        return loss, (logits.detach().argmax(dim=-1) == y).flatten()  # (), (b·T,)

    def evaluate(self, run: Run, epoch: int) -> dict[str, float]:
        ev = evaluate_language_model(run.model, run.test_data, run.accelerator)
        if not math.isfinite(ev["loss"]):
            raise self._diverged(
                run, "validation loss", ev["loss"], epoch, "in the evaluation after its last step"
            )
        return {"test_loss": ev["loss"], "test_bits": ev["bits"], "test_acc": ev["acc"]}

    def record(self, run: Run, epoch: int, stats: EpochStats, test: dict[str, float]) -> dict[str, Any]:
        return {
            "epoch": epoch + 1,
            "step": run.step,
            "train_loss": stats.loss,
            "train_bits": stats.loss / math.log(2),
            "train_acc": stats.acc,
            **test,
            "lr": run.lr,
            "seconds": round(time.perf_counter() - stats.started, 3),  # training and evaluation
        }

    def describe(self, record: dict[str, Any], epochs: int) -> str:
        r = record
        unit = {"char": "bits/char", "byte": "bits/byte"}.get(self.cfg.tokenizer, "bits/token")
        return (
            f"epoch {r['epoch']}/{epochs}  train_loss {r['train_loss']:.4f}  "
            f"val_loss {r['test_loss']:.4f} ({r['test_bits']:.3f} {unit})  val_acc {r['test_acc']:.4f}  "
            f"lr {r['lr']:.2e}  {r['seconds']:.1f} s"
        )
