"""crate_edu.notebook: quick mode, checks, and the run-time helpers of the training notebooks (05, 06).

The device and precision helpers they use live in crate_edu.device (tests/unit/test_device.py)."""

from __future__ import annotations

import os
import subprocess
import sys
import warnings

import pytest
import torch

from crate_edu import notebook as nb
from crate_edu.device import DeviceChoice


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
        cuda_choice = DeviceChoice(torch.device("cuda"), "cuda", "GPU", "bf16")
        assert nb.warn_if_long_on_cpu(cuda_choice, 1e9) is None
