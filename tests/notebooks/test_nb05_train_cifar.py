"""Tests behind the checks of notebooks/05_train_cifar, on other sizes and seeds than the notebook's.

Covered elsewhere: forward_flops against torch's FLOP counter (tests/unit/evaluation/test_flops.py), the live
curves' history (tests/unit/train/test_live.py), the trainer itself (tests/unit/train/test_loop.py).
"""

from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn.functional as F
from lion_pytorch import Lion

import crate_edu
from crate_edu.data import build_transform, dataset_info
from crate_edu.evaluation import confusion_matrix, per_class_accuracy, predict
from crate_edu.train import (
    RECIPES,
    build_datasets,
    build_model,
    evaluate,
    load_checkpoint,
    model_kwargs,
    train,
)

F64 = torch.float64


@pytest.mark.parametrize(("C", "eps"), [(10, 0.1), (100, 0.1), (3, 0.3)])
def test_label_smoothing_identity_floor_and_zero_gradient(C, eps):
    torch.manual_seed(C)
    z = torch.randn(7, C, dtype=F64)
    y = torch.randint(0, C, (7,))
    logp = torch.log_softmax(z, dim=-1)
    by_hand = ((1 - eps) * -logp.gather(1, y[:, None]).squeeze(1) + eps * -logp.mean(dim=1)).mean()
    torch.testing.assert_close(by_hand, F.cross_entropy(z, y, label_smoothing=eps), rtol=0, atol=1e-12)
    q = torch.full((C,), eps / C, dtype=F64)
    q[0] += 1 - eps
    H = -(q * q.log()).sum()
    top = 1 - eps + eps / C
    closed_form = -(top * math.log(top)) - (C - 1) * (eps / C) * math.log(eps / C)
    assert H.item() == pytest.approx(closed_form, abs=1e-12)
    z_opt = q.log().clone().requires_grad_(True)
    loss = F.cross_entropy(z_opt[None], torch.tensor([0]), label_smoothing=eps)
    loss.backward()
    assert loss.item() == pytest.approx(H.item(), abs=1e-12)
    assert z_opt.grad.abs().max().item() < 1e-12
    # the floor is a minimum: any other logits give more
    assert F.cross_entropy(z[:1], torch.tensor([0]), label_smoothing=eps).item() > H.item()


def test_label_smoothing_floor_for_cifar100_exercise():
    q_top, q_rest = 1 - 0.1 + 0.1 / 100, 0.1 / 100
    H = -(q_top * math.log(q_top)) - 99 * q_rest * math.log(q_rest)
    assert round(H, 2) == 0.78


@pytest.mark.parametrize(("lr", "wd", "seed"), [(2.4e-4, 0.5, 0), (1e-3, 0.0, 1), (3e-4, 0.1, 2)])
def test_lion_by_hand_equals_lion_pytorch(lr, wd, seed):
    torch.manual_seed(seed)
    theta0 = torch.randn(300, dtype=F64)
    grads = [torch.randn(300, dtype=F64) for _ in range(4)]
    b1, b2 = 0.9, 0.99
    theta, m = theta0.clone(), torch.zeros_like(theta0)
    for g in grads:
        c = b1 * m + (1 - b1) * g
        theta = theta - lr * (torch.sign(c) + wd * theta)
        m = b2 * m + (1 - b2) * g
    p = torch.nn.Parameter(theta0.clone())
    opt = Lion([p], lr=lr, betas=(b1, b2), weight_decay=wd)
    for g in grads:
        p.grad = g.clone()
        opt.step()
    torch.testing.assert_close(p.detach(), theta, rtol=0, atol=1e-12)


def test_lion_moves_every_coordinate_by_lr_adamw_does_not():
    torch.manual_seed(5)
    lr = 1e-3
    theta0 = torch.randn(500, dtype=F64)
    grads = [torch.randn(500, dtype=F64) * torch.rand(500, dtype=F64) for _ in range(4)]
    moves = {}
    for name, make in (
        ("lion", lambda q: Lion([q], lr=lr, weight_decay=0.0)),
        ("adamw", lambda q: torch.optim.AdamW([q], lr=lr, weight_decay=0.0)),
    ):
        p = torch.nn.Parameter(theta0.clone())
        opt = make(p)
        moves[name] = []
        for g in grads:
            before = p.detach().clone()
            p.grad = g.clone()
            opt.step()
            moves[name].append((p.detach() - before).abs())
    torch.testing.assert_close(
        torch.stack(moves["lion"]) / lr, torch.ones(4, 500, dtype=F64), rtol=0, atol=1e-9
    )
    # AdamW's first step is also ±lr (bias correction), its later ones are not
    assert (moves["adamw"][0] / lr).mean().item() > 0.99  # g / (|g| + 1e-8): 1 unless |g| is tiny
    assert all(mv.mean() < lr and mv.min() < 0.5 * lr for mv in moves["adamw"][1:])


def test_recipe_facts_the_notebook_states():
    scratch, ft = RECIPES["cifar10-scratch"], RECIPES["finetune"]
    assert (scratch.optimizer, scratch.lr, scratch.weight_decay, scratch.label_smoothing) == (
        "adamw",
        1e-3,
        0.05,
        0.1,
    )
    assert (ft.optimizer, ft.lr, ft.weight_decay, ft.label_smoothing, ft.warmup_epochs) == (
        "adamw",
        5e-5,
        0.01,
        0.0,
        0,
    )
    assert (ft.augment, scratch.augment) == ("randaugment", "cifar")
    assert 0.1 < (2.4e-4 * 0.5) / (scratch.lr * scratch.weight_decay) < 10
    assert (RECIPES["imagenet"].optimizer, RECIPES["imagenet"].lr, RECIPES["imagenet"].weight_decay) == (
        "lion",
        2.4e-4,
        0.5,
    )


def test_randaugment_pipeline_is_two_ops_at_magnitude_14():
    info = dataset_info("cifar10")
    ra = build_transform("randaugment", True, 32, info.mean, info.std, native_size=32)
    ops = [t for t in ra.transforms if type(t).__name__ == "RandAugment"]
    assert len(ops) == 1 and (ops[0].num_ops, ops[0].magnitude) == (2, 14)
    x = torch.randint(0, 256, (3, 32, 32), dtype=torch.uint8)
    assert ra(x).shape == (3, 32, 32) and ra(x).dtype == torch.float32


@pytest.mark.parametrize(
    ("crate", "vit"),
    [
        (
            ("crate_nano_cifar", {"depth": 4, "patch_size": 8}),
            ("vit_nano_cifar", {"depth": 4, "patch_size": 8, "dim": 64}),
        ),
        (("crate_tiny_cifar", {}), ("vit_tiny_cifar", {})),
    ],
)
def test_same_size_vit_within_ten_percent(crate, vit):
    with torch.device("meta"):
        n_c = crate_edu.create_model(crate[0], **crate[1]).num_params()
        n_v = crate_edu.create_model(vit[0], **vit[1]).num_params()
    assert abs(n_v / n_c - 1) < 0.10


def test_evaluation_save_reload_and_head_replacement(tmp_path):
    pytest.importorskip("safetensors")
    from crate_edu.weights import load_weights, save_weights

    cfg = RECIPES["cifar10-scratch"].config(
        dataset="digits",
        model="crate_nano_cifar",
        model_overrides={"depth": 1, "patch_size": 8},
        epochs=1,
        warmup_epochs=0,
        batch_size=32,
        limit_train=96,
        limit_test=50,
        augment="shift",
        threads=1,
        progress=False,
    )
    result = train(cfg, tmp_path / "run")
    model = build_model(cfg)
    model.load_state_dict(load_checkpoint(result.checkpoint)["model"])
    _, test_set = build_datasets(cfg)
    p = predict(model, test_set, batch_size=16)
    ev = evaluate(model, test_set, precision="no")
    model.eval()
    assert (
        p.accuracy
        == pytest.approx(ev["acc"], abs=1e-12)
        == pytest.approx(result.final["test_acc"], abs=1e-12)
    )
    cm = confusion_matrix(p.preds, p.targets, 10)
    counts = torch.bincount(p.targets, minlength=10).double()
    assert cm.trace().item() / len(p.targets) == pytest.approx(p.accuracy)
    pca = per_class_accuracy(p.preds, p.targets, 10)
    present = counts > 0
    assert ((pca[present] * counts[present]).sum() / counts.sum()).item() == pytest.approx(
        p.accuracy, abs=1e-12
    )

    path = save_weights(model, tmp_path / "m.safetensors", model_name=cfg.model, overrides=model_kwargs(cfg))
    reloaded, info = load_weights(path)
    x = torch.stack([test_set[k][0] for k in range(8)])
    with torch.no_grad():
        assert torch.equal(reloaded(x), model(x))
    assert info.model_name == cfg.model

    ft = copy.deepcopy(model)
    ft.reset_classifier(7)
    for (na, a), (nb, b) in zip(model.state_dict().items(), ft.state_dict().items(), strict=True):
        assert na == nb
        if not na.startswith("mlp_head.1"):
            assert torch.equal(a, b)
    with torch.no_grad():
        f_old = model.forward_head(model.forward_features(x), pre_logits=True)
        f_new = ft.forward_head(ft.forward_features(x), pre_logits=True)
        assert torch.equal(f_old, f_new) and ft(x).shape == (8, 7)
