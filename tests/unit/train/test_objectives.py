"""crate_edu.train.objectives: an objective plugs into the one loop (run_epochs); Classification's
lines and messages.

The toy objective here (least squares on random points, one device) is the smallest thing that
runs through :func:`crate_edu.train.loop.run_epochs`: what any later objective needs to provide.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from crate_edu.data.loader import epoch_generator
from crate_edu.errors import TrainingDivergedError
from crate_edu.train import (
    Classification,
    EpochStats,
    OneDevice,
    Run,
    contrastive_loss,
    load_checkpoint,
    lr_schedule,
    read_jsonl,
    run_epochs,
)
from crate_edu.train.loop import restore_state, start_run_folder
from tests.unit.train.test_loop import tiny_config


class Points:
    """Batches of (x, y) in an order that depends only on (seed, epoch)."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor, batch_size: int) -> None:
        self.x, self.y, self.batch_size, self.epoch = x, y, batch_size, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return -(-len(self.x) // self.batch_size)

    def __iter__(self):
        order = torch.randperm(len(self.x), generator=epoch_generator(0, self.epoch))
        for idx in order.split(self.batch_size):
            yield self.x[idx], self.y[idx]


class LeastSquares:
    """Mean squared error of a linear model; scored by the same error on held-out points."""

    def loss(self, model, batch):
        x, y = batch
        return F.mse_loss(model(x), y), None

    def evaluate(self, run, epoch):
        x, y = run.test_data
        with torch.no_grad():
            return {"test_loss": float(F.mse_loss(run.model(x), y))}

    def record(self, run, epoch, stats, test):
        return {"epoch": epoch + 1, "step": run.step, "train_loss": stats.loss, **test, "lr": run.lr}

    def checkpoint_extras(self, run):
        return {"objective": "least-squares"}

    def diverged(self, run, value, epoch, micro_step):
        return TrainingDivergedError(f"the loss became {value} at epoch {epoch + 1}, batch {micro_step + 1}")

    def describe(self, record, epochs):
        return f"epoch {record['epoch']}/{epochs}  test {record['test_loss']:.4f}"


def make_run(out: Path | None, epochs: int = 4, lines: list | None = None, lr: float = 0.3) -> Run:
    g = torch.Generator().manual_seed(0)
    w = torch.randn(3, 1, generator=g)
    x = torch.randn(96, 3, generator=g)
    y = x @ w + 0.01 * torch.randn(96, 1, generator=g)
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=lr)
    train = Points(x[:64], y[:64], batch_size=16)
    scheduler = lr_schedule(optimizer, warmup_steps=2, total_steps=epochs * len(train))
    state = load_checkpoint(out) if out is not None and (out / "checkpoint.pt").exists() else None
    start, history = restore_state(state, model, optimizer, scheduler)
    if out is not None:
        start_run_folder(out, "{}\n", history)
    log = lines.append if lines is not None else None
    return Run(
        model, optimizer, scheduler, OneDevice("cpu", log), train, test_data=(x[64:], y[64:]),
        epochs=epochs, steps_per_epoch=len(train), out=out, start_epoch=start, history=history,
    )  # fmt: skip


def test_a_new_objective_runs_through_the_loop(tmp_path: Path) -> None:
    lines: list[str] = []
    run = make_run(tmp_path, lines=lines)
    run_epochs(run, LeastSquares())
    losses = [h["test_loss"] for h in run.history]
    assert losses[-1] < 0.1 * losses[0], losses
    assert [h["step"] for h in run.history] == [4, 8, 12, 16]
    assert lines == [f"epoch {h['epoch']}/4  test {h['test_loss']:.4f}" for h in run.history]
    assert read_jsonl(tmp_path / "metrics.jsonl") == run.history
    state = load_checkpoint(tmp_path)
    assert (state["epoch"], state["step"], state["objective"]) == (4, 16, "least-squares")
    assert torch.equal(state["model"]["weight"], run.model.weight.detach())


def test_a_resumed_run_ends_where_an_uninterrupted_one_does(tmp_path: Path) -> None:
    full = make_run(tmp_path / "full")
    run_epochs(full, LeastSquares())

    def stop(record: dict) -> None:
        if record["epoch"] == 2:
            raise KeyboardInterrupt  # after epoch 2 was saved

    with pytest.raises(KeyboardInterrupt):
        run_epochs(make_run(tmp_path / "cut"), LeastSquares(), on_epoch_end=stop)
    resumed = make_run(tmp_path / "cut")
    assert (resumed.start_epoch, resumed.step) == (2, 8)
    run_epochs(resumed, LeastSquares())
    assert resumed.history == full.history  # bit for bit: same order, same steps, same schedule
    assert torch.equal(resumed.model.weight, full.model.weight)


class NaNAtCall(LeastSquares):
    """LeastSquares whose loss is NaN from the ``n``-th training batch on."""

    def __init__(self, n: int) -> None:
        self.n, self.calls = n, 0

    def loss(self, model, batch):
        self.calls += 1
        loss, hits = super().loss(model, batch)
        return (loss * float("nan") if self.calls >= self.n else loss), hits


def test_a_non_finite_loss_stops_before_the_epoch_is_saved(tmp_path: Path) -> None:
    run = make_run(tmp_path, epochs=3)
    with pytest.raises(TrainingDivergedError, match=r"^the loss became nan at epoch 2, batch 2$"):
        run_epochs(run, NaNAtCall(6))  # 4 batches an epoch: the 6th is epoch 2's second
    assert [h["epoch"] for h in read_jsonl(tmp_path / "metrics.jsonl")] == [1]
    assert load_checkpoint(tmp_path)["epoch"] == 1


def test_classification_line_record_and_message(tmp_path: Path) -> None:
    cfg = tiny_config(grad_clip=None, warmup_epochs=0)
    objective = Classification(cfg, mixed_precision="fp16")
    model = torch.nn.Linear(2, 3)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    run = Run(
        model, optimizer, None, OneDevice("cpu", None), [], None, epochs=3, steps_per_epoch=4, grad_accum=2,
        out=tmp_path, start_epoch=1,
    )  # fmt: skip
    stats = EpochStats(loss=0.5, acc=0.75, started=0.0, seconds=1.0, cpu_seconds=1.0)
    record = objective.record(run, 1, stats, {"test_loss": 0.6, "test_acc": 0.7})
    keys = ["epoch", "step", "train_loss", "train_acc", "test_loss", "test_acc", "lr", "seconds"]
    assert list(record) == keys and (record["epoch"], record["step"], record["lr"]) == (2, 4, 0.1)
    assert objective.describe(record, 3).startswith("epoch 2/3  train_loss 0.5000  train_acc 0.7500")
    loss, hits = objective.loss(model, (torch.eye(2), torch.tensor([0, 1])))
    assert loss.ndim == 0 and hits.dtype == torch.bool and hits.shape == (2,)
    msg = str(objective.diverged(run, float("nan"), 1, 5))
    assert "the training loss became nan at epoch 2, micro-step 6 of 8 (optimizer step 7 of 12)" in msg
    assert f"{tmp_path / 'checkpoint.pt'} still holds epoch 1" in msg
    assert "--grad-clip 1.0" in msg and "--warmup-epochs 1" in msg and "--precision bf16" in msg


# --------------------------------------------------------------------------------------------
# contrastive_loss: CLIP's symmetric InfoNCE.
# --------------------------------------------------------------------------------------------


def _direct_infonce(img: torch.Tensor, text: torch.Tensor, scale: float) -> float:
    """Pair by pair in float64: the mean of −log softmax over texts per image and over images per text."""
    n = len(img)
    u = [img[i].double() / (img[i].double().norm() + 1e-8) for i in range(n)]
    v = [text[j].double() / (text[j].double().norm() + 1e-8) for j in range(n)]
    s = [[scale * float(u[i] @ v[j]) for j in range(n)] for i in range(n)]
    image_to_text = sum(-s[i][i] + math.log(sum(math.exp(s[i][j]) for j in range(n))) for i in range(n)) / n
    text_to_image = sum(-s[j][j] + math.log(sum(math.exp(s[i][j]) for i in range(n))) for j in range(n)) / n
    return (image_to_text + text_to_image) / 2


def test_contrastive_loss_equals_a_direct_double_loop() -> None:
    g = torch.Generator().manual_seed(0)
    img, text = torch.randn(6, 5, generator=g), torch.randn(6, 5, generator=g)
    for scale in (1.0, 14.3, torch.tensor(100.0)):
        got = contrastive_loss(img, text, scale)
        assert got.shape == ()
        assert math.isclose(float(got), _direct_infonce(img, text, float(scale)), rel_tol=1e-5)
    # Symmetric: swapping the roles of images and texts leaves it unchanged.
    assert math.isclose(
        float(contrastive_loss(text, img, 7.0)), float(contrastive_loss(img, text, 7.0)), rel_tol=1e-6
    )


def test_contrastive_loss_is_log_n_when_all_logits_are_equal() -> None:
    x = torch.randn(8, 4, generator=torch.Generator().manual_seed(1))
    assert math.isclose(float(contrastive_loss(x, x, 0.0)), math.log(8), rel_tol=1e-6)


def test_contrastive_loss_decreases_under_gradient_steps() -> None:
    g = torch.Generator().manual_seed(2)
    img = torch.randn(8, 4, generator=g)
    project = torch.nn.Linear(4, 4)  # a toy text tower: its captions are random projections of the images
    captions = torch.randn(8, 4, generator=g)
    with torch.no_grad():  # fixed weights, whatever the global generator holds
        project.weight.copy_(torch.randn(4, 4, generator=g) / 2)
        project.bias.zero_()
    opt = torch.optim.SGD(project.parameters(), lr=0.5)
    losses = []
    for _ in range(20):
        loss = contrastive_loss(img, project(captions), 10.0)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < 0.5 * losses[0], losses


def test_contrastive_loss_is_finite_for_zero_vectors() -> None:
    img = torch.zeros(4, 3, requires_grad=True)
    text = torch.randn(4, 3)
    loss = contrastive_loss(img, text, 100.0)
    loss.backward()
    assert math.isclose(float(loss.detach()), math.log(4), rel_tol=1e-6)  # zero features: every logit is 0
    assert torch.isfinite(img.grad).all()
    with pytest.raises(ValueError, match="same shape"):
        contrastive_loss(torch.zeros(4, 3), torch.zeros(5, 3), 1.0)
