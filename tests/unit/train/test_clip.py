"""crate_edu.train.clip: CLIPA training on the loop: learning, exact resume, the phase switch."""

from __future__ import annotations

import json
import math

import pytest
import torch

from crate_edu.data import CaptionedDigits
from crate_edu.train.checkpoint import load_checkpoint
from crate_edu.train.clip import (
    CaptionBatches,
    CLIPTrainConfig,
    build_clip_model,
    extend_text_positions,
    load_clip_run,
    pretrain_clip,
    resize_positional_embedding,
    upsize_clip_model,
)
from crate_edu.train.optim import kernel_decay_groups

TINY = {
    "vision_width": 32, "vision_depth": 1, "vision_heads": 2,
    "text_width": 32, "text_depth": 1, "text_heads": 2, "embed_dim": 32,
}  # fmt: skip


@pytest.fixture(scope="module")
def data():
    train = CaptionedDigits("train", samples_per_digit=1)
    test = CaptionedDigits("test", samples_per_digit=1)
    return train, test


def config(**kw):
    base = dict(
        model_overrides=TINY, samples_per_digit=1, train_limit=256, eval_limit=128, low_res_epochs=2,
        full_res_epochs=1, batch_size=64, lr=3e-3, warmup_steps=2, finetune_lr=1e-3,
        finetune_warmup_steps=1, threads=1,
    )  # fmt: skip
    return CLIPTrainConfig(**{**base, **kw})


def test_loss_decreases_and_the_phases_switch(tmp_path, data):
    run = pretrain_clip(config(low_res_epochs=3, train_limit=512), tmp_path, datasets=data, log=None)
    h = run.history
    assert [r["phase"] for r in h] == [0, 0, 0, 1] and [r["epoch"] for r in h] == [1, 2, 3, 4]
    assert [r["image_size"] for r in h] == [16, 16, 16, 32] and [r["context_length"] for r in h] == [
        8,
        8,
        8,
        16,
    ]
    assert h[2]["train_loss"] < h[0]["train_loss"] - 0.2 and h[2]["train_loss"] < math.log(64)  # learns
    assert [r["step"] for r in h] == [8, 16, 24, 32]
    assert set(run.phase_time_s) == {"low_res", "full_res"}
    for key in ("digit_acc", "digit_acc_held_out_pairs", "pair_acc_held_out_pairs", "logit_scale"):
        assert all(math.isfinite(r[key]) for r in h), key
    lines = [json.loads(s) for s in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert lines == json.loads(json.dumps(h))
    assert run.model.visual.positional_embedding.shape == (65, 32)  # full size at the end
    model, state = load_clip_run(tmp_path)
    assert state["phase"] == 1 and state["epoch"] == 1
    low, low_state = load_clip_run(tmp_path / "checkpoint_low_res.pt")  # the hand-off is kept
    assert low_state["phase"] == 0 and low_state["epoch"] == 3 and low.config.image_size == 16
    for (k, a), b in zip(run.model.state_dict().items(), model.state_dict().values(), strict=True):
        assert torch.equal(a, b), k


def test_phase_switch_changes_the_token_count(data):
    cfg = config()
    low, full = build_clip_model(cfg, 0), build_clip_model(cfg, 1)
    assert low.visual.positional_embedding.shape == (4 * 4 + 1, 32)  # 16 px, patch 4
    assert full.visual.positional_embedding.shape == (8 * 8 + 1, 32)
    assert low.positional_embedding.shape == (8, 32) and full.positional_embedding.shape == (16, 32)
    x, tokens = next(iter(CaptionBatches(data[0], 64, 64, 16, 8, 0, torch.device("cpu"))))
    assert x.shape == (64, 3, 16, 16) and tokens.shape == (64, 8)
    assert low.visual.embed(x).shape == (64, 17, 32)  # 17 tokens in phase 1, 65 in phase 2
    x, tokens = next(iter(CaptionBatches(data[0], 64, 64, 32, 16, 0, torch.device("cpu"))))
    assert full.visual.embed(x).shape == (64, 65, 32) and tokens.shape == (64, 16)
    upsize_clip_model(low, full)
    for name, t in low.state_dict().items():
        if "positional_embedding" not in name:
            assert torch.equal(full.state_dict()[name], t), name
    assert torch.equal(full.positional_embedding[:8], low.positional_embedding)
    assert torch.equal(full.positional_embedding[8:], low.positional_embedding[-1:].expand(8, -1))
    with torch.no_grad():
        full.encode_image(x)  # the full model runs at 32 px


def test_the_1d_position_resize_is_the_official_flattened_bilinear():
    g = torch.Generator().manual_seed(0)
    old = torch.randn(17, 5, generator=g)  # [CLS] + 4 × 4
    new = resize_positional_embedding(old, 65)
    # jax.image.resize 'bilinear' on the token axis (half-pixel centres, edges clamped), by hand
    n_in, n_out = 17, 65
    expected = torch.empty(n_out, 5)
    for i in range(n_out):
        s = min(max((i + 0.5) * n_in / n_out - 0.5, 0.0), n_in - 1)
        lo = math.floor(s)
        hi = min(lo + 1, n_in - 1)
        w = s - lo
        expected[i] = (1 - w) * old[lo] + w * old[hi]
    assert torch.allclose(new, expected, atol=1e-5)  # float32 rounding of the two weightings
    assert torch.equal(resize_positional_embedding(old, 17), old)  # same size: unchanged
    # not the 2-D grid resample: that keeps [CLS] and interpolates the 4 × 4 grid as an image
    grid = old[1:].T.reshape(1, 5, 4, 4)
    up = torch.nn.functional.interpolate(grid, size=(8, 8), mode="bilinear", align_corners=False)
    two_d = torch.cat([old[:1], up.reshape(5, 64).T])
    assert not torch.allclose(new, two_d, atol=1e-2)
    with pytest.raises(ValueError, match=r"\(N \+ 1, W\)"):
        resize_positional_embedding(old[None], 65)


def test_text_positions_grow_with_the_last_row_copied():
    pos = torch.arange(12.0).view(4, 3)
    out = extend_text_positions(pos, 6)
    assert torch.equal(out[:4], pos) and torch.equal(out[4:], pos[3:].expand(2, -1))
    with pytest.raises(ValueError, match="shorter"):
        extend_text_positions(pos, 3)


def test_resume_continues_exactly_inside_and_between_phases(tmp_path, data):
    cfg = config(full_res_epochs=2)
    full = pretrain_clip(cfg, tmp_path / "full", datasets=data, log=None)
    lines = []

    def crash_at(n):
        def log(line):
            lines.append(line)
            if len(lines) == n:
                raise KeyboardInterrupt

        return log

    cut = tmp_path / "cut"
    with pytest.raises(KeyboardInterrupt):  # after the last low-resolution epoch: between phases
        pretrain_clip(cfg, cut, datasets=data, log=crash_at(2))
    assert load_checkpoint(cut)["phase"] == 0 and load_checkpoint(cut)["epoch"] == 2
    with pytest.raises(KeyboardInterrupt):  # after the first full-size epoch: inside phase 2
        pretrain_clip(cfg, cut, datasets=data, resume=True, log=crash_at(3))
    assert load_checkpoint(cut)["phase"] == 1 and load_checkpoint(cut)["epoch"] == 1
    resumed = pretrain_clip(cfg, cut, datasets=data, resume=True, log=None)
    for (k, a), b in zip(full.model.state_dict().items(), resumed.model.state_dict().values(), strict=True):
        assert torch.equal(a, b), k
    keys = ("train_loss", "digit_acc", "pair_acc_held_out_pairs", "logit_scale", "step", "phase")
    assert [[h[k] for k in keys] for h in resumed.history] == [[h[k] for k in keys] for h in full.history]
    assert len((cut / "metrics.jsonl").read_text().splitlines()) == 4
    a, b = (
        load_checkpoint(cut / "checkpoint_low_res.pt"),
        load_checkpoint(tmp_path / "full" / "checkpoint_low_res.pt"),
    )
    assert a["phase"] == b["phase"] == 0 and a["epoch"] == b["epoch"] == 2
    for k, t in a["model"].items():
        assert torch.equal(t, b["model"][k]), k
    with pytest.raises(ValueError, match="other settings"):
        pretrain_clip(config(full_res_epochs=3), cut, datasets=data, resume=True, log=None)


def test_full_size_only_run_has_one_phase(data):
    run = pretrain_clip(config(low_res_epochs=0, full_res_epochs=1), datasets=data, log=None)
    assert [h["phase"] for h in run.history] == [1] and run.history[0]["image_size"] == 32


def test_weight_decay_only_on_kernels():
    model = build_clip_model(config())
    decay, no_decay = kernel_decay_groups(model, 0.2)
    names = {id(p): n for n, p in model.named_parameters()}
    decayed = {names[id(p)] for p in decay["params"]}
    assert decay["weight_decay"] == 0.2 and no_decay["weight_decay"] == 0.0
    assert "visual.conv1.weight" in decayed and "visual.proj" in decayed and "text_projection" in decayed
    assert "visual.transformer.resblocks.0.attn.in_proj_weight" in decayed
    assert "transformer.resblocks.0.mlp.c_fc.weight" in decayed
    for n in ("visual.transformer.resblocks.0.mlp.D", "visual.transformer.resblocks.0.mlp.D1",
              "visual.positional_embedding", "positional_embedding", "token_embedding.weight",
              "visual.class_embedding", "logit_scale", "ln_final.weight"):  # fmt: skip
        assert n not in decayed, n


@pytest.mark.parametrize(
    "kw, match",
    [
        ({"low_res_image_size": 18}, "low_res_image_size 18"),
        ({"low_res_image_size": 64}, "must not be larger than the model"),
        ({"low_res_context": 1}, "low_res_context must be >= 2"),
        ({"batch_size": 0}, "batch_size must be an integer >= 1"),
        ({"full_res_epochs": 0}, "full_res_epochs must be an integer >= 1"),
        ({"lr": -1.0}, "lr must be a positive number"),
        ({"finetune_lr": float("nan")}, "finetune_lr must be a positive number"),
        ({"weight_decay": -0.1}, "weight_decay must be >= 0"),
        ({"betas": (0.9, 1.5)}, "betas must be two numbers"),
        ({"eval_limit": 0}, "eval_limit must be a positive integer"),
        ({"model": "crate_nano_cifar", "model_overrides": {}}, "not an image–text model"),
        ({"model": "no_such_model"}, "unknown model"),
        ({"model_overrides": {"vision_width": 30, "vision_heads": 4}}, "vision_width 30"),
    ],
)
def test_bad_configs_are_one_line_errors(kw, match):
    with pytest.raises((ValueError, TypeError), match=match) as e:
        config(**kw)
    assert "\n" not in str(e.value)
