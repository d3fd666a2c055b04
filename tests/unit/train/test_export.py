"""crate_edu.train.export: a training run as a self-describing weights file."""

from __future__ import annotations

import pytest
import torch

import crate_edu
from crate_edu.train import TrainConfig, export_run, save_checkpoint
from crate_edu.weights import load_weights


def test_export_run_from_a_training_checkpoint(tmp_path):
    cfg = TrainConfig(
        model="crate_nano_cifar", dataset="digits", model_overrides={"depth": 1, "dim": 32, "heads": 2}
    )
    torch.manual_seed(1)
    model = crate_edu.create_model("crate_nano_cifar", depth=1, dim=32, heads=2, num_classes=10).eval()
    history = [{"epoch": 1, "test_acc": 0.25}, {"epoch": 2, "test_acc": 0.5}]
    save_checkpoint(
        {"config": cfg.to_dict(), "model": model.state_dict(), "history": history},
        tmp_path / "run" / "checkpoint.pt",
    )
    out = export_run(
        tmp_path / "run", tmp_path / "w.safetensors", metadata={"command": "crate-edu train ..."}
    )
    loaded, info = load_weights(out)
    assert info.model_name == "crate_nano_cifar"
    assert (
        info.overrides["depth"] == 1
        and info.overrides["num_classes"] == 10
        and info.overrides["image_size"] == 32
    )
    assert info.metadata["final_metrics"] == {"epoch": 2, "test_acc": 0.5}
    assert (
        info.metadata["command"] == "crate-edu train ..."
        and info.metadata["train_config"]["dataset"] == "digits"
    )
    x = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(loaded(x), model(x), rtol=0, atol=0)


def test_export_refuses_to_overwrite_and_needs_a_checkpoint(tmp_path):
    with pytest.raises(FileNotFoundError, match="no checkpoint at"):
        export_run(tmp_path / "nowhere", tmp_path / "w.safetensors")
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "checkpoint.pt").write_bytes(b"")
    (tmp_path / "w.safetensors").write_bytes(b"")
    with pytest.raises(FileExistsError, match="already exists"):
        export_run(tmp_path / "run", tmp_path / "w.safetensors")


def test_the_weights_package_does_not_need_the_training_package():
    """Exporting a run lives in train/ (it reads a run); weights/ never imports train/."""
    import ast
    from pathlib import Path

    for path in (Path(crate_edu.__file__).parent / "weights").glob("*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        modules = [n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)]
        assert not [m for m in modules if m.startswith("crate_edu.train")], path.name
