"""crate_edu.weights.reader: the one safe reader of checkpoint files."""

from __future__ import annotations

import pytest
import torch

from crate_edu.weights import CheckpointError, read_checkpoint_file, read_state_dict


def test_nested_wrappers_and_prefixes_are_removed(tmp_path):
    sd = {"a.weight": torch.ones(2), "b": torch.zeros(3)}
    wrapped = {"state_dict": {"model": {f"module._orig_mod.{k}": v for k, v in sd.items()}}, "epoch": 1}
    torch.save(wrapped, tmp_path / "w.pth")
    got = read_state_dict(tmp_path / "w.pth")
    assert list(got) == list(sd) and all(torch.equal(got[k], v) for k, v in sd.items())


def test_the_callers_hint_says_what_to_do(tmp_path):
    (tmp_path / "x.pt").write_bytes(b"PK\x03\x04" + b"\0" * 60)  # a zip header, then nothing
    with pytest.raises(CheckpointError, match=r"damaged or truncated .*zip format.*; start again$"):
        read_checkpoint_file(tmp_path / "x.pt", hint="start again")
