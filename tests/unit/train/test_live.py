"""crate_edu.train.live (live curves as an on_epoch_end callback) and crate_edu.plotting.training."""

from __future__ import annotations

import io
import sys
import types

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from crate_edu.plotting.training import (  # noqa: E402
    plot_confusion_matrix,
    plot_curves,
    plot_per_class_accuracy,
    plot_throughput,
)
from crate_edu.train import RECIPES, train  # noqa: E402
from crate_edu.train.live import LiveCurves, format_record, in_notebook, quiet  # noqa: E402


def _records(n: int) -> list[dict]:
    return [
        {"epoch": e, "train_loss": 2.0 / e, "train_acc": 0.1 * e, "test_loss": 1.5 / e, "test_acc": 0.12 * e}
        for e in range(1, n + 1)
    ]


def test_text_fallback_prints_one_line_per_epoch():
    out = io.StringIO()
    live = LiveCurves(total_epochs=3, notebook=False, stream=out, label="CRATE")
    for r in _records(3):
        live(r)
    lines = out.getvalue().splitlines()
    assert len(lines) == 3 and live.figures_drawn == 0
    assert lines[0] == "CRATE: epoch 1/3  train loss 2.000 acc 10.0 %  |  test loss 1.500 acc 12.0 %"
    assert live.history == _records(3)


def test_record_without_metrics_is_an_error():
    live = LiveCurves(notebook=False, stream=io.StringIO())
    with pytest.raises(ValueError, match="missing \\['test_acc'\\]"):
        live({"epoch": 1, "train_loss": 1.0, "train_acc": 0.5, "test_loss": 1.0})
    with pytest.raises(ValueError, match="total_epochs"):
        LiveCurves(total_epochs=0)


class _FakeHandle:
    def __init__(self, log):
        self.log = log

    def update(self, obj):
        self.log.append(("update", obj))


def test_notebook_mode_displays_once_then_updates_the_same_output(monkeypatch):
    log: list = []

    def fake_display(obj, display_id=False):
        log.append(("display", obj, display_id))
        return _FakeHandle(log)

    display_mod = types.ModuleType("IPython.display")
    display_mod.display = fake_display
    monkeypatch.setitem(sys.modules, "IPython.display", display_mod)
    live = LiveCurves(total_epochs=4, notebook=True, compare={"ViT": _records(4)}, label="CRATE")
    for r in _records(3):
        live(r)
    kinds = [entry[0] for entry in log]
    assert kinds == ["display", "update", "update"] and log[0][2] is True
    assert live.figures_drawn == 3
    assert plt.get_fignums() == []  # every drawn figure was closed (no copy at the end of the cell)
    fig = live.figure()
    labels = [line.get_label() for line in fig.axes[0].get_lines()]
    assert "CRATE test" in labels and "ViT test" in labels
    assert fig.axes[0].get_xlim() == (0.5, 4.5)
    plt.close(fig)


def test_in_notebook_is_false_outside_a_kernel():
    assert in_notebook() is False


def test_live_curves_and_quiet_with_the_trainer(tmp_path):
    cfg = RECIPES["digits-quick"].config(
        epochs=2, limit_train=128, limit_test=64, batch_size=32, model_overrides={"depth": 1}, progress=False
    )
    out = io.StringIO()
    live = LiveCurves(total_epochs=cfg.epochs, notebook=False, stream=out)
    with quiet() as log:
        result = train(cfg, tmp_path / "run", on_epoch_end=live)
    assert live.history == result.history
    assert len(out.getvalue().splitlines()) == 2
    assert out.getvalue().splitlines()[-1] == format_record(result.history[-1], 2)
    assert any(line.startswith("epoch 2/2") for line in log.lines)  # the trainer's own lines were captured


def test_plot_curves_one_and_several_runs():
    fig = plot_curves(_records(3), title="t")
    assert len(fig.axes) == 2 and fig.axes[1].get_ylabel() == "accuracy (%)"
    ys = fig.axes[1].get_lines()[0].get_ydata()
    assert list(ys) == pytest.approx([12.0, 24.0, 36.0])
    plt.close(fig)
    fig = plot_curves({"a": _records(2), "b": _records(3)})
    assert len(fig.axes[0].get_lines()) == 4
    plt.close(fig)


def test_plot_confusion_matrix_normalises_rows():
    cm = torch.tensor([[8, 2], [1, 3]])
    fig = plot_confusion_matrix(cm, ["a", "b"])
    img = fig.axes[0].get_images()[0].get_array()
    assert img[0, 0] == pytest.approx(80.0) and img[1, 1] == pytest.approx(75.0)
    plt.close(fig)
    with pytest.raises(ValueError, match="3 class names for a 2x2"):
        plot_confusion_matrix(cm, ["a", "b", "c"])
    with pytest.raises(ValueError, match="square"):
        plot_confusion_matrix(torch.zeros(2, 3))


def test_plot_per_class_accuracy_and_throughput():
    fig = plot_per_class_accuracy(
        {"CRATE": torch.tensor([0.5, 1.0]), "ViT": torch.tensor([0.25, 0.75])}, ["x", "y"]
    )
    heights = sorted(p.get_height() for p in fig.axes[0].patches)
    assert heights == pytest.approx([25.0, 50.0, 75.0, 100.0])
    plt.close(fig)
    with pytest.raises(ValueError, match="one length"):
        plot_per_class_accuracy({"a": torch.zeros(2), "b": torch.zeros(3)})
    fig = plot_throughput({"train": 10.0, "inference": 30.0})
    assert [p.get_width() for p in fig.axes[0].patches] == [10.0, 30.0]
    plt.close(fig)
    with pytest.raises(ValueError, match="no throughput"):
        plot_throughput({})
