"""crate_edu.evaluation.throughput: measured training and inference speed."""

from __future__ import annotations

import pytest
import torch

import crate_edu
from crate_edu.evaluation.throughput import inference_throughput, measure_throughput, train_throughput


def _tiny(name: str = "crate_nano_cifar", **kw):
    torch.manual_seed(0)
    return crate_edu.create_model(name, depth=1, dim=32, heads=2, patch_size=8, num_classes=5, **kw)


def test_train_throughput_leaves_the_model_untouched():
    model = _tiny()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    tp = train_throughput(model, batch_size=4, steps=2, warmup=1)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert tp.mode == "train" and tp.batch_size == 4 and tp.steps == 2 and tp.image_size == 32
    assert tp.images_per_second > 0
    assert tp.images_per_second == pytest.approx(tp.batch_size / tp.seconds_per_step)
    assert "images/s" in tp.describe() and "fp32" in tp.describe()


def test_inference_throughput_bf16_restores_mode():
    model = _tiny().train()
    tp = inference_throughput(model, batch_size=2, steps=1, warmup=0, precision="bf16")
    assert tp.mode == "inference" and tp.precision == "bf16" and model.training


def test_throughput_errors():
    model = _tiny()
    with pytest.raises(ValueError, match="unknown mode"):
        measure_throughput(model, mode="eval")
    with pytest.raises(ValueError, match="fp16 autocast needs a GPU"):
        measure_throughput(model, precision="fp16", device="cpu")
    with pytest.raises(ValueError, match="steps must be an integer >= 1"):
        measure_throughput(model, steps=0)
    with pytest.raises(ValueError, match="unknown precision"):
        measure_throughput(model, precision="fp8")


def test_a_rectangular_image_size():
    """image_size=(16, 32) (allowed by every classifier's config) times (B, 3, 16, 32) images."""
    model = _tiny(image_size=(16, 32))
    tp = inference_throughput(model, batch_size=2, steps=1, warmup=0)
    assert tp.image_size == (16, 32) and "16x32 px" in tp.describe()
    assert train_throughput(model, batch_size=2, steps=1, warmup=0).image_size == (16, 32)
