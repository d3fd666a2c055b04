"""crate_edu.train.mae: the CRATE-MAE pre-training loop, its files and an exact resume."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

from crate_edu.train.checkpoint import load_checkpoint
from crate_edu.train.mae import MAETrainConfig, load_mae_run, pretrain_mae

TINY = {"dim": 32, "depth": 1, "decoder_depth": 1, "heads": 2, "decoder_heads": 2}


def smooth_images(n, seed):
    """Images that are easy to inpaint: 4 × 4 random colour fields upsampled to 32 × 32."""
    g = torch.Generator().manual_seed(seed)
    low = torch.randn(n, 3, 4, 4, generator=g)
    return F.interpolate(low, size=32, mode="bilinear", align_corners=False)


def config(**kw):
    base = dict(model_overrides=TINY, epochs=2, batch_size=16, warmup_steps=2, lr=3e-3, threads=1)
    return MAETrainConfig(**{**base, **kw})


def test_loss_decreases_and_files_are_written(tmp_path):
    data = (smooth_images(64, 0), smooth_images(32, 1))
    run = pretrain_mae(config(epochs=4), tmp_path, datasets=data, log=None)
    losses = [h["test_loss"] for h in run.history]
    assert losses[-1] < 0.8 * losses[0], losses
    assert run.history[-1]["train_loss"] < run.history[0]["train_loss"]
    lines = [json.loads(s) for s in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in lines] == [1, 2, 3, 4] and lines[-1]["step"] == 16
    assert lines[-1]["lr"] == pytest.approx(0.0, abs=1e-12)  # cosine ends at min_lr_ratio · lr = 0
    state = load_checkpoint(tmp_path)
    assert state["epoch"] == 4 and state["model_name"] == "crate_mae_nano_cifar"
    model, _ = load_mae_run(tmp_path)
    for (k, a), b in zip(run.model.state_dict().items(), model.state_dict().values(), strict=True):
        assert torch.equal(a, b), k


def test_resume_continues_exactly(tmp_path):
    data = (smooth_images(48, 0), smooth_images(16, 1))
    full = pretrain_mae(config(), tmp_path / "full", datasets=data, log=None)

    def crash(line):
        raise KeyboardInterrupt  # after epoch 1 has been saved

    with pytest.raises(KeyboardInterrupt):
        pretrain_mae(config(), tmp_path / "cut", datasets=data, log=crash)
    assert load_checkpoint(tmp_path / "cut")["epoch"] == 1
    resumed = pretrain_mae(config(), tmp_path / "cut", datasets=data, resume=True, log=None)
    for (k, a), b in zip(full.model.state_dict().items(), resumed.model.state_dict().values(), strict=True):
        assert torch.equal(a, b), k
    assert [h["test_loss"] for h in resumed.history] == [h["test_loss"] for h in full.history]
    assert len((tmp_path / "cut" / "metrics.jsonl").read_text().splitlines()) == 2
    with pytest.raises(ValueError, match="other settings"):
        pretrain_mae(config(lr=1e-3), tmp_path / "cut", datasets=data, resume=True, log=None)


def test_threads_restored_and_bad_configs():
    before = torch.get_num_threads()
    pretrain_mae(
        config(epochs=1, threads=1), None, datasets=(smooth_images(16, 0), smooth_images(8, 1)), log=None
    )
    assert torch.get_num_threads() == before
    with pytest.raises(ValueError, match="mask_ratio"):
        MAETrainConfig(mask_ratio=0.0)
    with pytest.raises(ValueError, match="epochs"):
        MAETrainConfig(epochs=0)
    with pytest.raises(ValueError, match="masked autoencoder"):
        pretrain_mae(
            MAETrainConfig(model="crate_nano_cifar", model_overrides={"depth": 1}),
            None,
            datasets=(smooth_images(8, 0), smooth_images(8, 1)),
            log=None,
        )
