"""crate_edu.device: the one place for devices and precision (the trainer's rule, the notebooks'
one-line report, autocast and sync)."""

from __future__ import annotations

import pytest
import torch

import crate_edu.device as device
from crate_edu.errors import ConfigError


def test_one_set_of_precisions():
    assert device.PRECISIONS == ("auto", "no", "fp16", "bf16")
    assert set(device.PRECISION_DTYPES) == set(device.PRECISIONS) - {"auto"}
    assert device.PRECISION_DTYPES["no"] is torch.float32


def test_pick_device_unchanged(capsys):
    dev = device.pick_device()
    assert isinstance(dev, torch.device)
    assert capsys.readouterr().out.strip() == f"device: {dev}"


@pytest.mark.parametrize(
    ("kind", "bf16", "expected"),
    [
        ("cuda", True, "bf16"),
        ("cuda", False, "fp16"),
        ("xla", None, "bf16"),
        ("mps", None, "no"),
        ("cpu", None, "no"),
    ],
)
def test_precision_for(kind, bf16, expected):
    assert device.precision_for(kind, bf16_supported=bf16) == expected


@pytest.mark.parametrize("kind", ["xla", "mps", "cpu"])
def test_precision_for_matches_the_trainers_auto(kind, monkeypatch):
    monkeypatch.delenv("ACCELERATE_MIXED_PRECISION", raising=False)
    assert device.precision_for(kind) == device.resolve_precision("auto", kind)


def test_precision_for_rejects_unknown_kind():
    with pytest.raises(ValueError, match="unknown device kind 'tpu'"):
        device.precision_for("tpu")


def test_resolve_precision(monkeypatch):
    monkeypatch.delenv("ACCELERATE_MIXED_PRECISION", raising=False)
    assert device.resolve_precision("auto", "cpu") == "no"
    assert device.resolve_precision("no", "cpu") == "no"
    assert device.resolve_precision("bf16", "cpu") == "bf16"
    assert device.resolve_precision("bf16", "xla") == "bf16"
    monkeypatch.setenv("ACCELERATE_MIXED_PRECISION", "bf16")  # what `accelerate launch` sets
    assert device.resolve_precision("auto", "cpu") == "bf16"
    with pytest.raises(ConfigError, match="fp16 needs a GPU, but this process runs on cpu"):
        device.resolve_precision("fp16", "cpu")
    monkeypatch.setattr(device, "_bf16_supported_on_cuda", lambda: False)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *a: "Old GPU")
    with pytest.raises(ConfigError, match=r"not supported by this GPU \(Old GPU\)"):
        device.resolve_precision("bf16", "cuda")
    assert device.auto_precision("cuda") == "fp16"


@pytest.mark.parametrize(
    ("value", "forced"), [("1", True), (" True ", True), ("yes", True), ("0", False), ("", False)]
)
def test_the_trainer_and_the_notebooks_read_accelerate_use_cpu_alike(monkeypatch, value, forced):
    monkeypatch.setenv("ACCELERATE_USE_CPU", value)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # a GPU is there ...
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *a: "Fake GPU")
    monkeypatch.setattr(device, "precision_for", lambda kind, **kw: "bf16")
    assert device.cpu_only() is forced  # ... and the variable decides, for the trainer
    assert device.detect_device().kind == ("cpu" if forced else "cuda")  # and for the notebooks


def test_detect_device_forced_cpu(monkeypatch, capsys):
    monkeypatch.setenv("ACCELERATE_USE_CPU", "1")
    choice = device.setup_device()
    assert choice.kind == "cpu" and choice.device == torch.device("cpu")
    assert choice.precision == "no" and choice.dtype == torch.float32 and choice.is_cpu
    assert capsys.readouterr().out.strip() == "device: cpu (no GPU or TPU found), precision: fp32"


def test_detect_device_prefers_cuda(monkeypatch):
    monkeypatch.delenv("ACCELERATE_USE_CPU", raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *a: "Fake GPU")
    monkeypatch.setattr(device, "precision_for", lambda kind, **kw: "fp16")
    choice = device.detect_device()
    assert (choice.kind, choice.name, choice.precision, choice.dtype) == (
        "cuda",
        "Fake GPU",
        "fp16",
        torch.float16,
    )
    assert "fp16 mixed precision + loss scaling" in choice.describe()


def test_detect_device_tpu_before_mps(monkeypatch):
    monkeypatch.delenv("ACCELERATE_USE_CPU", raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(device, "xla_device", lambda: torch.device("cpu"))  # stands in for xla:0
    choice = device.detect_device()
    assert choice.kind == "xla" and choice.precision == "bf16" and choice.dtype == torch.bfloat16


def test_autocast_sync_and_sum_dtype_on_cpu():
    cpu = torch.device("cpu")
    x = torch.randn(4, 4)
    with device.autocast(cpu, "no"):
        assert (x @ x).dtype == torch.float32
    with device.autocast(cpu, "bf16"):
        assert (x @ x).dtype == torch.bfloat16
    device.sync(cpu)  # nothing to wait for; must not fail
    assert device.sum_dtype(cpu) == torch.float64
    assert device.sum_dtype(torch.device("mps")) == torch.float32
