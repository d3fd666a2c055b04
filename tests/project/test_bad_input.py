"""The sweep of bad input and faults: every one ends in ONE line naming the problem and the fix.

The project's rule (README, ``crate_edu/cli.py``): on the command line a bad input or a fault is one
line on stderr, exit status 2, never a traceback; in the Python API it is an exception of a specific
class whose message is that one line; and nothing is lost (atomic writes: the last good file survives
any failure, and no file is left behind). This file keeps the whole sweep as tests:

- the CLI: every command and flag with wrong types, out-of-range and non-finite values, missing,
  damaged, unsafe and wrong files (in-process ``crate_edu.cli.main``, so the sweep is fast);
- the API: ``create_model`` and its overrides, models' ``forward`` (shapes, dtypes, empty batches),
  ``load_official``, ``load_weights``, ``build_dataset``, ``train``, ``evaluate``;
- faults: a full disk, a read-only folder, a killed writer, a run that diverges.

Files that would run code when unpickled (a crafted CIFAR batch, a crafted checkpoint) create a
marker file if their payload ever runs; every test checks that it does not exist. Each CLI case also
checks that no file in the shared workspace changed and that nothing was left in the working folder.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import pickle
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch

import crate_edu
import crate_edu.weights.atomic as atomic_module
from crate_edu.cli import main
from crate_edu.data import DatasetUnavailableError, build_dataset, fetch_dataset
from crate_edu.train import RECIPES, evaluate, fit, load_checkpoint, train
from crate_edu.train.checkpoint import CHECKPOINT_FORMAT, atomic_write_bytes, save_checkpoint
from crate_edu.train.config import ConfigError
from crate_edu.weights.official import CheckpointError
from tests.support.fake_datasets import dump_py2, write_cifar

TINY = ["--depth", "1", "--dim", "32", "--heads", "2", "--patch-size", "8", "--threads", "1"]
QUICK = ["--limit-train", "64", "--limit-test", "32", "--batch-size", "32", "--epochs", "1", "--no-progress"]
TINY_MODEL = {"depth": 1, "dim": 32, "heads": 2, "patch_size": 8}


@pytest.fixture(autouse=True)
def _on_the_cpu(monkeypatch):
    monkeypatch.setenv("ACCELERATE_USE_CPU", "1")


# --------------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------------


def run_cli(args: list[str], capsys) -> tuple[int, str, str]:
    """Exit status, stdout and stderr of ``crate-edu ARGS`` run in this process."""
    try:
        code = main(args)
    except SystemExit as e:  # argparse
        code = e.code
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_line(code: int, err: str, expected: tuple[str, ...]) -> str:
    """Exit status 2, one line on stderr, no traceback, every expected fragment in it."""
    assert code == 2, f"exit status {code}: {err}"
    assert "Traceback" not in err, err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("crate-edu"), lines[0]
    for text in expected:
        assert text in lines[0], f"{text!r} not in {lines[0]!r}"
    return lines[0]


def assert_one_line_message(exc: BaseException, *expected: str) -> str:
    """The API form of the rule: the message is one non-empty line holding every fragment."""
    message = str(exc)
    assert message.strip() and "\n" not in message, repr(message)
    for text in expected:
        assert text in message, f"{text!r} not in {message!r}"
    return message


def snapshot(root: Path) -> dict[str, str]:
    """Every file under ``root`` with its sha256 (folders as ``'dir'``): to show nothing changed."""
    state = {}
    for p in sorted(root.rglob("*")):
        rel = str(p.relative_to(root))
        state[rel] = hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir"
    return state


def strict_json(line: str) -> dict:
    """Parse a line as standard JSON: NaN and Infinity are refused."""

    def refuse(token: str):
        raise ValueError(f"non-standard JSON token {token}")

    return json.loads(line, parse_constant=refuse)


class Payload:
    """Unpickling this runs ``open(marker, 'w')``: the marker file shows that the payload ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


# --------------------------------------------------------------------------------------------------
# The shared workspace: a finished run, genuine and crafted files
# --------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ws(tmp_path_factory) -> Path:
    """A folder of inputs that every case may read and none may change."""
    root = tmp_path_factory.mktemp("bad_input")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("ACCELERATE_USE_CPU", "1")
        assert main(["train", "--out", str(root / "run"), *TINY, *QUICK]) == 0
    ckpt = load_checkpoint(root / "run")
    marker = root / "PAYLOAD_RAN"

    # checkpoints that cannot be read, or hold the wrong thing
    (root / "text.pt").write_text('{"model": "crate_nano_cifar"}\n')
    (root / "random.pt").write_bytes(
        np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes()
    )
    (root / "empty.pt").write_bytes(b"")
    (root / "html.pt").write_bytes(b"<!DOCTYPE html><html><title>Google Drive</title></html>")
    good = (root / "run" / "checkpoint.pt").read_bytes()
    (root / "trunc_zip.pt").write_bytes(good[: len(good) // 2])
    torch.save(ckpt, root / "legacy.pt", _use_new_zipfile_serialization=False)
    legacy = (root / "legacy.pt").read_bytes()
    (root / "trunc_legacy.pt").write_bytes(legacy[: len(legacy) // 2])
    torch.save({**ckpt, "extra": Payload(marker)}, root / "unsafe.pt")
    torch.save(
        {**ckpt, "extra": Payload(marker)}, root / "unsafe_legacy.pt", _use_new_zipfile_serialization=False
    )
    torch.save(ckpt["model"], root / "state_dict.pt")
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in ckpt["model"].items()}, root / "plain.safetensors")
    (root / "emptydir").mkdir()
    (root / "dir.safetensors").mkdir()

    # exported weights: a good file, one with a flipped tensor byte, one whose header is damaged
    from crate_edu.train import export_run

    export_run(root / "run", root / "good.safetensors")
    blob = bytearray((root / "good.safetensors").read_bytes())
    blob[-5] ^= 0xFF
    (root / "corrupt.safetensors").write_bytes(bytes(blob))

    # CIFAR-10 folders: genuine, a crafted batch, a crafted meta file, a truncated batch
    for name in ("cifar_good", "cifar_evil", "cifar_evil_meta", "cifar_trunc", "cifar_shape"):
        write_cifar(root / name, "cifar10")
    folder = "cifar-10-batches-py"
    with open(root / "cifar_evil" / folder / "data_batch_1", "wb") as fh:
        pickle.dump({"data": Payload(marker), "labels": [0] * 4}, fh, protocol=2)
    with open(root / "cifar_evil" / folder / "test_batch", "wb") as fh:
        pickle.dump({"data": Payload(marker), "labels": [0] * 4}, fh, protocol=2)
    with open(root / "cifar_evil_meta" / folder / "batches.meta", "wb") as fh:
        pickle.dump({"label_names": Payload(marker)}, fh)
    for split in ("data_batch_1", "test_batch"):
        raw = (root / "cifar_trunc" / folder / split).read_bytes()
        (root / "cifar_trunc" / folder / split).write_bytes(raw[: len(raw) // 3])
        dump_py2(
            {"data": np.zeros((4, 100), np.uint8), "labels": [0] * 4}, root / "cifar_shape" / folder / split
        )
    return root


@pytest.fixture(autouse=True)
def _payload_marker_cleared(ws):
    """Each test checks that no crafted payload ran; the marker is cleared after every test, so
    that one payload that ran fails only the test that ran it."""
    yield
    (ws / "PAYLOAD_RAN").unlink(missing_ok=True)


@pytest.fixture
def cwd(tmp_path, monkeypatch) -> Path:
    """An empty working folder: nothing may be left in it."""
    work = tmp_path / "cwd"
    work.mkdir()
    monkeypatch.chdir(work)
    return work


@pytest.fixture
def no_data_loading(monkeypatch):
    """Fail loudly if a run gets as far as loading its data."""
    import crate_edu.train.loop as loop

    def refuse(cfg):
        raise AssertionError("the data was loaded before the bad input was reported")

    monkeypatch.setattr(loop, "build_datasets", refuse)


# --------------------------------------------------------------------------------------------------
# The CLI sweep
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    args: tuple[str, ...]
    expected: tuple[str, ...]
    before_data: bool = False  # the error must come before any data is loaded

    def argv(self, ws: Path, cwd: Path) -> list[str]:
        return [a.format(ws=ws, cwd=cwd) for a in self.args]


def _train(*extra: str, expected: tuple[str, ...] | str, before_data: bool = True) -> Case:
    exp = (expected,) if isinstance(expected, str) else expected
    return Case(("train", "--out", "{cwd}/r", *TINY, *QUICK, *extra), exp, before_data)


INT_FLAGS = [
    "--epochs", "--batch-size", "--grad-accum", "--eval-batch-size", "--seed", "--image-size",
    "--num-workers", "--threads", "--limit-train", "--limit-test", "--depth", "--dim", "--heads",
    "--patch-size", "--block-size",
]  # fmt: skip
FLOAT_FLAGS = [
    "--lr", "--weight-decay", "--momentum", "--warmup-epochs", "--min-lr-ratio", "--label-smoothing",
    "--grad-clip", "--dropout", "--min-lr", "--mixup-alpha", "--cutmix-alpha", "--mix-switch-prob",
    "--randaugment-magnitude",
]  # fmt: skip

CLI_CASES: dict[str, Case] = {}
for flag in INT_FLAGS:
    for bad in ("x", "1.5"):
        CLI_CASES[f"train {flag} {bad}"] = _train(
            flag, bad, expected=(f"argument {flag}", "invalid int value")
        )
for flag in FLOAT_FLAGS:
    for bad in ("nan", "inf", "-inf", "1e999"):  # --lr=-inf: argparse reads a lone -inf as an option
        CLI_CASES[f"train {flag} {bad}"] = _train(
            f"{flag}={bad}", expected=(f"argument {flag}", "not a finite number")
        )
    CLI_CASES[f"train {flag} abc"] = _train(flag, "abc", expected=(f"argument {flag}", "invalid number"))
CLI_CASES.update(
    {
        # out of range
        "train --epochs 0": _train("--epochs", "0", expected="epochs must be a positive integer, got 0"),
        "train --mix-switch-prob 1.5": _train(
            "--mix-switch-prob", "1.5", expected="mix-switch-prob in [0, 1]"
        ),
        "train --mixup-alpha -1": _train("--mixup-alpha=-1", expected="must be 0 (off) or positive"),
        "train --min-lr -1": _train("--min-lr=-1", expected="min-lr must be in [0, lr"),
        "train --randaugment-magnitude 99": _train(
            "--augment",
            "randaugment",
            "--randaugment-magnitude",
            "99",
            expected="randaugment-magnitude must be in",
        ),
        "train --decay-mask bogus": _train(
            "--decay-mask", "bogus", expected="unknown weight-decay mask 'bogus'"
        ),
        "train --smoothing-style bogus": _train(
            "--smoothing-style", "bogus", expected="unknown label-smoothing style 'bogus'"
        ),
        "train --batch-size 0": _train("--batch-size", "0", expected="batch-size must be a positive integer"),
        "train --batch-size -8": _train(
            "--batch-size", "-8", expected="batch-size must be a positive integer"
        ),
        "train --grad-accum 0": _train("--grad-accum", "0", expected="grad-accum must be a positive integer"),
        "train --grad-accum 3": _train("--grad-accum", "3", expected="must be a multiple of grad-accum 3"),
        "train --eval-batch-size 0": _train(
            "--eval-batch-size", "0", expected="eval-batch-size must be a positive"
        ),
        "train --limit-train 0": _train(
            "--limit-train", "0", expected="limit-train must be a positive integer"
        ),
        "train --limit-test -1": _train(
            "--limit-test", "-1", expected="limit-test must be a positive integer"
        ),
        "train --image-size 0": _train("--image-size", "0", expected="image-size must be a positive integer"),
        "train --image-size 30": _train("--image-size", "30", expected="not divisible by patch size 8"),
        "train --threads 0": _train("--threads", "0", expected="threads must be a positive integer"),
        "train --num-workers -1": _train("--num-workers", "-1", expected="num-workers must be 0 or more"),
        "train --seed -1": _train("--seed", "-1", expected="seed must be an integer from 0 to 2**32 - 1"),
        "train --seed 2**32": _train(
            "--seed", str(2**32), expected="seed must be an integer from 0 to 2**32 - 1"
        ),
        "train --depth 0": _train("--depth", "0", expected="depth must be a positive integer, got 0"),
        "train --depth -3": _train("--depth", "-3", expected="depth must be a positive integer, got -3"),
        "train --dim 0": _train("--dim", "0", expected="dim must be a positive integer, got 0"),
        "train --heads 0": _train("--heads", "0", expected="heads must be a positive integer, got 0"),
        "train --heads 3": _train(
            "--heads", "3", expected=("dim 32 is not divisible by heads 3", "choose heads")
        ),
        "train --patch-size 0": _train("--patch-size", "0", expected="patch_size must be a positive integer"),
        "train --patch-size 5": _train("--patch-size", "5", expected="not divisible by patch size 5"),
        "train --lr 0": _train("--lr", "0", expected="lr must be positive"),
        "train --lr -1": _train("--lr", "-1", expected="lr must be positive"),
        "train --weight-decay -0.1": _train(
            "--weight-decay", "-0.1", expected="weight-decay must be 0 or more"
        ),
        "train --momentum 1": _train("--momentum", "1", expected="momentum must be in [0, 1)"),
        "train --momentum -0.5": _train("--momentum", "-0.5", expected="momentum must be in [0, 1)"),
        "train --warmup-epochs -1": _train(
            "--warmup-epochs", "-1", expected="warmup-epochs must be between 0"
        ),
        "train --warmup-epochs 5": _train(
            "--warmup-epochs", "5", expected="warmup-epochs must be between 0 and"
        ),
        "train --min-lr-ratio 1.5": _train(
            "--min-lr-ratio", "1.5", expected="min-lr-ratio must be in [0, 1]"
        ),
        "train --min-lr-ratio -0.1": _train(
            "--min-lr-ratio", "-0.1", expected="min-lr-ratio must be in [0, 1]"
        ),
        "train --label-smoothing 1": _train(
            "--label-smoothing", "1", expected="label-smoothing must be in [0, 1)"
        ),
        "train --label-smoothing -0.1": _train(
            "--label-smoothing", "-0.1", expected="label-smoothing must be in"
        ),
        "train --grad-clip -1": _train("--grad-clip", "-1", expected="grad-clip must be positive"),
        "train --dropout 1": _train("--dropout", "1", expected="dropout must be in [0, 1)"),
        "train --dropout -0.1": _train("--dropout", "-0.1", expected="dropout must be in [0, 1)"),
        # names
        "train --model": _train(
            "--model", "crate_huge", expected=("unknown model 'crate_huge'", "choose one of")
        ),
        "train --model mae": _train("--model", "crate_mae_tiny", expected="masked autoencoder"),
        "train --dataset": _train(
            "--dataset", "mnist", expected=("unknown dataset 'mnist'", "choose one of")
        ),
        "train --recipe": _train(
            "--recipe", "imagenet1k", expected=("did you mean imagenet", "choose one of")
        ),
        "train --optimizer": _train("--optimizer", "adam", expected="choose one of: lion, adamw, sgd"),
        "train --precision fp8": _train("--precision", "fp8", expected="unknown precision 'fp8'"),
        "train --precision fp16": _train(
            "--precision", "fp16", expected=("fp16 needs a GPU", "--precision no")
        ),
        "train --augment": _train("--augment", "mixup", expected="unknown augmentation policy 'mixup'"),
        "train --normalize": _train("--normalize", "cifar", expected="unknown normalisation 'cifar'"),
        "train --pool": _train("--pool", "max", expected="pool must be 'cls'"),
        "train --data-on-device": _train("--data-on-device", "maybe", expected="invalid choice: 'maybe'"),
        "train --compile ''": _train("--compile", "", expected="compile must name a torch.compile backend"),
        "train --recipe finetune": Case(("train", "--recipe", "finetune"), ("pass --pretrained PATH",), True),
        # language models: a corpus, a tokenizer, no image options
        "train text --tokenizer": Case(
            ("train", "--out", "{cwd}/r", "--recipe", "text-quick", "--tokenizer", "words"),
            ("unknown tokenizer 'words'", "choose one of"),
            True,
        ),
        "train text --dataset": Case(
            ("train", "--out", "{cwd}/r", "--recipe", "text-quick", "--dataset", "digits"),
            ("language model and trains on a text corpus", "python-docs"),
            True,
        ),
        "train text --augment": Case(
            ("train", "--out", "{cwd}/r", "--recipe", "text-quick", "--augment", "shift"),
            ("augment is an image option",),
            True,
        ),
        "train text --block-size": Case(
            ("train", "--out", "{cwd}/r", "--recipe", "text-quick", "--block-size", "0"),
            ("model 'crate_lm_char'", "block_size"),
            True,
        ),
        "train text corpus missing": Case(
            (
                "train",
                "--out",
                "{cwd}/r",
                "--recipe",
                "text-quick",
                "--dataset",
                "tiny-shakespeare",
                "--no-download",
                "--data-dir",
                "{cwd}/empty",
            ),
            ("tiny-shakespeare", "--download"),
            False,
        ),
        # --pretrained: missing, unreadable, unsafe
        "train --pretrained missing": _train(
            "--pretrained", "nowhere.pth", expected="no such file, and not the key"
        ),
        "train --pretrained text": _train(
            "--pretrained", "{ws}/text.pt", expected=("--pretrained", "is a text file")
        ),
        "train --pretrained random": _train("--pretrained", "{ws}/random.pt", expected="unrecognised bytes"),
        "train --pretrained empty": _train("--pretrained", "{ws}/empty.pt", expected="is empty"),
        "train --pretrained trunc": _train(
            "--pretrained", "{ws}/trunc_zip.pt", expected="damaged or truncated"
        ),
        "train --pretrained unsafe": _train("--pretrained", "{ws}/unsafe.pt", expected="not a plain tensor"),
        "train --pretrained html": _train("--pretrained", "{ws}/html.pt", expected="is an HTML page"),
        # --resume: missing, unreadable, unsafe, not a training checkpoint
        "train --resume alone": Case(("train", "--resume"), ("--resume needs the run folder",), True),
        "train --resume empty folder": Case(
            ("train", "--out", "{ws}/emptydir", "--resume"), ("no checkpoint at", "without --resume"), True
        ),
        "train --resume missing": Case(
            ("train", "--resume", "{cwd}/nowhere.pt"), ("--resume: no checkpoint",), True
        ),
        **{
            f"train --resume {name}": Case(
                ("train", "--resume", f"{{ws}}/{name}.pt", "--out", "{cwd}/r"), exp, True
            )
            for name, exp in {
                "text": ("--resume", "is a text file"),
                "random": ("--resume", "unrecognised bytes"),
                "empty": ("--resume", "is empty"),
                "html": ("--resume", "HTML page"),
                "trunc_zip": ("--resume", "damaged or truncated PyTorch checkpoint (zip format)"),
                "trunc_legacy": ("--resume", "truncated PyTorch checkpoint (legacy format)"),
                "unsafe": ("--resume", "not a plain tensor checkpoint", "weights_only=False"),
                "unsafe_legacy": ("--resume", "not a plain tensor checkpoint"),
                "state_dict": ("--resume", "not a crate_edu training checkpoint"),
            }.items()
        },
        "train --resume safetensors": Case(
            ("train", "--resume", "{ws}/good.safetensors", "--out", "{cwd}/r"),
            ("--resume", "not a crate_edu training checkpoint"),
            True,
        ),
        "train --resume --lr": Case(
            ("train", "--out", "{ws}/run", "--resume", "--lr", "0.5"),
            ("cannot change lr when resuming",),
            True,
        ),
        # --out
        "train --out existing run": Case(
            ("train", "--out", "{ws}/run", *TINY, *QUICK), ("already holds a run",), True
        ),
        "train --out a file": Case(("train", "--out", "{ws}/text.pt"), ("is a file, not a folder",), True),
        "train --out under a file": Case(("train", "--out", "{ws}/text.pt/run"), ("which is a file",), True),
        # data
        "train missing cifar": _train(
            "--dataset",
            "cifar10",
            "--data-dir",
            "{cwd}/nowhere",
            "--no-download",
            expected=("dataset 'cifar10' not found", "crate-edu fetch cifar10"),
            before_data=False,
        ),  # fmt: skip
        "train crafted cifar batch": _train(
            "--dataset",
            "cifar10",
            "--data-dir",
            "{ws}/cifar_evil",
            expected=("is not a CIFAR file", "io.open", "crate-edu fetch cifar10"),
            before_data=False,
        ),  # fmt: skip
        "train crafted cifar meta": _train(
            "--dataset",
            "cifar10",
            "--data-dir",
            "{ws}/cifar_evil_meta",
            expected=("batches.meta is not a CIFAR file", "io.open"),
            before_data=False,
        ),  # fmt: skip
        "train truncated cifar": _train(
            "--dataset",
            "cifar10",
            "--data-dir",
            "{ws}/cifar_trunc",
            expected=("is truncated or not a CIFAR python file", "crate-edu fetch cifar10"),
            before_data=False,
        ),  # fmt: skip
        "train --batch-size too large": _train(
            "--batch-size",
            "2000",
            "--limit-train",
            "2000",
            expected="larger than the train split",
            before_data=False,
        ),
        # eval
        "eval missing": Case(("eval", "{cwd}/nowhere.pt"), ("no checkpoint at",)),
        "eval empty folder": Case(("eval", "{ws}/emptydir"), ("no checkpoint at",)),
        "eval text": Case(("eval", "{ws}/text.pt"), ("is a text file", "not a PyTorch checkpoint")),
        "eval random": Case(("eval", "{ws}/random.pt"), ("unrecognised bytes",)),
        "eval empty": Case(("eval", "{ws}/empty.pt"), ("is empty",)),
        "eval html": Case(("eval", "{ws}/html.pt"), ("HTML page",)),
        "eval truncated zip": Case(
            ("eval", "{ws}/trunc_zip.pt"), ("damaged or truncated PyTorch checkpoint",)
        ),
        "eval truncated legacy": Case(
            ("eval", "{ws}/trunc_legacy.pt"), ("truncated PyTorch checkpoint (legacy",)
        ),
        "eval unsafe": Case(("eval", "{ws}/unsafe.pt"), ("not a plain tensor checkpoint", "torch.save")),
        "eval state dict": Case(
            ("eval", "{ws}/state_dict.pt"), ("is not a crate-edu checkpoint", "--model NAME")
        ),
        "eval plain safetensors": Case(
            ("eval", "{ws}/plain.safetensors"), ("is not a crate-edu checkpoint",)
        ),
        "eval state dict, wrong model": Case(
            ("eval", "{ws}/state_dict.pt", "--model", "crate_nano_cifar", "--dataset", "digits"),
            ("does not fit model 'crate_nano_cifar'", "what to do"),
        ),
        "eval state dict, unknown model": Case(
            ("eval", "{ws}/state_dict.pt", "--model", "crate_huge", "--dataset", "digits"), ("unknown model",)
        ),
        "eval corrupt weights": Case(("eval", "{ws}/corrupt.safetensors"), ("does not match the checksum",)),
        "eval --batch-size 0": Case(
            ("eval", "{ws}/run", "--batch-size", "0"), ("--batch-size must be a positive",)
        ),
        "eval --batch-size x": Case(("eval", "{ws}/run", "--batch-size", "x"), ("invalid int value",)),
        "eval --limit 0": Case(("eval", "{ws}/run", "--limit", "0"), ("--limit must be a positive integer",)),
        "eval --num-workers -1": Case(
            ("eval", "{ws}/run", "--num-workers", "-1"), ("--num-workers must be 0",)
        ),
        "eval --precision fp8": Case(("eval", "{ws}/run", "--precision", "fp8"), ("invalid choice: 'fp8'",)),
        "eval --precision fp16": Case(("eval", "{ws}/run", "--precision", "fp16"), ("fp16 needs a GPU",)),
        "eval --split val": Case(("eval", "{ws}/run", "--split", "val"), ("invalid choice: 'val'",)),
        "eval --dataset mnist": Case(
            ("eval", "{ws}/run", "--dataset", "mnist"), ("unknown dataset 'mnist'",)
        ),
        "eval --dataset cifar100": Case(
            ("eval", "{ws}/run", "--dataset", "cifar100"), ("predicts 10 classes",)
        ),
        "eval --model other": Case(
            ("eval", "{ws}/run", "--model", "vit_nano_cifar"), ("holds a 'crate_nano_cifar'",)
        ),
        "eval crafted cifar": Case(
            ("eval", "{ws}/run", "--dataset", "cifar10", "--data-dir", "{ws}/cifar_evil"),
            ("is not a CIFAR file",),
        ),
        "eval cifar of the wrong shape": Case(
            ("eval", "{ws}/run", "--dataset", "cifar10", "--data-dir", "{ws}/cifar_shape"),
            ("should be a uint8 array of shape (n, 3072)", "crate-edu fetch cifar10"),
        ),
        # fetch
        "fetch unknown": Case(("fetch", "mnist"), ("unknown name(s) 'mnist'", "datasets: cifar10")),
        "fetch imagenet": Case(("fetch", "imagenet"), ("cannot be fetched automatically", "image-net.org")),
        "fetch never published": Case(("fetch", "crate_tiny_in1k"), ("never published",)),
        "fetch crafted cifar": Case(
            ("fetch", "cifar10", "--data-dir", "{ws}/cifar_evil"), ("is not a CIFAR file",)
        ),
        "fetch crafted meta": Case(("fetch", "cifar10", "--data-dir", "{ws}/cifar_evil_meta"), ("io.open",)),
        "fetch cache is a file": Case(
            ("fetch", "crate_small_in1k", "--cache-dir", "{ws}/text.pt"),
            ("could not write", "is a file, not a"),
        ),
        "fetch nothing": Case(("fetch",), ("the following arguments are required: NAME",)),
        # export
        "export missing run": Case(("export", "{cwd}/nowhere", "{cwd}/w.safetensors"), ("no checkpoint at",)),
        "export wrong suffix": Case(("export", "{ws}/run", "{cwd}/w.pt"), ("must end in .safetensors",)),
        "export onto a folder": Case(("export", "{ws}/run", "{ws}/emptydir"), ("is a folder",)),
        "export onto a .safetensors folder": Case(
            ("export", "{ws}/run", "{ws}/dir.safetensors"), ("is a folder", "weights.safetensors")
        ),
        "export under a file": Case(
            ("export", "{ws}/run", "{ws}/text.pt/w.safetensors"),
            ("could not write", "is a file, not a folder"),
        ),
        "export existing file": Case(
            ("export", "{ws}/run", "{ws}/good.safetensors"), ("already exists", "--force")
        ),
        "export text": Case(("export", "{ws}/text.pt", "{cwd}/w.safetensors"), ("is a text file",)),
        "export truncated": Case(
            ("export", "{ws}/trunc_zip.pt", "{cwd}/w.safetensors"), ("damaged or truncated",)
        ),
        "export unsafe": Case(("export", "{ws}/unsafe.pt", "{cwd}/w.safetensors"), ("not a plain tensor",)),
        "export state dict": Case(
            ("export", "{ws}/state_dict.pt", "{cwd}/w.safetensors"), ("not a crate_edu training checkpoint",)
        ),
        # list and show
        "list everything": Case(("list", "everything"), ("invalid choice: 'everything'",)),
        "show thing": Case(("show", "thing", "x"), ("invalid choice: 'thing'",)),
        "show model": Case(("show", "model", "crate_huge"), ("unknown model 'crate_huge'", "choose one of")),
        "show dataset": Case(("show", "dataset", "mnist"), ("unknown dataset 'mnist'", "choose one of")),
        "show recipe": Case(("show", "recipe", "digits"), ("unknown recipe 'digits'", "did you mean")),
        "show weights": Case(
            ("show", "weights", "crate_xl"), ("unknown weights 'crate_xl'", "choose one of")
        ),
        "show without name": Case(("show", "model"), ("the following arguments are required: name",)),
        # the command itself
        "no command": Case((), ("the following arguments are required: COMMAND",)),
        "unknown command": Case(("frobnicate",), ("invalid choice: 'frobnicate'",)),
        "unknown flag": Case(("train", "--frobnicate"), ("unrecognized arguments: --frobnicate",)),
    }
)


@pytest.mark.parametrize("case", CLI_CASES.values(), ids=CLI_CASES.keys())
def test_cli_bad_input_is_one_line(case: Case, ws: Path, cwd: Path, capsys, monkeypatch) -> None:
    if case.before_data:
        import crate_edu.train.loop as loop

        def refuse(cfg):
            raise AssertionError("the data was loaded before the bad input was reported")

        monkeypatch.setattr(loop, "build_datasets", refuse)
    before = snapshot(ws)
    code, out, err = run_cli(case.argv(ws, cwd), capsys)
    assert_one_line(code, err, case.expected)
    assert snapshot(ws) == before, "a file of the workspace changed"
    assert not any(cwd.iterdir()), f"left behind: {list(cwd.iterdir())}"
    assert not (ws / "PAYLOAD_RAN").exists(), "a crafted file ran its payload"


def test_cli_sweep_is_broad() -> None:
    """Every train flag with a number in it is swept with wrong types or non-finite values."""
    import argparse

    from crate_edu.cli import build_parser

    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    numeric = {
        opt
        for a in sub.choices["train"]._actions
        for opt in a.option_strings
        if a.type is not None and opt.startswith("--")
    }
    assert numeric == set(INT_FLAGS) | set(FLOAT_FLAGS)
    assert len(CLI_CASES) >= 150


# --------------------------------------------------------------------------------------------------
# The CLI: what works and faults
# --------------------------------------------------------------------------------------------------


def test_cli_lr_inf_writes_nothing(cwd: Path, capsys) -> None:
    code, _, err = run_cli(["train", "--out", "r", *TINY, *QUICK, "--lr", "inf"], capsys)
    assert_one_line(code, err, ("--lr", "not a finite number"))
    assert not any(cwd.iterdir())


def test_cli_divergence_stops_with_a_clear_line_and_keeps_strict_json(cwd: Path, capsys) -> None:
    """A real divergence: SGD at lr 1e4. Epoch 1 ends with a huge but finite loss and is saved; the
    loss is NaN in epoch 2, which stops the run; metrics.jsonl stays standard JSON."""
    args = ["train", "--out", "r", *TINY, *QUICK, "--epochs", "3", "--optimizer", "sgd", "--lr", "1e4"]
    code, _, err = run_cli(args, capsys)
    line = assert_one_line(code, err, ("training diverged", "epoch 2", "lower --lr", "r/checkpoint.pt"))
    assert "the last good one" in line
    lines = (cwd / "r" / "metrics.jsonl").read_text().splitlines()
    assert [strict_json(x)["epoch"] for x in lines] == [1]
    ckpt = load_checkpoint(cwd / "r")
    assert ckpt["epoch"] == 1 and all(torch.isfinite(v).all() for v in ckpt["model"].values())
    assert sorted(p.name for p in (cwd / "r").iterdir()) == ["checkpoint.pt", "config.json", "metrics.jsonl"]


def test_cli_legacy_format_checkpoint_evaluates_and_resumes(ws: Path, cwd: Path, capsys) -> None:
    """A valid trainer checkpoint in torch's legacy (non-zip) format is a checkpoint, not an error."""
    code, out, err = run_cli(["eval", str(ws / "legacy.pt"), "--limit", "32", "--json"], capsys)
    assert code == 0, err
    result = strict_json(out.strip().splitlines()[-1])
    assert result["n"] == 32 and result["acc"] == pytest.approx(
        load_checkpoint(ws / "run")["history"][0]["test_acc"]
    )
    with pytest.warns(UserWarning, match="stretched"):
        code, _, err = run_cli(
            ["train", "--resume", str(ws / "legacy.pt"), "--out", "r", "--epochs", "2"], capsys
        )
    assert code == 0, err
    assert load_checkpoint(cwd / "r")["epoch"] == 2


def test_cli_eval_reads_exported_weights(ws: Path, capsys) -> None:
    code, out, err = run_cli(["eval", str(ws / "good.safetensors"), "--limit", "32"], capsys)
    assert code == 0, err
    assert out.startswith("digits test: acc ")


def test_cli_export_refuses_to_overwrite_unless_forced(ws: Path, cwd: Path, capsys) -> None:
    target = cwd / "w.safetensors"
    target.write_bytes(b"precious")
    code, _, err = run_cli(["export", str(ws / "run"), str(target)], capsys)
    assert_one_line(code, err, ("already exists", "--force"))
    assert target.read_bytes() == b"precious"
    code, out, err = run_cli(["export", str(ws / "run"), str(target), "--force"], capsys)
    assert code == 0 and out.strip() == f"wrote {target}", err
    model, info = crate_edu.load_weights(target)
    assert info.model_name == "crate_nano_cifar"


def _fail_writes(monkeypatch, code: int, after: int = 0) -> list[int]:
    """Make the ``after``-th and later file writes of atomic_write_bytes fail with ``code``; the
    clean-up that follows fails too (as on a read-only file system). Returns a call counter."""
    calls = [0]
    real_open = open

    def fake_open(path, mode="r", *args, **kwargs):
        if "w" in mode and ".tmp-" in str(path):
            calls[0] += 1
            if calls[0] > after:
                raise OSError(code, os.strerror(code), str(path))
        return real_open(path, mode, *args, **kwargs)

    real_unlink = Path.unlink

    def fake_unlink(self, missing_ok=False):
        if ".tmp-" in self.name and calls[0] > after:
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(self))
        return real_unlink(self, missing_ok=missing_ok)

    monkeypatch.setattr(atomic_module, "open", fake_open, raising=False)
    monkeypatch.setattr(Path, "unlink", fake_unlink)
    return calls


def test_cli_disk_full_during_a_checkpoint_keeps_the_last_good_one(ws: Path, cwd: Path, capsys, monkeypatch):
    import shutil

    shutil.copytree(ws / "run", cwd / "r")
    good = (cwd / "r" / "checkpoint.pt").read_bytes()
    _fail_writes(monkeypatch, errno.ENOSPC, after=2)  # config.json and metrics.jsonl, then the checkpoint
    with pytest.warns(UserWarning, match="stretched"):
        code, _, err = run_cli(["train", "--out", "r", "--resume", "--epochs", "2"], capsys)
    assert_one_line(code, err, ("could not write", "checkpoint.pt", "No space left on device", "free space"))
    assert "the previous checkpoint.pt is unchanged" in err
    assert (cwd / "r" / "checkpoint.pt").read_bytes() == good
    assert [p.name for p in (cwd / "r").iterdir() if ".tmp-" in p.name] == []


def test_cli_read_only_out_reports_the_real_error(cwd: Path, capsys, monkeypatch) -> None:
    """The clean-up after a failed write fails too on a read-only disk: the message must still
    name the write's error, not the clean-up's."""
    calls = _fail_writes(monkeypatch, errno.EROFS)
    code, _, err = run_cli(["train", "--out", "r", *TINY, *QUICK], capsys)
    assert_one_line(code, err, ("could not write", "Read-only file system", "writable disk"))
    assert calls[0] == 1


def test_cli_export_into_a_read_only_folder(ws: Path, cwd: Path, capsys, monkeypatch) -> None:
    _fail_writes(monkeypatch, errno.EROFS)
    code, _, err = run_cli(["export", str(ws / "run"), str(cwd / "w.safetensors")], capsys)
    assert_one_line(code, err, ("could not write", "w.safetensors", "Read-only file system"))
    assert not any(cwd.iterdir())


def test_cli_list_is_one_line_per_entry_and_show_gives_the_rest(capsys) -> None:
    code, out, _ = run_cli(["list", "recipes"], capsys)
    lines = out.strip().splitlines()
    assert code == 0 and len(lines) == len(RECIPES)
    assert all(line.split()[0] == name for line, name in zip(lines, RECIPES, strict=True))
    assert max(map(len, lines)) < 200
    code, out, _ = run_cli(["list", "recipes", "--verbose"], capsys)
    assert code == 0 and " ".join(RECIPES["cifar10-scratch"].doc.split()) in " ".join(out.split())
    code, out, _ = run_cli(["show", "recipe", "cifar10-scratch"], capsys)
    assert code == 0 and "CRATE-T trails ViT-S, a ViT of the same width" in " ".join(out.split())
    for kind, name, fragment in [
        ("model", "crate_tiny", "6,090,856"),
        ("dataset", "cifar10", "airplane"),
        ("weights", "crate_alpha_b16_in1k", "huggingface.co/UCSC-VLAA/CRATE-alpha"),
    ]:
        code, out, _ = run_cli(["show", kind, name], capsys)
        assert code == 0 and fragment in out, out


def test_recipe_doc_compares_models_of_the_same_width() -> None:
    doc = " ".join(RECIPES["cifar10-scratch"].doc.split())
    assert "ViT of the same width" not in doc.replace("ViT-S, a ViT of the same width", "")
    assert "66.7 vs 72.4" in doc and "5.7 points" in doc and "192-wide" in doc


# --------------------------------------------------------------------------------------------------
# The API sweep: models
# --------------------------------------------------------------------------------------------------

BAD_OVERRIDES = {
    "depth=0": ({"depth": 0}, ValueError, "depth must be a positive integer"),
    "depth=-1": ({"depth": -1}, ValueError, "depth must be a positive integer"),
    "depth=2.5": ({"depth": 2.5}, TypeError, "depth must be an integer"),
    "depth=True": ({"depth": True}, TypeError, "depth must be an integer"),
    "dim=0": ({"dim": 0}, ValueError, "dim must be a positive integer"),
    "heads=0": ({"heads": 0}, ValueError, "heads must be a positive integer"),
    "heads=3": ({"heads": 3}, ValueError, "not divisible by heads 3"),
    "dim_head=0": ({"dim_head": 0}, ValueError, "dim_head must be a positive integer"),
    "num_classes=0": ({"num_classes": 0}, ValueError, "num_classes must be a positive integer"),
    "num_classes=-3": ({"num_classes": -3}, ValueError, "num_classes must be a positive integer"),
    "channels=0": ({"channels": 0}, ValueError, "channels must be a positive integer"),
    "image_size=0": ({"image_size": 0}, ValueError, "image_size must be a positive integer"),
    "image_size=30": ({"image_size": 30}, ValueError, "not divisible by patch size 4"),
    "patch_size=-4": ({"patch_size": -4}, ValueError, "patch_size must be a positive integer"),
    "patch_size=4.0": ({"patch_size": 4.0}, TypeError, "patch_size must be an integer"),
    "pool=max": ({"pool": "max"}, ValueError, "pool must be 'cls'"),
    "dropout=1": ({"dropout": 1.0}, ValueError, "dropout must be in [0, 1)"),
    "dropout=nan": ({"dropout": float("nan")}, ValueError, "dropout must be in [0, 1)"),
    "emb_dropout=-0.1": ({"emb_dropout": -0.1}, ValueError, "emb_dropout must be in [0, 1)"),
    "eta=0": ({"eta": 0.0}, ValueError, "eta (the ISTA step size) must be positive"),
    "eta=inf": ({"eta": float("inf")}, ValueError, "eta must be a finite number"),
    "lambd=-1": ({"lambd": -1.0}, ValueError, "lambd must be a finite number >= 0"),
    "lambd=nan": ({"lambd": float("nan")}, ValueError, "lambd must be a finite number"),
    "reference='yes'": ({"reference": "yes"}, TypeError, "reference must be True or False"),
    "unknown option": ({"width": 3}, TypeError, "has no option(s) 'width'"),
}
FAMILY_OVERRIDES = {
    "vit mlp_dim=0": ("vit_nano_cifar", {"mlp_dim": 0}, ValueError, "mlp_dim must be a positive integer"),
    "vit depth=0": ("vit_nano_cifar", {"depth": 0}, ValueError, "depth must be a positive integer"),
    "alpha ratio=0": ("crate_alpha_nano_cifar", {"overcomplete_ratio": 0}, ValueError, "overcomplete_ratio"),
    "alpha coding": (
        "crate_alpha_nano_cifar",
        {"sparse_coding": "lasso"},
        ValueError,
        "sparse_coding must be",
    ),
    "alpha depth=0": ("crate_alpha_nano_cifar", {"depth": 0}, ValueError, "depth must be a positive integer"),
    "alpha eta=nan": ("crate_alpha_nano_cifar", {"eta": float("nan")}, ValueError, "eta must be a finite"),
    "mae depth=0": ("crate_mae_nano_cifar", {"depth": 0}, ValueError, "depth must be a positive integer"),
    "mae decoder_depth=0": (
        "crate_mae_nano_cifar",
        {"decoder_depth": 0},
        ValueError,
        "decoder_depth must be",
    ),
    "mae decoder_heads=0": (
        "crate_mae_nano_cifar",
        {"decoder_heads": 0},
        ValueError,
        "decoder_heads must be",
    ),
    "mae num_classes=-1": ("crate_mae_nano_cifar", {"num_classes": -1}, ValueError, "num_classes must be"),
    "mae mask_ratio=1": (
        "crate_mae_nano_cifar",
        {"mask_ratio": 1.0},
        ValueError,
        "mask_ratio must be in [0, 1)",
    ),
    "mae mask_ratio=nan": ("crate_mae_nano_cifar", {"mask_ratio": float("nan")}, ValueError, "mask_ratio"),
    "mae dim=30": (
        "crate_mae_nano_cifar",
        {"dim": 30, "heads": 3, "decoder_heads": 3},
        ValueError,
        "divisible by 4",
    ),
    "unknown model": ("crate_huge", {}, ValueError, "unknown model 'crate_huge'"),
}


@pytest.mark.parametrize("overrides, kind, expected", BAD_OVERRIDES.values(), ids=BAD_OVERRIDES.keys())
def test_create_model_rejects_bad_overrides(overrides, kind, expected) -> None:
    with pytest.raises(kind) as info:
        crate_edu.create_model("crate_nano_cifar", **overrides)
    assert_one_line_message(info.value, expected)
    with pytest.raises(kind):  # the same check before anything is built (what the trainer calls)
        crate_edu.model_config("crate_nano_cifar", **overrides)


@pytest.mark.parametrize(
    "name, overrides, kind, expected", FAMILY_OVERRIDES.values(), ids=FAMILY_OVERRIDES.keys()
)
def test_create_model_rejects_bad_overrides_in_every_family(name, overrides, kind, expected) -> None:
    with pytest.raises(kind) as info:
        crate_edu.create_model(name, **overrides)
    assert_one_line_message(info.value, expected)


def test_train_config_with_depth_0_fails_before_any_data_is_loaded(tmp_path, no_data_loading) -> None:
    cfg = RECIPES["digits-quick"].config(model_overrides={"depth": 0})
    with pytest.raises(ConfigError) as info:
        train(cfg, tmp_path / "r")
    assert_one_line_message(info.value, "depth must be a positive integer, got 0")
    assert not (tmp_path / "r").exists()


CLASSIFIERS = ["crate_nano_cifar", "vit_nano_cifar", "crate_alpha_nano_cifar"]


@pytest.fixture(scope="module")
def models() -> dict[str, torch.nn.Module]:
    torch.manual_seed(0)
    out = {name: crate_edu.create_model(name, depth=2).eval() for name in CLASSIFIERS}
    out["crate_mae_nano_cifar"] = crate_edu.create_model(
        "crate_mae_nano_cifar", depth=1, decoder_depth=1
    ).eval()
    return out


BAD_INPUTS = {
    "list": (lambda: [[0.0]], TypeError, "expects a torch.Tensor of images"),
    "3-D": (lambda: torch.zeros(3, 32, 32), ValueError, "add a batch dimension with x.unsqueeze(0)"),
    "5-D": (lambda: torch.zeros(1, 1, 3, 32, 32), ValueError, "expects images of shape (B, C, H, W)"),
    "1 channel": (lambda: torch.zeros(2, 1, 32, 32), ValueError, "x.expand(-1, 3, -1, -1)"),
    "4 channels": (lambda: torch.zeros(2, 4, 32, 32), ValueError, "expects 3 channels, got 4"),
    "wrong size": (lambda: torch.zeros(2, 3, 28, 28), ValueError, "built for 32x32 images, got 28x28"),
    "uint8": (lambda: torch.zeros(2, 3, 32, 32, dtype=torch.uint8), TypeError, "x.float() / 255"),
    "float64": (lambda: torch.zeros(2, 3, 32, 32, dtype=torch.float64), TypeError, "x.float() or the model"),
    "float16": (lambda: torch.zeros(2, 3, 32, 32, dtype=torch.float16), TypeError, "model.half()"),
    "bfloat16": (lambda: torch.zeros(2, 3, 32, 32, dtype=torch.bfloat16), TypeError, "model.bfloat16()"),
    "meta device": (
        lambda: torch.zeros(2, 3, 32, 32, device="meta"),
        ValueError,
        "move them with x.to('cpu')",
    ),
}


@pytest.mark.parametrize("name", [*CLASSIFIERS, "crate_mae_nano_cifar"])
@pytest.mark.parametrize("make, kind, expected", BAD_INPUTS.values(), ids=BAD_INPUTS.keys())
def test_forward_rejects_bad_images_in_one_line(models, name, make, kind, expected) -> None:
    with pytest.raises(kind) as info:
        models[name](make())
    assert_one_line_message(info.value, expected)


def test_float64_message_names_both_conversions(models) -> None:
    with pytest.raises(TypeError) as info:
        models["crate_nano_cifar"](torch.zeros(1, 3, 32, 32, dtype=torch.float64))
    assert str(info.value) == (
        "CRATE is float32 but the images are float64; convert the images with x.float() or the model "
        "with model.double()"
    )
    double = crate_edu.create_model("crate_nano_cifar", depth=1).double().eval()  # the other fix works
    assert double(torch.zeros(1, 3, 32, 32, dtype=torch.float64)).dtype == torch.float64


@pytest.mark.parametrize("name", CLASSIFIERS)
@pytest.mark.parametrize("reference", [False, True], ids=["fast", "reference"])
def test_empty_batch_gives_an_empty_output(models, name, reference) -> None:
    from crate_edu.models import set_reference

    model = set_reference(crate_edu.create_model(name, depth=2), reference)
    x = torch.zeros(0, 3, 32, 32, requires_grad=True)
    logits = model(x)
    assert logits.shape == (0, 10)
    logits.sum().backward()  # training on an empty batch: zero gradients, no error
    assert x.grad.shape == x.shape
    out, traces = model.eval().forward_intermediates(torch.zeros(0, 3, 32, 32))
    assert out.shape == (0, 10) and traces[0].attn.shape[0] == 0


def test_empty_batch_in_the_attention_kernel() -> None:
    from crate_edu.models import shared_qkv_attention

    w = torch.zeros(0, 4, 5, 8, requires_grad=True)
    out = shared_qkv_attention(w, 0.5)
    assert out.shape == (0, 4, 5, 8)
    out.sum().backward()
    assert w.grad.shape == w.shape


def test_crate_mae_empty_batch_and_no_mask_say_why(models) -> None:
    mae = models["crate_mae_nano_cifar"]
    with pytest.raises(ValueError) as info:
        mae(torch.zeros(0, 3, 32, 32))
    assert_one_line_message(info.value, "empty batch", "pass at least one image")
    with pytest.raises(ValueError) as info:
        mae(torch.zeros(1, 3, 32, 32), mask_ratio=0.0)
    assert_one_line_message(info.value, "removes none of the 64 patches", "larger mask_ratio")
    assert mae.forward_features(torch.zeros(0, 3, 32, 32)).shape == (0, 65, 128)


# --------------------------------------------------------------------------------------------------
# The API sweep: reading weights and checkpoints
# --------------------------------------------------------------------------------------------------

UNREADABLE = {
    "text": ("text.pt", "is a text file"),
    "random": ("random.pt", "unrecognised bytes"),
    "empty": ("empty.pt", "is empty"),
    "html": ("html.pt", "HTML page"),
    "truncated zip": ("trunc_zip.pt", "damaged or truncated PyTorch checkpoint (zip format)"),
    "truncated legacy": ("trunc_legacy.pt", "truncated PyTorch checkpoint (legacy format)"),
    "unsafe": ("unsafe.pt", "not a plain tensor checkpoint"),
    "unsafe legacy": ("unsafe_legacy.pt", "not a plain tensor checkpoint"),
    "folder": ("emptydir", "is a directory"),
}


@pytest.mark.parametrize("file, expected", UNREADABLE.values(), ids=UNREADABLE.keys())
def test_load_official_unreadable_files(ws, file, expected) -> None:
    with pytest.raises(CheckpointError) as info:
        crate_edu.load_official("crate_nano_cifar", ws / file)
    assert_one_line_message(info.value, str(ws / file), expected)
    assert not (ws / "PAYLOAD_RAN").exists()


@pytest.mark.parametrize("file, expected", UNREADABLE.values(), ids=UNREADABLE.keys())
def test_load_checkpoint_unreadable_files(ws, file, expected) -> None:
    """The trainer's reader is the same reader: one line, nothing runs."""
    if file == "emptydir":
        with pytest.raises(FileNotFoundError, match="no checkpoint at"):
            load_checkpoint(ws / file)
        return
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(ws / file)
    assert_one_line_message(info.value, str(ws / file), expected)
    assert not (ws / "PAYLOAD_RAN").exists()


def test_load_checkpoint_reads_the_legacy_format(ws) -> None:
    legacy, zipped = load_checkpoint(ws / "legacy.pt"), load_checkpoint(ws / "run")
    assert legacy["epoch"] == zipped["epoch"] == 1
    for k, v in zipped["model"].items():
        torch.testing.assert_close(legacy["model"][k], v, rtol=0, atol=0)


def test_load_official_mismatches_are_one_line(ws) -> None:
    with pytest.raises(CheckpointError) as info:
        crate_edu.load_official("crate_nano_cifar", ws / "state_dict.pt")
    assert_one_line_message(
        info.value, "does not fit model 'crate_nano_cifar'", "missing keys", "what to do:"
    )
    with pytest.raises(FileNotFoundError) as info:
        crate_edu.load_official("crate_nano_cifar", ws / "nowhere.pth")
    assert_one_line_message(info.value, "download_official")
    with pytest.raises(ValueError, match="unknown model"):
        crate_edu.load_official("crate_huge", ws / "state_dict.pt")


def test_weights_unavailable_is_one_line(tmp_path) -> None:
    from crate_edu.weights.official import WeightsUnavailableError, download_official

    with pytest.raises(WeightsUnavailableError) as info:
        download_official("crate_tiny_in1k", cache_dir=tmp_path)
    assert_one_line_message(info.value, "never published", "crate_edu.load_official")


def test_load_weights_checks_the_checksum(ws) -> None:
    from crate_edu.weights import WeightsFileError, load_weights, read_weights_info
    from crate_edu.weights.files import CHECKSUM_KEY

    model, info = load_weights(ws / "good.safetensors")
    assert len(info.metadata) > 0
    from safetensors import safe_open

    with safe_open(str(ws / "good.safetensors"), framework="pt") as f:
        assert len(f.metadata()[CHECKSUM_KEY]) == 64
    with pytest.raises(WeightsFileError) as err:
        load_weights(ws / "corrupt.safetensors")
    assert_one_line_message(err.value, "does not match the checksum", "copy it again")
    assert (
        read_weights_info(ws / "corrupt.safetensors").model_name == "crate_nano_cifar"
    )  # the header is fine


def test_every_tensor_byte_is_covered_by_the_checksum(tmp_path) -> None:
    from crate_edu.weights import WeightsFileError, load_weights, save_weights

    model = crate_edu.create_model("crate_nano_cifar", depth=1, dim=16, heads=2)
    path = save_weights(
        model,
        tmp_path / "w.safetensors",
        model_name="crate_nano_cifar",
        overrides={"depth": 1, "dim": 16, "heads": 2},
    )
    blob = path.read_bytes()
    header_end = 8 + int.from_bytes(blob[:8], "little")
    rng = np.random.default_rng(0)
    for pos in rng.integers(header_end, len(blob), size=5).tolist() + [header_end, len(blob) - 1]:
        bad = bytearray(blob)
        bad[pos] ^= 0x01
        (tmp_path / "bad.safetensors").write_bytes(bytes(bad))
        with pytest.raises(WeightsFileError, match="checksum"):
            load_weights(tmp_path / "bad.safetensors")


def test_weights_without_a_checksum_still_load(tmp_path) -> None:
    """Files written before the checksum existed (the shipped tutorial files among them) load."""
    from safetensors.torch import save

    from crate_edu.weights import TUTORIAL_CHECKPOINTS, load_tutorial_model, load_weights, sha256sum
    from crate_edu.weights.files import CHECKSUM_KEY, FORMAT

    model = crate_edu.create_model("crate_nano_cifar", depth=1, dim=16, heads=2)
    header = {
        "format": FORMAT,
        "model_name": "crate_nano_cifar",
        "overrides": json.dumps({"depth": 1, "dim": 16, "heads": 2}),
        "metadata": "{}",
    }
    (tmp_path / "old.safetensors").write_bytes(save(model.state_dict(), metadata=header))
    loaded, info = load_weights(tmp_path / "old.safetensors")
    assert CHECKSUM_KEY not in header
    for k, v in model.state_dict().items():
        torch.testing.assert_close(loaded.state_dict()[k], v, rtol=0, atol=0)
    from crate_edu.weights.tutorial import tutorial_checkpoint

    for name, entry in TUTORIAL_CHECKPOINTS.items():
        assert sha256sum(tutorial_checkpoint(name)) == entry.sha256  # the shipped files are untouched
    load_tutorial_model("cluttered-digits-crate")


def test_damaged_weights_header_is_one_line(tmp_path) -> None:
    from safetensors.torch import save

    from crate_edu.weights import WeightsFileError, load_weights
    from crate_edu.weights.files import FORMAT

    model = crate_edu.create_model("crate_nano_cifar", depth=1, dim=16, heads=2)
    cases = {
        "bad overrides": {"format": FORMAT, "model_name": "crate_nano_cifar", "overrides": "{not json"},
        "no model name": {"format": FORMAT, "overrides": "{}"},
        "unknown model": {"format": FORMAT, "model_name": "crate_huge", "overrides": "{}"},
        "other format": {"format": "someone/else"},
    }
    for what, header in cases.items():
        path = tmp_path / f"{what}.safetensors"
        path.write_bytes(save(model.state_dict(), metadata=header))
        with pytest.raises(WeightsFileError) as info:
            load_weights(path)
        assert_one_line_message(info.value, str(path))
    (tmp_path / "junk.safetensors").write_bytes(b"\x00" * 64)
    with pytest.raises(WeightsFileError) as info:
        load_weights(tmp_path / "junk.safetensors")
    assert_one_line_message(info.value, "is not a safetensors file")
    with pytest.raises(FileNotFoundError):
        load_weights(tmp_path / "nowhere.safetensors")


def test_export_run_overwrite_and_folders(ws, tmp_path) -> None:
    from crate_edu.train import export_run
    from crate_edu.weights import load_weights

    out = tmp_path / "w.safetensors"
    out.write_bytes(b"precious")
    with pytest.raises(FileExistsError) as info:
        export_run(ws / "run", out)
    assert_one_line_message(info.value, "already exists", "overwrite=True")
    assert out.read_bytes() == b"precious"
    export_run(ws / "run", out, overwrite=True)
    assert load_weights(out)[1].model_name == "crate_nano_cifar"
    with pytest.raises(IsADirectoryError) as info:
        export_run(ws / "run", tmp_path)
    assert_one_line_message(info.value, "is a folder")
    with pytest.raises(FileNotFoundError) as info:
        export_run(tmp_path / "nowhere", tmp_path / "x.safetensors")
    assert_one_line_message(info.value, "no checkpoint at")
    with pytest.raises(CheckpointError):
        export_run(ws / "unsafe.pt", tmp_path / "x.safetensors")
    assert not (tmp_path / "x.safetensors").exists() and not (ws / "PAYLOAD_RAN").exists()


# --------------------------------------------------------------------------------------------------
# The API sweep: data
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("folder", ["cifar_evil", "cifar_evil_meta"])
def test_crafted_cifar_files_never_run(ws, folder) -> None:
    from crate_edu.data import DatasetFileError

    for split in ("train", "test"):
        with pytest.raises(DatasetFileError) as info:
            build_dataset("cifar10", split, data_dir=ws / folder)
        assert_one_line_message(info.value, "is not a CIFAR file", "io.open", "crate-edu fetch cifar10")
    with pytest.raises(DatasetFileError):
        fetch_dataset("cifar10", ws / folder)
    assert not (ws / "PAYLOAD_RAN").exists()


def test_crafted_payloads_of_every_kind_are_refused(tmp_path) -> None:
    from crate_edu.data import DatasetFileError
    from crate_edu.data.datasets import read_cifar_pickle

    marker = tmp_path / "ran"
    payloads = {
        "os.system": (os.system, (f"touch {marker}",)),
        "builtins.eval": (eval, (f"open({str(marker)!r}, 'w')",)),
        "subprocess.call": (subprocess.call, (["touch", str(marker)],)),
    }
    for name, reduce in payloads.items():

        class Evil:
            def __reduce__(self, reduce=reduce):
                return reduce

        for protocol in (2, 4, 5):
            path = tmp_path / f"{name}-{protocol}"
            path.write_bytes(pickle.dumps({"data": Evil(), "labels": []}, protocol=protocol))
            with pytest.raises(DatasetFileError, match="is not a CIFAR file"):
                read_cifar_pickle(path)
    codec = pickle.dumps({"data": b"x"}, protocol=2).replace(b"latin1", b"rot13 ")
    (tmp_path / "codec").write_bytes(codec)
    with pytest.raises(DatasetFileError):
        read_cifar_pickle(tmp_path / "codec")
    objects = np.array([1, "x"], dtype=object)
    (tmp_path / "objects").write_bytes(pickle.dumps({"data": objects}, protocol=4))
    with pytest.raises(DatasetFileError, match="numpy array of Python objects"):
        read_cifar_pickle(tmp_path / "objects")
    assert not marker.exists()


@pytest.mark.parametrize("protocol", ["python 2", 2, 4, 5])
def test_genuine_cifar_formats_load(tmp_path, protocol) -> None:
    """The real files (Python 2 pickles) and re-saved copies at every protocol numpy writes."""
    fake = write_cifar(tmp_path, "cifar10")
    folder = tmp_path / "cifar-10-batches-py"
    if protocol != "python 2":
        from crate_edu.data.datasets import read_cifar_pickle

        for f in [*(f"data_batch_{i}" for i in range(1, 6)), "test_batch", "batches.meta"]:
            entry = read_cifar_pickle(folder / f)
            (folder / f).write_bytes(pickle.dumps(entry, protocol=protocol))
    ds = build_dataset("cifar10", "test", data_dir=tmp_path, normalize=((0, 0, 0), (1, 1, 1)))
    images, labels = fake["test"]
    assert ds.classes == fake["classes"] and ds.targets == labels
    torch.testing.assert_close(ds[1][0], torch.from_numpy(images[1]).permute(2, 0, 1).float() / 255)


def test_fake_cifar_files_are_in_the_real_format(tmp_path, monkeypatch) -> None:
    """What torchvision's download unpacks: Python 2 pickles, protocol 2, numpy arrays by the names
    numpy 1 gave them, strings as Python 2 str; torchvision's own reader reads them."""
    import pickletools

    import torchvision.datasets.cifar as tv_cifar

    write_cifar(tmp_path, "cifar10")
    raw = (tmp_path / "cifar-10-batches-py" / "data_batch_1").read_bytes()
    ops = [(op.name, arg) for op, arg, _ in pickletools.genops(raw)]
    assert raw[:2] == b"\x80\x02"
    assert ("GLOBAL", "numpy.core.multiarray _reconstruct") in ops and ("GLOBAL", "numpy dtype") in ops
    assert ("SHORT_BINSTRING", "data") in ops and not any(name.endswith("UNICODE") for name, _ in ops)
    entry = pickle.loads(raw, encoding="latin1")
    assert entry["data"].dtype == np.uint8 and entry["data"].shape == (4, 3072)
    assert set(entry) == {"batch_label", "labels", "data", "filenames"}
    monkeypatch.setattr(tv_cifar, "check_integrity", lambda *a, **k: True)  # no MD5 of the real files
    assert len(tv_cifar.CIFAR10(str(tmp_path), train=True)) == 20


BAD_CIFAR = {
    "truncated": ("cifar_trunc", "is truncated or not a CIFAR python file"),
    "wrong shape": ("cifar_shape", "should be a uint8 array of shape (n, 3072)"),
    "missing": ("nowhere", "dataset 'cifar10' not found"),
}


@pytest.mark.parametrize("folder, expected", BAD_CIFAR.values(), ids=BAD_CIFAR.keys())
def test_bad_cifar_folders(ws, folder, expected) -> None:
    with pytest.raises(DatasetUnavailableError) as info:
        build_dataset("cifar10", "test", data_dir=ws / folder)
    assert_one_line_message(info.value, expected, "crate-edu fetch cifar10")


def test_cifar_labels_out_of_range(tmp_path) -> None:
    from crate_edu.data import DatasetFileError

    write_cifar(tmp_path, "cifar10")
    batch = tmp_path / "cifar-10-batches-py" / "test_batch"
    dump_py2({"data": np.zeros((2, 3072), np.uint8), "labels": [0, 10]}, batch)
    with pytest.raises(DatasetFileError) as info:
        build_dataset("cifar10", "test", data_dir=tmp_path)
    assert_one_line_message(info.value, "labels should be in 0..9, found 0..10")
    dump_py2({"data": np.zeros((2, 3072), np.uint8), "labels": [0]}, batch)
    with pytest.raises(DatasetFileError, match="one label per image"):
        build_dataset("cifar10", "test", data_dir=tmp_path)


BAD_DATASET_CALLS = {
    "name": (("mnist",), {}, ValueError, "unknown dataset 'mnist'"),
    "split": (("digits", "validation"), {}, ValueError, "unknown split 'validation'"),
    "image_size 0": (("digits",), {"image_size": 0}, ValueError, "image_size must be a positive number"),
    "image_size -5": (("digits",), {"image_size": -5}, ValueError, "image_size must be a positive number"),
    "augment": (("digits",), {"augment": "mixup"}, ValueError, "mixup"),
    "normalize": (("digits",), {"normalize": "cifar"}, ValueError, "normalize must be None"),
    "option": (("digits",), {"size": "160px"}, ValueError, "unknown option(s) size for dataset 'digits'"),
    "imagenette size": (("imagenette",), {"size": "90px"}, ValueError, "unknown Imagenette size '90px'"),
    "imagenet missing": (
        ("imagenet",),
        {"data_dir": "/nonexistent"},
        DatasetUnavailableError,
        "image-net.org",
    ),
}


@pytest.mark.parametrize(
    "args, kwargs, kind, expected", BAD_DATASET_CALLS.values(), ids=BAD_DATASET_CALLS.keys()
)
def test_build_dataset_bad_arguments(args, kwargs, kind, expected) -> None:
    with pytest.raises(kind) as info:
        build_dataset(*args, **kwargs)
    assert_one_line_message(info.value, expected)


# --------------------------------------------------------------------------------------------------
# The API sweep: training and evaluation
# --------------------------------------------------------------------------------------------------

NON_FINITE = [float("nan"), float("inf"), float("-inf")]
FLOAT_FIELDS = [
    "lr",
    "weight_decay",
    "momentum",
    "warmup_epochs",
    "min_lr_ratio",
    "label_smoothing",
    "grad_clip",
]


@pytest.mark.parametrize("value", NON_FINITE, ids=["nan", "inf", "-inf"])
@pytest.mark.parametrize("field", FLOAT_FIELDS)
def test_train_rejects_non_finite_values(tmp_path, field, value, no_data_loading) -> None:
    cfg = RECIPES["digits-quick"].config(**{field: value})
    with pytest.raises(ConfigError) as info:
        train(cfg, tmp_path / "r")
    assert_one_line_message(info.value, field.replace("_", "-"))
    assert not (tmp_path / "r").exists()


BAD_CONFIGS = {
    "betas nan": ({"betas": (0.9, float("nan"))}, "betas must be two numbers in [0, 1)"),
    "betas three": ({"betas": (0.9, 0.99, 0.999)}, "betas must be two numbers"),
    "lr string": ({"lr": "0.1"}, "lr must be a number"),
    "epochs float": ({"epochs": 1.5}, "epochs must be a positive integer"),
    "seed huge": ({"seed": 2**40}, "seed must be an integer from 0"),
    "dropout": ({"model_overrides": {"dropout": 1.5}}, "dropout must be in [0, 1)"),
    "heads 0": ({"model_overrides": {"heads": 0}}, "heads must be a positive integer"),
    "unknown override": ({"model_overrides": {"width": 3}}, "has no option(s) 'width'"),
}


@pytest.mark.parametrize("changes, expected", BAD_CONFIGS.values(), ids=BAD_CONFIGS.keys())
def test_train_rejects_bad_configs_before_loading_data(tmp_path, changes, expected, no_data_loading) -> None:
    with pytest.raises(ConfigError) as info:
        train(RECIPES["digits-quick"].config(**changes), tmp_path / "r")
    assert_one_line_message(info.value, expected)


def test_train_out_is_a_file(tmp_path, no_data_loading) -> None:
    (tmp_path / "f").write_text("x")
    with pytest.raises(ConfigError) as info:
        train(RECIPES["digits-quick"].config(), tmp_path / "f")
    assert_one_line_message(info.value, "is a file, not a folder")
    assert (tmp_path / "f").read_text() == "x"


def test_failed_run_leaves_no_empty_folder(tmp_path, monkeypatch) -> None:
    import crate_edu.train.loop as loop

    def missing(cfg):
        raise DatasetUnavailableError("dataset 'x' not found")

    monkeypatch.setattr(loop, "build_datasets", missing)
    with pytest.raises(DatasetUnavailableError):
        train(RECIPES["digits-quick"].config(), tmp_path / "a" / "b")
    assert not (tmp_path / "a").exists()


BAD_EVALUATE = {
    "batch_size 0": ({"batch_size": 0}, "batch_size must be a positive integer"),
    "batch_size 1.5": ({"batch_size": 1.5}, "batch_size must be a positive integer"),
    "num_workers -1": ({"num_workers": -1}, "num_workers must be 0 or more"),
    "precision fp8": ({"precision": "fp8"}, "unknown precision 'fp8'"),
}


@pytest.mark.parametrize("kwargs, expected", BAD_EVALUATE.values(), ids=BAD_EVALUATE.keys())
def test_evaluate_bad_arguments(models, kwargs, expected) -> None:
    ds = torch.utils.data.TensorDataset(torch.zeros(4, 3, 32, 32), torch.zeros(4, dtype=torch.long))
    with pytest.raises(ConfigError) as info:
        evaluate(models["crate_nano_cifar"], ds, **kwargs)
    assert_one_line_message(info.value, expected)


def test_evaluate_empty_dataset(models) -> None:
    empty = torch.utils.data.TensorDataset(torch.zeros(0, 3, 32, 32), torch.zeros(0, dtype=torch.long))
    with pytest.raises(ConfigError) as info:
        evaluate(models["crate_nano_cifar"], empty)
    assert_one_line_message(info.value, "the dataset to evaluate is empty")


class _NaNAfter(torch.nn.Module):
    """Wraps a model; from forward call ``start`` on (in training mode), its logits are NaN."""

    def __init__(self, inner: torch.nn.Module, start: int) -> None:
        super().__init__()
        self.inner, self.start, self.calls = inner, start, 0

    def forward(self, x):
        out = self.inner(x)
        if self.training:
            self.calls += 1
            if self.calls >= self.start:
                return out * float("nan")
        return out

    def state_dict(self, *args, **kwargs):
        return self.inner.state_dict(*args, **kwargs)


def test_fit_stops_at_a_nan_loss_and_keeps_the_last_good_epoch(tmp_path) -> None:
    from crate_edu.train import TrainingDivergedError, build_datasets, read_jsonl

    cfg = RECIPES["digits-quick"].config(
        epochs=3, batch_size=32, limit_train=64, limit_test=32, model_overrides=TINY_MODEL, progress=False
    )
    model = _NaNAfter(crate_edu.create_model(cfg.model, **{**TINY_MODEL, "num_classes": 10}), start=4)
    train_set, test_set = build_datasets(cfg)
    with pytest.raises(TrainingDivergedError) as info:
        fit(model, train_set, test_set, cfg, tmp_path / "r")
    assert_one_line_message(
        info.value, "the training loss became nan at epoch 2, micro-step 2 of 2", "lower --lr"
    )
    assert "still holds epoch 1, the last good one" in str(info.value)
    lines = (tmp_path / "r" / "metrics.jsonl").read_text().splitlines()
    assert (
        [strict_json(x)["epoch"] for x in lines]
        == [1]
        == [r["epoch"] for r in read_jsonl(tmp_path / "r" / "metrics.jsonl")]
    )
    ckpt = load_checkpoint(tmp_path / "r")
    assert ckpt["epoch"] == 1 and all(torch.isfinite(v).all() for v in ckpt["model"].values())


def test_fit_stops_at_a_nan_loss_in_the_first_step(tmp_path) -> None:
    from crate_edu.train import TrainingDivergedError, build_datasets

    cfg = RECIPES["digits-quick"].config(
        epochs=1, batch_size=32, limit_train=64, limit_test=32, progress=False
    )
    model = _NaNAfter(crate_edu.create_model(cfg.model, **{**TINY_MODEL, "num_classes": 10}), start=1)
    with pytest.raises(TrainingDivergedError) as info:
        fit(model, *build_datasets(cfg), cfg, tmp_path / "r")
    assert_one_line_message(info.value, "epoch 1, micro-step 1 of 2", "no checkpoint was written")
    assert not (tmp_path / "r" / "checkpoint.pt").exists()
    assert (tmp_path / "r" / "metrics.jsonl").read_text() == ""


def test_metrics_lines_are_strict_json(tmp_path) -> None:
    from crate_edu.train.checkpoint import append_jsonl, json_line, write_jsonl

    record = {"epoch": 1, "loss": float("nan"), "acc": float("inf"), "nested": [float("-inf"), 1.0]}
    assert strict_json(json_line(record)) == {"epoch": 1, "loss": None, "acc": None, "nested": [None, 1.0]}
    write_jsonl(tmp_path / "m.jsonl", [record])
    append_jsonl(tmp_path / "m.jsonl", record)
    assert [strict_json(x)["loss"] for x in (tmp_path / "m.jsonl").read_text().splitlines()] == [None, None]


# --------------------------------------------------------------------------------------------------
# Faults: atomic writes
# --------------------------------------------------------------------------------------------------


def test_disk_full_during_a_checkpoint_write(tmp_path, monkeypatch) -> None:
    from crate_edu.train import FileWriteError

    path = save_checkpoint({"epoch": 1}, tmp_path / "checkpoint.pt")
    good = path.read_bytes()
    _fail_writes(monkeypatch, errno.ENOSPC)
    with pytest.raises(FileWriteError) as info:
        save_checkpoint({"epoch": 2}, path)
    assert info.value.errno == errno.ENOSPC and isinstance(info.value, OSError)
    assert_one_line_message(
        info.value, "No space left on device (ENOSPC)", "free space", "previous checkpoint.pt is unchanged"
    )
    assert path.read_bytes() == good
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint.pt"]


def test_disk_full_inside_torch_save(tmp_path, monkeypatch) -> None:
    """The write itself fails half-way (ENOSPC from f.write): the torn temporary file is removed."""
    from crate_edu.train import FileWriteError

    path = save_checkpoint({"epoch": 1, "w": torch.zeros(1000)}, tmp_path / "checkpoint.pt")
    good = path.read_bytes()

    def write_half_then_fail(f):
        f.write(good[:100])
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    with pytest.raises(FileWriteError, match="No space left on device"):
        atomic_write_bytes(path, write_half_then_fail)
    assert path.read_bytes() == good and sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint.pt"]


def test_read_only_cleanup_does_not_hide_the_error(tmp_path, monkeypatch) -> None:
    from crate_edu.train import FileWriteError

    def fails(f):
        f.write(b"partial")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    real_unlink = Path.unlink

    def read_only_unlink(self, missing_ok=False):
        if ".tmp-" in self.name:
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(self))
        return real_unlink(self, missing_ok=missing_ok)

    monkeypatch.setattr(Path, "unlink", read_only_unlink)
    with pytest.raises(FileWriteError) as info:
        atomic_write_bytes(tmp_path / "f.bin", fails)
    assert_one_line_message(info.value, "No space left on device")  # the real error, not the clean-up's


BAD_TARGETS = {
    "a folder": (lambda p: p.mkdir() or p, "that path is a folder"),
    "under a file": (lambda p: (p.write_text("x"), p / "f")[1], "is a file, not a folder"),
}


@pytest.mark.parametrize("make, expected", BAD_TARGETS.values(), ids=BAD_TARGETS.keys())
def test_atomic_write_onto_bad_paths(tmp_path, make, expected) -> None:
    from crate_edu.train import FileWriteError

    target = make(tmp_path / "t")
    before = snapshot(tmp_path)
    with pytest.raises(FileWriteError) as info:
        atomic_write_bytes(target, lambda f: f.write(b"new"))
    assert_one_line_message(info.value, expected)
    assert snapshot(tmp_path) == before


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_stale_temporary_files_of_dead_writers_are_removed(tmp_path) -> None:
    path = tmp_path / "checkpoint.pt"
    path.write_bytes(b"old")
    stale = tmp_path / f".checkpoint.pt.tmp-{_dead_pid()}"
    stale.write_bytes(b"torn")
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        live = tmp_path / f".checkpoint.pt.tmp-{sleeper.pid}"  # another writer, still at work
        live.write_bytes(b"in progress")
        other = tmp_path / f".metrics.jsonl.tmp-{_dead_pid()}"  # another file's: not ours to judge
        other.write_bytes(b"x")
        atomic_write_bytes(path, lambda f: f.write(b"new"))
        assert path.read_bytes() == b"new" and not stale.exists()
        assert live.exists() and other.exists()
    finally:
        sleeper.kill()
        sleeper.wait()


def test_a_killed_writer_leaves_a_temporary_file_that_the_next_write_removes(tmp_path) -> None:
    """SIGKILL in the middle of a write: the last good file survives and the torn temporary file
    (named after the dead process) is gone after the next write."""
    path = tmp_path / "checkpoint.pt"
    save_checkpoint({"epoch": 1}, path)
    good = path.read_bytes()
    script = (
        "import sys, time\n"
        "from crate_edu.train.checkpoint import atomic_write_bytes\n"
        "def write(f):\n"
        "    f.write(b'x' * 4096); f.flush(); print('writing', flush=True); time.sleep(60)\n"
        "atomic_write_bytes(sys.argv[1], write)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", script, str(path)], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "writing"
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    torn = tmp_path / f".checkpoint.pt.tmp-{proc.pid}"
    assert torn.exists() and path.read_bytes() == good
    save_checkpoint({"epoch": 2}, path)
    assert not torn.exists() and load_checkpoint(path)["epoch"] == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint.pt"]


def test_the_payloads_run_under_plain_pickle(tmp_path) -> None:
    """The crafted files of this sweep are real threats: unpickled without restriction, the payload
    runs (so the tests above, which check that it does not, can fail)."""
    marker = tmp_path / "ran"
    pickle.loads(pickle.dumps({"data": Payload(marker), "labels": [0]}, protocol=2))
    assert marker.exists()
    marker.unlink()
    torch.save({"format": CHECKPOINT_FORMAT, "extra": Payload(marker)}, tmp_path / "unsafe.pt")
    torch.load(tmp_path / "unsafe.pt", weights_only=False)
    assert marker.exists()


def test_mae_pretraining_stops_at_a_nan_loss(tmp_path, monkeypatch) -> None:
    import crate_edu.train.mae as mae_train
    from crate_edu.train import TrainingDivergedError

    real_build = mae_train.build_mae_model
    calls = [0]

    def build_nan_later(cfg):
        model = real_build(cfg)
        forward = model.forward

        def nan_from_the_third_step(*args, **kwargs):
            loss, pred, mask = forward(*args, **kwargs)
            if model.training:
                calls[0] += 1
                if calls[0] >= 3:
                    loss = loss * float("nan")
            return loss, pred, mask

        model.forward = nan_from_the_third_step
        return model

    monkeypatch.setattr(mae_train, "build_mae_model", build_nan_later)
    tiny = {"dim": 32, "depth": 1, "decoder_depth": 1, "heads": 2, "decoder_heads": 2}
    cfg = mae_train.MAETrainConfig(model_overrides=tiny, epochs=3, batch_size=8, threads=1)
    data = (torch.rand(16, 3, 32, 32), torch.rand(8, 3, 32, 32))
    with pytest.raises(TrainingDivergedError) as info:
        mae_train.pretrain_mae(cfg, tmp_path / "r", datasets=data, log=None)
    assert_one_line_message(info.value, "masked-patch loss became nan at epoch 2, step 3 of 6", "lower lr")
    assert load_checkpoint(tmp_path / "r")["epoch"] == 1
    lines = (tmp_path / "r" / "metrics.jsonl").read_text().splitlines()
    assert [strict_json(x)["epoch"] for x in lines] == [1]


def test_nan_found_between_two_checks_is_reported_at_its_step(tmp_path, monkeypatch) -> None:
    """On an accelerator the losses are checked every 25 steps; the step named is still exact."""
    import crate_edu.train.loop as loop
    from crate_edu.train import TrainingDivergedError, build_datasets

    monkeypatch.setattr(loop, "_nonfinite_check_interval", lambda device_type: 3)
    cfg = RECIPES["digits-quick"].config(
        epochs=2, batch_size=16, limit_train=64, limit_test=16, progress=False
    )
    model = _NaNAfter(crate_edu.create_model(cfg.model, **{**TINY_MODEL, "num_classes": 10}), start=6)
    with pytest.raises(TrainingDivergedError) as info:
        fit(model, *build_datasets(cfg), cfg, tmp_path / "r")
    assert_one_line_message(info.value, "epoch 2, micro-step 2 of 4 (optimizer step 6 of 8)")
    assert model.calls == 7  # found at the check after micro-step 3 of epoch 2, one step later
