"""crate_edu.weights.files: the weights file format and its checksum."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import torch

import crate_edu
from crate_edu.weights import WeightsFileError, save_weights
from crate_edu.weights.files import CHECKSUM_KEY, FORMAT, read_weights_info, read_weights_tensors

PACKAGE = Path(crate_edu.__file__).resolve().parent


def test_the_format_tag_is_unchanged():
    assert FORMAT == "crate_edu.weights/1" and CHECKSUM_KEY == "tensors_sha256"


def test_weights_file_round_trip_and_checksum(tmp_path):
    small = {"depth": 1, "dim": 16, "heads": 2}
    model = crate_edu.create_model("crate_nano_cifar", **small)
    path = save_weights(model, tmp_path / "w.safetensors", model_name="crate_nano_cifar", overrides=small)
    info = read_weights_info(path)
    assert (info.model_name, info.overrides, info.path) == ("crate_nano_cifar", small, path)
    tensors = read_weights_tensors(path)
    assert all(torch.equal(tensors[k], v) for k, v in model.state_dict().items())
    data = bytearray(path.read_bytes())
    data[-1] ^= 0x01  # one bit of the last tensor
    path.write_bytes(bytes(data))
    with pytest.raises(WeightsFileError, match="does not match the checksum"):
        read_weights_tensors(path)


def test_the_weights_package_never_imports_the_training_package_at_module_level():
    """train/checkpoint.py reads and writes through weights/, never the reverse."""
    for path in (PACKAGE / "weights").glob("*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        top = [n for n in tree.body if isinstance(n, ast.Import | ast.ImportFrom)]
        modules = [n.module or "" for n in top if isinstance(n, ast.ImportFrom)]
        modules += [a.name for n in top if isinstance(n, ast.Import) for a in n.names]
        assert not [m for m in modules if m.startswith("crate_edu.train")], path.name
    for name in ("reader.py", "atomic.py"):  # the bottom of the package: they import no other part of it
        tree = ast.parse((PACKAGE / "weights" / name).read_text(encoding="utf-8"))
        every = [n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)]
        assert not [m for m in every if m.startswith(("crate_edu.train", "crate_edu.weights"))], name
