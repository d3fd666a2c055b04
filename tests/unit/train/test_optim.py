"""crate_edu.train.optim: the learning-rate schedule and the optimisers of the recipes."""

from __future__ import annotations

import math

import pytest
import torch

from crate_edu.errors import ConfigError
from crate_edu.train.optim import build_optimizer, lr_schedule, warmup_cosine
from tests.unit.train.test_loop import tiny_config


def test_warmup_cosine_schedule() -> None:
    warm, total = 4, 20
    f = [warmup_cosine(s, warm, total) for s in range(total)]
    assert f[:4] == [0.25, 0.5, 0.75, 1.0]  # linear warm-up, first step not at lr 0
    assert f[4] == 1.0  # cosine starts at the peak
    assert all(x >= y for x, y in zip(f[4:], f[5:], strict=False))  # then decays monotonically
    assert math.isclose(warmup_cosine(12, warm, total), 0.5, abs_tol=1e-12)  # halfway down
    assert math.isclose(warmup_cosine(total, warm, total, min_ratio=0.1), 0.1)
    assert warmup_cosine(0, 0, 10) == 1.0  # no warm-up


def test_lr_schedule_sets_every_steps_rate() -> None:
    w = torch.nn.Parameter(torch.zeros(2))
    opt = torch.optim.SGD([w], lr=0.5)
    sched = lr_schedule(opt, warmup_steps=2, total_steps=6, min_ratio=0.2)
    seen = []
    for _ in range(6):
        seen.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert seen == pytest.approx([0.5 * warmup_cosine(s, 2, 6, 0.2) for s in range(6)], rel=1e-12)
    assert opt.param_groups[0]["lr"] == pytest.approx(0.5 * 0.2)  # the end of the cosine


@pytest.mark.parametrize(
    "optimizer, kind", [("adamw", torch.optim.AdamW), ("sgd", torch.optim.SGD), ("lion", None)]
)
def test_build_optimizer(optimizer: str, kind) -> None:
    params = [torch.nn.Parameter(torch.zeros(3))]
    opt = build_optimizer(params, tiny_config(optimizer=optimizer, lr=1e-3))
    assert opt.param_groups[0]["lr"] == 1e-3 and opt.param_groups[0]["weight_decay"] == 0.05
    if kind is not None:
        assert isinstance(opt, kind)
    with pytest.raises(ConfigError, match="unknown optimizer 'adam'"):
        build_optimizer(params, tiny_config(optimizer="adam"))
    assert math.isfinite(opt.param_groups[0]["lr"])


def test_kernels_mask_decays_only_linear_and_conv_weights() -> None:
    """decay_mask='kernels': big_vision's ``.*/kernel$`` (the official CRATE-α recipes)."""
    from crate_edu.models import create_model
    from crate_edu.train.optim import decayed_parameters, param_groups

    model = create_model("crate_alpha_nano_cifar", depth=1, dim=32, heads=2, num_classes=5)
    decayed = decayed_parameters(model)
    names = dict(model.named_parameters())
    assert "conv1.weight" in decayed and "mlp_head.1.weight" in decayed
    assert any(n.endswith("qkv.weight") for n in decayed)
    for n in names:
        if n.split(".")[-1] in ("D", "D1", "bias") or n in ("pos_embedding", "cls_token") or ".norm." in n:
            assert n not in decayed, n
    assert "mlp_head.0.weight" not in decayed  # the LayerNorm of the head
    groups = param_groups(model, tiny_config(decay_mask="kernels", weight_decay=0.1))
    assert [g["weight_decay"] for g in groups] == [0.1, 0.0]
    assert sum(len(g["params"]) for g in groups) == len(names)

    # One AdamW step with zero gradients moves only the decayed weights, by lr * wd * w.
    cfg = tiny_config(decay_mask="kernels", weight_decay=0.1, lr=0.01, betas=(0.9, 0.95))
    opt = build_optimizer(param_groups(model, cfg), cfg)
    before = {n: p.detach().clone() for n, p in names.items()}
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    opt.step()
    for n, p in names.items():
        expected = before[n] * (1 - 0.01 * 0.1) if n in decayed else before[n]
        torch.testing.assert_close(p.detach(), expected, rtol=0, atol=1e-7)
    assert opt.param_groups[0]["betas"] == (0.9, 0.95) and opt.param_groups[0]["eps"] == 1e-8
