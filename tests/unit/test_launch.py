"""crate_edu.launch: a launch command line, read as the processes it starts and the config they train."""

from __future__ import annotations

import shlex

import pytest

import crate_edu.train
from crate_edu import cli
from crate_edu.errors import ConfigError
from crate_edu.launch import LaunchCommand, read_launch_command


class _Captured(Exception):
    """Raised by the stand-in for ``train``: carries the config `crate-edu train` would run."""

    def __init__(self, cfg):
        super().__init__("captured")
        self.cfg = cfg


@pytest.mark.parametrize(
    "arguments",
    [
        "train --out x",
        "train --recipe imagenet --dataset imagenet-100 --data-dir /data/imagenet --grad-accum 8 --out x",
        "train --recipe cifar10-scratch --depth 4 --patch-size 8 --lr 0.002 --no-download --batch-size 64 "
        "--precision bf16 --out x",
        "train --model vit_tiny_cifar --dataset digits --epochs 2 --grad-clip 0 --pool mean --out x",
        "train --recipe finetune --pretrained w.pth --dataset cifar100 --out x",
    ],
)
def test_the_config_is_the_one_crate_edu_train_runs(monkeypatch, arguments):
    def fake_train(cfg, *args, **kwargs):
        raise _Captured(cfg)

    monkeypatch.setattr(crate_edu.train, "train", fake_train)
    with pytest.raises(_Captured) as ran:
        cli.main(shlex.split(arguments))
    read = read_launch_command("crate-edu " + arguments)
    assert read.config == ran.value.cfg
    assert read.processes == 1


@pytest.mark.parametrize(
    ("launcher", "processes"),
    [
        ("crate-edu", 1),
        ("python -m crate_edu", 1),
        ("accelerate launch --num_processes 4 --mixed_precision bf16 -m crate_edu", 4),
        ("accelerate launch --multi_gpu --num_processes=2 -m crate_edu", 2),
        ("torchrun --standalone --nproc_per_node 8 -m crate_edu", 8),
        ("torchrun --nnodes 2 --nproc-per-node=4 -m crate_edu", 8),
    ],
)
def test_processes_come_from_the_launcher(launcher, processes):
    run = read_launch_command(f"{launcher} train --recipe imagenet --grad-accum 2")
    assert run.processes == processes
    assert run.images_per_pass == 2048 // (processes * 2)
    assert read_launch_command(shlex.split(f"{launcher} train --recipe imagenet --grad-accum 2")) == run


def test_a_launch_command_is_a_value():
    run = read_launch_command("crate-edu train --recipe digits-quick")
    assert isinstance(run, LaunchCommand) and run == read_launch_command(["crate-edu", "train"])


@pytest.mark.parametrize(
    ("command", "message"),
    [
        ("ls -l", r"'ls -l' does not run `crate-edu train`"),
        ("crate-edu train --grad-accum eight", r"argument --grad-accum: invalid int value: 'eight'"),
        ("crate-edu train --no-such-flag", r"unrecognized arguments: --no-such-flag"),
        ("crate-edu train --recipe nope", r"unknown recipe 'nope'"),
        ("crate-edu train --batch-size 0", r"batch-size must be a positive integer, got 0"),
        ("torchrun --nproc_per_node gpu -m crate_edu train", r"--nproc_per_node 'gpu': give the number"),
        ("accelerate launch --num_processes 0 -m crate_edu train", r"--num_processes '0': give the number"),
    ],
)
def test_bad_commands_are_refused_in_one_line(command, message, capsys):
    with pytest.raises(ConfigError, match=message) as refused:
        read_launch_command(command)
    assert "\n" not in str(refused.value)
    assert capsys.readouterr().err == ""  # the parser's own line goes into the error, not to stderr
