"""crate_edu.train.loop: whole classification runs: learning, resume, crashes, processes, accumulation
(CPU, offline, tiny models on ``digits``)."""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import crate_edu
from crate_edu.train import (
    ConfigError,
    TrainConfig,
    build_datasets,
    build_model,
    check_config,
    fit,
    load_checkpoint,
    read_jsonl,
    train,
)
from crate_edu.train import checkpoint as ckpt_module
from crate_edu.train.checkpoint import CHECKPOINT_NAME, METRICS_NAME


@pytest.fixture(autouse=True)
def _on_the_cpu(monkeypatch):
    """These tests compare CPU float results: a GPU, where there is one, is left out."""
    monkeypatch.setenv("ACCELERATE_USE_CPU", "1")


# A CRATE small enough for a few hundred CPU steps a second: 1 layer, width 32, 16 tokens.
TINY = dict(depth=1, dim=32, heads=2, patch_size=8)
METRIC_KEYS = ("epoch", "step", "train_loss", "train_acc", "test_loss", "test_acc", "lr")


def tiny_config(**changes) -> TrainConfig:
    base = dict(
        model="crate_nano_cifar",
        dataset="digits",
        epochs=3,
        batch_size=32,
        optimizer="adamw",
        lr=3e-3,
        weight_decay=0.05,
        warmup_epochs=1,
        label_smoothing=0.1,
        grad_clip=1.0,
        augment="none",
        model_overrides=dict(TINY),
        limit_train=256,
        limit_test=128,
        threads=1,
        progress=False,
    )
    base.update(changes)
    return TrainConfig(**base)


def assert_same_history(a: list[dict], b: list[dict], tol: float) -> None:
    assert len(a) == len(b)
    for ra, rb in zip(a, b, strict=True):
        for k in METRIC_KEYS:
            assert math.isclose(ra[k], rb[k], rel_tol=tol, abs_tol=tol), (k, ra, rb)


# ------------------------------------------------------------------------------------------ training


def test_one_epoch_on_digits_learns(tmp_path: Path) -> None:
    """~90 AdamW steps of a 2-layer, width-64 CRATE on the 1,438 train digits: far above chance (0.1)."""
    cfg = tiny_config(
        epochs=1,
        batch_size=16,
        lr=3e-3,
        weight_decay=0.0,
        warmup_epochs=0,
        label_smoothing=0.0,
        grad_clip=None,
        limit_train=None,
        limit_test=None,
        model_overrides=dict(depth=2, dim=64, heads=2, patch_size=8),
    )
    result = train(cfg, tmp_path / "run")
    (record,) = read_jsonl(tmp_path / "run" / METRICS_NAME)
    assert record == result.final
    assert set(METRIC_KEYS) | {"seconds"} <= set(record)
    assert record["epoch"] == 1 and record["step"] == 1438 // 16
    assert record["test_acc"] > 0.5, record  # chance is 0.1; seeds 0-2 give 0.74-0.86
    assert 0 <= record["test_acc"] <= 1 and record["test_loss"] < math.log(10)
    ckpt = load_checkpoint(tmp_path / "run")
    assert ckpt["epoch"] == 1 and ckpt["history"] == [record]


class _InterruptAfter(torch.utils.data.Dataset):
    """A dataset that raises KeyboardInterrupt (Ctrl-C) once ``n`` items have been read."""

    def __init__(self, base, n: int) -> None:
        self.base, self.n, self.reads = base, n, 0

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, i):
        self.reads += 1
        if self.reads > self.n:
            raise KeyboardInterrupt
        return self.base[i]


def test_interrupted_and_resumed_run_equals_uninterrupted(tmp_path: Path) -> None:
    # Random augmentation, dropout, warm-up, clipping and smoothing: every RNG and state must resume.
    cfg = tiny_config(augment="shift", model_overrides={**TINY, "dropout": 0.1})
    full = train(cfg, tmp_path / "full")

    # Same run, stopped by Ctrl-C in the middle of epoch 3 (256 images / epoch, batch 32).
    torch.manual_seed(12345)  # scramble the global generators: the checkpoint must restore them
    from accelerate.utils import set_seed

    set_seed(cfg.seed)
    model = build_model(cfg)
    train_set, test_set = build_datasets(cfg)
    with pytest.raises(KeyboardInterrupt):
        fit(model, _InterruptAfter(train_set, 2 * 256 + 100), test_set, cfg, tmp_path / "cut")
    assert load_checkpoint(tmp_path / "cut")["epoch"] == 2
    assert len(read_jsonl(tmp_path / "cut" / METRICS_NAME)) == 2

    torch.manual_seed(999)
    resumed = train(out_dir=tmp_path / "cut", resume=True)
    assert_same_history(full.history, resumed.history, tol=1e-5)
    assert_same_history(full.history, read_jsonl(tmp_path / "cut" / METRICS_NAME), tol=1e-5)
    a = load_checkpoint(tmp_path / "full")["model"]
    b = load_checkpoint(tmp_path / "cut")["model"]
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-5, atol=1e-6)


def test_resume_refuses_changed_hyperparameters_and_extends_epochs(tmp_path: Path) -> None:
    cfg = tiny_config(epochs=1, limit_train=64)
    train(cfg, tmp_path / "r")
    with pytest.raises(ConfigError, match="cannot change lr"):
        train(cfg.replace(lr=0.1), tmp_path / "r", resume=True, explicit=["lr"])
    with pytest.raises(ConfigError, match="already holds a run"):
        train(cfg, tmp_path / "r")
    with pytest.raises(ConfigError, match="no checkpoint"):
        train(cfg, tmp_path / "elsewhere", resume=True)
    with pytest.warns(UserWarning, match="stretched"):
        longer = train(cfg.replace(epochs=2), tmp_path / "r", resume=True, explicit=["epochs"])
    assert [h["epoch"] for h in longer.history] == [1, 2]


def test_crash_while_saving_keeps_the_previous_checkpoint(tmp_path: Path, monkeypatch) -> None:
    cfg = tiny_config(epochs=2, limit_train=64)
    out = tmp_path / "run"

    def stop(record: dict) -> None:
        raise KeyboardInterrupt  # Ctrl-C right after epoch 1 was saved

    with pytest.raises(KeyboardInterrupt):
        train(cfg, out, on_epoch_end=stop)
    good = load_checkpoint(out)
    assert good["epoch"] == 1
    before = (out / CHECKPOINT_NAME).read_bytes()

    def torn_write(obj, f, *args, **kwargs):
        f.write(b"PK\x03\x04 half a zip file")  # some bytes reach the disk ...
        raise OSError(28, "No space left on device")  # ... then the write fails

    monkeypatch.setattr(ckpt_module.torch, "save", torn_write)
    with pytest.raises(OSError, match="No space left"):
        train(out_dir=out, resume=True)  # epoch 2 trains, then its checkpoint write fails
    monkeypatch.undo()

    assert (out / CHECKPOINT_NAME).read_bytes() == before  # untouched, still loadable
    assert load_checkpoint(out)["epoch"] == 1
    assert sorted(p.name for p in out.iterdir()) == ["checkpoint.pt", "config.json", "metrics.jsonl"]
    assert [h["epoch"] for h in read_jsonl(out / METRICS_NAME)] == [1]
    assert [h["epoch"] for h in train(out_dir=out, resume=True).history] == [1, 2]


@pytest.mark.parametrize("optimizer, lr", [("lion", 3e-4), ("sgd", 0.05)])
def test_other_optimisers_train(tmp_path: Path, optimizer: str, lr: float) -> None:
    cfg = tiny_config(epochs=1, optimizer=optimizer, lr=lr, limit_train=64)
    result = train(cfg, tmp_path / optimizer)
    assert math.isfinite(result.final["train_loss"])
    ckpt = load_checkpoint(tmp_path / optimizer)  # the optimiser state is weights_only-loadable
    assert ckpt["optimizer"]["state"]


def run_two_cpu_processes(args: list[str]) -> subprocess.CompletedProcess:
    """``torchrun`` 2 CPU processes (one thread each) of ``python -m crate_edu ARGS``; asserts
    success and returns the finished process (its stdout for the caller to check)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "ACCELERATE_USE_CPU": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    proc = subprocess.run(
        [*cmd, "-m", "crate_edu", *args], capture_output=True, text=True, env=env, timeout=300
    )
    # a long stderr tail: torchrun's summary comes last, the failing worker's own message before it
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-20000:]
    return proc


def test_two_processes_equal_one_process(tmp_path: Path) -> None:
    """torchrun with 2 CPU processes and global batch 32 (16 each) == 1 process with batch 32.

    They agree because both see the same batches ((seed, epoch) order, each batch split across the
    ranks), DDP averages the two half-batch gradients into the full-batch mean, and nothing random
    runs (no dropout, no augmentation).
    """
    cfg = tiny_config(epochs=2, warmup_epochs=0.5)
    single = train(cfg, tmp_path / "one")

    args = [
        "train", "--model", cfg.model, "--dataset", cfg.dataset, "--epochs", "2", "--batch-size", "32",
        "--optimizer", "adamw", "--lr", str(cfg.lr), "--weight-decay", str(cfg.weight_decay),
        "--warmup-epochs", "0.5", "--label-smoothing", "0.1", "--grad-clip", "1.0", "--augment", "none",
        "--limit-train", "256", "--limit-test", "128", "--threads", "1", "--no-progress",
        "--depth", "1", "--dim", "32", "--heads", "2", "--patch-size", "8", "--out", str(tmp_path / "two"),
    ]  # fmt: skip
    run_two_cpu_processes(args)
    two = read_jsonl(tmp_path / "two" / METRICS_NAME)
    assert load_checkpoint(tmp_path / "two")["num_processes"] == 2
    assert_same_history(single.history, two, tol=1e-5)
    a = load_checkpoint(tmp_path / "one")["model"]
    b = load_checkpoint(tmp_path / "two")["model"]
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-5, atol=1e-5)


def test_gradient_accumulation_equals_the_full_batch(tmp_path: Path) -> None:
    """Batch 32 as 4 passes of 8 == batch 32 at once (no dropout, no augmentation, LayerNorm only)."""
    cfg = tiny_config(epochs=1, limit_train=128)
    full = train(cfg, tmp_path / "full")
    accum = train(cfg.replace(grad_accum=4), tmp_path / "accum")
    assert accum.final["step"] == full.final["step"] == 128 // 32
    assert_same_history(full.history, accum.history, tol=1e-5)
    with pytest.raises(ConfigError, match="multiple of grad-accum"):
        check_config(cfg.replace(grad_accum=3))


def test_evaluate_matches_the_logged_test_metrics(tmp_path: Path) -> None:
    from crate_edu.train import evaluate

    cfg = tiny_config(epochs=1, limit_train=64)
    result = train(cfg, tmp_path / "e")
    model = crate_edu.create_model(cfg.model, num_classes=10, **TINY)
    model.load_state_dict(load_checkpoint(result.checkpoint)["model"])
    _, test_set = build_datasets(cfg)
    ev = evaluate(model, test_set, batch_size=50, precision="no")
    assert ev["n"] == 128
    assert math.isclose(ev["acc"], result.final["test_acc"], abs_tol=1e-9)
    assert math.isclose(ev["loss"], result.final["test_loss"], rel_tol=1e-5)


def test_compiled_run_matches_eager_and_saves_the_plain_module(tmp_path):
    """``compile`` wraps the model in torch.compile; the checkpoint holds the plain module's weights."""
    cfg = tiny_config(epochs=1, limit_train=64, limit_test=32)
    eager = train(cfg, tmp_path / "eager")
    compiled = train(cfg.replace(compile="aot_eager"), tmp_path / "compiled")
    assert_same_history(eager.history, compiled.history, tol=1e-4)
    state = load_checkpoint(compiled.checkpoint)["model"]
    assert state.keys() == build_model(cfg).state_dict().keys()  # no "_orig_mod." prefixes
