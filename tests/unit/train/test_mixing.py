"""crate_edu.train.mixing: mixup and CutMix against the reversed batch, and the smoothed targets."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from crate_edu.train.mixing import Mix, draw_mix, mix_images, mixed_cross_entropy, smoothing_values


def dense_targets(labels: torch.Tensor, k: int, lam: float, on: float, off: float) -> torch.Tensor:
    """The (B, K) targets written out: smoothed one-hot, mixed with the reversed batch's."""
    onehot = torch.full((len(labels), k), off, dtype=torch.float64)
    onehot[torch.arange(len(labels)), labels] = on
    return lam * onehot + (1 - lam) * onehot.flip(0)


def test_mixup_mixes_each_image_with_the_reversed_batch() -> None:
    x = torch.randn(5, 3, 4, 4)
    out = mix_images(x, Mix("mixup", 0.3))
    for i in range(5):
        torch.testing.assert_close(out[i], 0.3 * x[i] + 0.7 * x[4 - i])
    assert mix_images(x, None) is x


def test_cutmix_pastes_the_partner_box_and_lambda_is_its_area() -> None:
    torch.manual_seed(0)
    x = torch.arange(4, dtype=torch.float32).view(4, 1, 1, 1).expand(4, 3, 10, 12).clone()
    seen = 0
    for _ in range(50):
        mix = draw_mix(10, 12, mixup_alpha=0.0, cutmix_alpha=1.0)
        assert mix is not None and mix.kind == "cutmix"
        top, left, h, w = mix.box
        assert 0 <= top and top + h <= 10 and 0 <= left and left + w <= 12
        assert math.isclose(mix.lam, 1 - h * w / 120)  # recomputed from the box's area
        out = mix_images(x, mix)
        pasted = out[:, 0] != x[:, 0]  # (4, 10, 12): where the partner's pixels went
        assert int(pasted[0].sum()) == h * w  # image 0 differs from its partner (3) everywhere
        assert torch.all(out[0, :, top : top + h, left : left + w] == 3)  # partner = reversed batch
        assert torch.equal(out[:, :, :top], x[:, :, :top])  # the rest is the image's own
        seen += h * w > 0
    assert seen > 30


def test_switch_and_lambda_distributions() -> None:
    torch.manual_seed(1)
    draws = [draw_mix(8, 8, 0.8, 1.0, 0.5) for _ in range(4000)]
    kinds = [m.kind for m in draws]
    assert abs(kinds.count("mixup") / 4000 - 0.5) < 0.03
    lams = torch.tensor([m.lam for m in draws if m.kind == "mixup"])
    # Beta(0.8, 0.8): mean 1/2, variance a^2 / ((2a)^2 (2a + 1)) = 1 / (4 * 2.6)
    assert abs(float(lams.mean()) - 0.5) < 0.03 and abs(float(lams.var()) - 1 / 10.4) < 0.01
    assert draw_mix(8, 8, 0.0, 0.0) is None
    assert {draw_mix(8, 8, 0.8, 0.0).kind for _ in range(20)} == {"mixup"}


def test_smoothing_values_of_both_forms() -> None:
    assert smoothing_values(1000, 0.1, "big_vision") == pytest.approx((0.9, 1e-4))  # the official on/off
    assert smoothing_values(1000, 0.1, "torch") == pytest.approx((0.9001, 1e-4))
    assert smoothing_values(10, 0.0) == (1.0, 0.0)


@pytest.mark.parametrize("style", ["torch", "big_vision"])
@pytest.mark.parametrize("lam, eps", [(1.0, 0.0), (1.0, 0.1), (0.37, 0.0), (0.37, 0.2)])
def test_mixed_cross_entropy_equals_the_dense_targets(style: str, lam: float, eps: float) -> None:
    torch.manual_seed(2)
    logits, labels = torch.randn(6, 7, dtype=torch.float64), torch.randint(0, 7, (6,))
    on, off = smoothing_values(7, eps, style)
    expected = -(dense_targets(labels, 7, lam, on, off) * F.log_softmax(logits, -1)).sum(-1).mean()
    got = mixed_cross_entropy(logits.double(), labels, lam, eps, style)
    assert math.isclose(float(got), float(expected), rel_tol=1e-5)


def test_torch_form_equals_torch_label_smoothing() -> None:
    torch.manual_seed(3)
    logits, labels = torch.randn(5, 9), torch.randint(0, 9, (5,))
    expected = F.cross_entropy(logits, labels, label_smoothing=0.1)
    torch.testing.assert_close(mixed_cross_entropy(logits, labels, 1.0, 0.1, "torch"), expected)
    big_vision = mixed_cross_entropy(logits, labels, 1.0, 0.1, "big_vision")
    assert not torch.allclose(big_vision, expected)  # the true class gets 0.9, not 0.9 + 0.1/9
