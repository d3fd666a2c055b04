"""crate_edu.notebook: quick mode, checks, and the device / precision / run-time helpers of the
training notebooks (05, 06)."""

from __future__ import annotations

import os
import subprocess
import sys
import warnings

import pytest
import torch

from crate_edu import notebook as nb
from crate_edu.train.loop import resolve_precision


@pytest.mark.parametrize(
    ("value", "quick"),
    [("1", True), ("true", True), (" Yes ", True), ("ON", True), ("0", False), ("", False), ("no", False)],
)
def test_read_quick_env(value, quick):
    assert nb.read_quick_env({"CRATE_EDU_QUICK": value}) is quick
    assert nb.read_quick_env({}) is False


@pytest.mark.parametrize("quick", [True, False])
def test_choose_and_quick_mode_follow_the_one_reading(monkeypatch, quick):
    """choose() and quick_mode() answer from QUICK; the variable changed later does not count."""
    monkeypatch.setattr(nb, "QUICK", quick)
    monkeypatch.setenv("CRATE_EDU_QUICK", "0" if quick else "1")  # the opposite, after the reading
    assert nb.quick_mode() is quick
    assert nb.choose(quick="q", full="f") == ("q" if quick else "f")


def test_mode_is_read_once_at_import():
    """In a fresh interpreter: the import reads the variable; changing it afterwards changes nothing
    until the module is imported again (a kernel restart)."""
    code = (
        "import importlib, os\n"
        "import crate_edu.notebook as nb\n"
        "first = (nb.QUICK, nb.quick_mode(), nb.choose(1, 2))\n"
        "os.environ['CRATE_EDU_QUICK'] = '0'\n"
        "later = (nb.QUICK, nb.quick_mode(), nb.choose(1, 2))\n"
        "importlib.reload(nb)\n"
        "print(first, later, (nb.QUICK, nb.quick_mode(), nb.choose(1, 2)))\n"
    )
    env = {**os.environ, "CRATE_EDU_QUICK": "yes"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "(True, True, 1) (True, True, 1) (False, False, 2)"


def test_check_close_and_check_raise_on_failure(capsys):
    nb.check_close("equal", torch.ones(3), torch.ones(3), atol=1e-9)
    assert "✓ equal" in capsys.readouterr().out
    with pytest.raises(AssertionError, match="exceeds tolerance"):
        nb.check_close("different", torch.ones(3), torch.zeros(3), atol=1e-3)
    with pytest.raises(AssertionError, match="shapes differ"):
        nb.check_close("shapes", torch.ones(3), torch.ones(4))
    with pytest.raises(AssertionError, match="failed: why"):
        nb.check("false", False, "why")


def test_pick_device_unchanged(capsys):
    device = nb.pick_device()
    assert isinstance(device, torch.device)
    assert capsys.readouterr().out.strip() == f"device: {device}"


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
    assert nb.precision_for(kind, bf16_supported=bf16) == expected


@pytest.mark.parametrize("kind", ["xla", "mps", "cpu"])
def test_precision_for_matches_the_trainers_auto(kind, monkeypatch):
    monkeypatch.delenv("ACCELERATE_MIXED_PRECISION", raising=False)
    assert nb.precision_for(kind) == resolve_precision("auto", kind)


def test_precision_for_rejects_unknown_kind():
    with pytest.raises(ValueError, match="unknown device kind 'tpu'"):
        nb.precision_for("tpu")


def test_detect_device_forced_cpu(monkeypatch, capsys):
    monkeypatch.setenv("ACCELERATE_USE_CPU", "1")
    choice = nb.setup_device()
    assert choice.kind == "cpu" and choice.device == torch.device("cpu")
    assert choice.precision == "no" and choice.dtype == torch.float32 and choice.is_cpu
    assert capsys.readouterr().out.strip() == "device: cpu (no GPU or TPU found), precision: fp32"


def test_detect_device_prefers_cuda(monkeypatch):
    monkeypatch.delenv("ACCELERATE_USE_CPU", raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *a: "Fake GPU")
    monkeypatch.setattr(nb, "precision_for", lambda kind, **kw: "fp16")
    choice = nb.detect_device()
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
    monkeypatch.setattr(nb, "_xla_device", lambda: torch.device("cpu"))  # stands in for xla:0
    choice = nb.detect_device()
    assert choice.kind == "xla" and choice.precision == "bf16" and choice.dtype == torch.bfloat16


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(0, "0 s"), (45.4, "45 s"), (600, "10 min"), (5400, "1.5 h"), (3 * 86400, "3.0 days")],
)
def test_format_duration(seconds, text):
    assert nb.format_duration(seconds) == text


def test_format_duration_rejects_bad_input():
    with pytest.raises(ValueError, match="finite number of seconds"):
        nb.format_duration(float("inf"))


def test_estimate_run_seconds():
    assert nb.estimate_run_seconds(50_000, 100, 1000.0) == pytest.approx(5000.0)
    with pytest.raises(ValueError, match="images_per_second must be positive"):
        nb.estimate_run_seconds(10, 1, 0.0)
    with pytest.raises(ValueError, match="must be >= 0"):
        nb.estimate_run_seconds(-1, 1, 1.0)


def test_warn_if_long_on_cpu():
    with pytest.warns(UserWarning, match="about 2.0 h on this CPU"):
        msg = nb.warn_if_long_on_cpu("cpu", 7200, what="the run")
    assert msg is not None and msg.startswith("the run is estimated")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no warning at all below
        assert nb.warn_if_long_on_cpu("cpu", 60) is None
        cuda_choice = nb.DeviceChoice(torch.device("cuda"), "cuda", "GPU", "bf16")
        assert nb.warn_if_long_on_cpu(cuda_choice, 1e9) is None
