"""crate_edu.train.checkpoint: the run folder's checkpoint and metrics files."""

from __future__ import annotations

import json
import math
import random

import numpy as np
import pytest
import torch

from crate_edu.train.checkpoint import (
    CHECKPOINT_FORMAT,
    CHECKPOINT_NAME,
    append_jsonl,
    load_checkpoint,
    read_jsonl,
    rng_state,
    save_checkpoint,
    set_rng_state,
    write_jsonl,
)
from crate_edu.weights import CheckpointError


def test_save_then_load_from_the_run_folder(tmp_path):
    save_checkpoint({"epoch": 3, "w": torch.arange(4.0)}, tmp_path / CHECKPOINT_NAME)
    ckpt = load_checkpoint(tmp_path)
    assert ckpt["format"] == CHECKPOINT_FORMAT and ckpt["epoch"] == 3
    assert torch.equal(ckpt["w"], torch.arange(4.0))


def test_a_plain_state_dict_is_not_a_training_checkpoint(tmp_path):
    torch.save({"w": torch.zeros(1)}, tmp_path / "sd.pt")
    with pytest.raises(CheckpointError, match="not a crate_edu training checkpoint"):
        load_checkpoint(tmp_path / "sd.pt")


def test_an_unreadable_file_names_the_fix_for_a_run(tmp_path):
    (tmp_path / CHECKPOINT_NAME).write_bytes(b"\x80\x02 torn")
    with pytest.raises(CheckpointError, match="legacy format.*checkpoint.pt of a run folder"):
        load_checkpoint(tmp_path)


def test_metrics_are_strict_json_lines(tmp_path):
    path = tmp_path / "metrics.jsonl"
    write_jsonl(path, [{"epoch": 1, "loss": math.nan}])
    append_jsonl(path, {"epoch": 2, "loss": math.inf, "acc": [0.5, -math.inf]})
    assert [json.loads(line) for line in path.read_text().splitlines()] == read_jsonl(path)
    assert read_jsonl(path) == [{"epoch": 1, "loss": None}, {"epoch": 2, "loss": None, "acc": [0.5, None]}]
    assert read_jsonl(tmp_path / "none.jsonl") == []


def test_generators_come_back_through_a_checkpoint(tmp_path):
    save_checkpoint({"rng": rng_state()}, tmp_path / CHECKPOINT_NAME)
    first = (random.random(), np.random.rand(), torch.rand(1).item())
    set_rng_state(load_checkpoint(tmp_path)["rng"])
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == first
